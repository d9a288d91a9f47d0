//! lifeboat's engine: configuration, repository, streaming pipeline and PostgreSQL backup and
//! restore. The `lifeboat` binary is a thin command line over this crate.
//!
//! Time, storage and child processes reach the engine through what the caller hands it
//! ([`Context`], [`repository::Repository`], [`process::tools::PgTools`]), so that tests drive
//! it against real, throwaway parts.

pub mod automation;
mod backup;
pub mod buckets;
pub mod config;
mod context;
pub mod copies;
pub mod crypto;
pub mod error;
mod pipeline;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod redis;
pub mod repository;
pub mod retention;
pub mod storage;
mod tarchunk;
pub mod units;
pub mod verify;
mod version;
pub mod wal;

pub use context::Context;
pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;
pub use version::{BuildInfo, BUILD, VERSION};

// The verbs, one name each (`<verb>_<what>`), with their requests and reports. A command of
// the CLI calls one of these; the modules hold the rest.

// Backups.
pub use buckets::{backup_bucket, BucketBackupOptions, BucketBackupReport};
pub use postgres::base::backup_base;
pub use postgres::dump::{backup_db, DumpRequest};
pub use redis::backup_redis;
// Restores.
pub use buckets::{restore_bucket, BucketRestoreOptions, BucketRestoreReport};
pub use postgres::pitr::{restore_pitr, PitrReport, PitrRequest};
pub use postgres::restore::{restore_db, RestoreReport, RestoreRequest};
pub use postgres::table::{plan_table, restore_table, TableReport, TableRequest};
// The WAL archive (`archive_command`, `restore_command`).
pub use postgres::upgrade::{upgrade, UpgradeReport};
pub use wal::{fetch_wal, push_wal, Fetched, Pushed, WalArchive};
// Keeping the repository: copies, retention, verification.
pub use copies::{copy_repository, plan_copy, CopyPlan, CopyReport};
pub use retention::prune::{execute_prune, plan_prune, PruneOutcome, PrunePlan};
pub use verify::drill::{run_drill, DrillReport};
pub use verify::{verify_backup, Verification, VerifyRequest};
// Running unattended.
pub use automation::daemon::run_daemon;
pub use automation::doctor::{doctor, Finding};
pub use automation::jobs::run_job;
pub use automation::report::RunReport;
pub use automation::status::{status, AssetStatus};
