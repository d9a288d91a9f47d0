//! lifeboat's engine: configuration, repository, streaming pipeline and PostgreSQL backup and
//! restore. The `lifeboat` binary is a thin command line over this crate.
//!
//! Time, storage and child processes reach the engine through what the caller hands it
//! ([`Context`], [`repository::Repository`], [`postgres::tools::PgTools`]), so that tests drive
//! it against real, throwaway parts.

pub mod backup;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod doctor;
pub mod drill;
pub mod error;
pub mod jobs;
pub mod lifecycle;
pub mod lock;
pub mod manifest;
pub mod notify;
pub mod objects;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod prune;
pub mod redis;
pub mod repository;
pub mod retention;
pub mod schedule;
pub mod status;
pub mod storage;
pub mod tarchunk;
pub mod verify;
pub mod wal;

use std::sync::Arc;

pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;

/// What every engine operation is given: the configuration, where the tools are, how to
/// report progress, and a token that asks it to stop cleanly.
pub struct Context {
    pub config: config::Config,
    pub tools: postgres::tools::PgTools,
    pub progress: Arc<dyn progress::Progress>,
    pub cancel: CancellationToken,
    /// How long a command that writes waits for another run's lock (`--wait`).
    pub lock_wait: std::time::Duration,
}

impl Context {
    pub fn new(config: config::Config) -> Context {
        let tools = postgres::tools::PgTools::locate(config.tools.pg_bin_dir.as_deref());
        Context {
            config,
            tools,
            progress: Arc::new(progress::NoProgress),
            cancel: CancellationToken::new(),
            lock_wait: std::time::Duration::ZERO,
        }
    }

    /// What the storages a command opens share: its stop request and a request count.
    pub fn storage_env(&self) -> storage::Env {
        storage::Env::new(self.cancel.clone())
    }

    /// The same context, stopped by `cancel` (a child of this one's).
    pub fn with_cancel(&self, cancel: CancellationToken) -> Context {
        Context {
            config: self.config.clone(),
            tools: self.tools.clone(),
            progress: Arc::clone(&self.progress),
            cancel,
            lock_wait: self.lock_wait,
        }
    }
}
