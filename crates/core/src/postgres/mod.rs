//! PostgreSQL: connections, tools, logical dump and restore, point-in-time recovery, single
//! tables as they were (`table`), scratch clusters.

pub mod archive;
pub mod archiver;
pub mod base;
pub mod cluster;
pub mod conn;
pub mod counts;
pub mod dump;
pub mod find;
pub mod globals;
pub mod incremental;
pub mod leftovers;
pub mod pitr;
pub mod replication;
pub mod restore;
pub mod sample;
pub mod stream;
pub mod table;
mod tls;
pub mod upgrade;
