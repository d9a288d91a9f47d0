//! End-to-end tests: the real `lifeboat` binary against a real PostgreSQL cluster and a real
//! S3 server, both started by the tests on this machine.

mod automation;
mod conventions;
mod copies;
mod deploy;
mod disaster;
mod drill;
mod failures;
mod faults;
mod find;
mod incremental;
mod integrity;
mod kills;
mod life;
mod locks;
mod memory;
mod metrics;
mod objects;
mod partial;
mod pitr;
mod prune;
mod roundtrip;
mod secrets;
mod stream;
mod support;
mod table;
mod tiers;
mod verify;
mod wal;
