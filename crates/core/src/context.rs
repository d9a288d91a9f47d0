//! What every engine operation is given: the configuration, where the tools are, how to report
//! progress, and a token that asks it to stop cleanly.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{config, process, progress, storage};

/// The configuration, tools, progress and stop request of one command.
pub struct Context {
    pub config: config::Config,
    pub tools: process::tools::PgTools,
    pub progress: Arc<dyn progress::Progress>,
    pub cancel: CancellationToken,
    /// How long a command that writes waits for another run's lock (`--wait`).
    pub lock_wait: std::time::Duration,
    /// Every storage request this process sent (each storage also counts its own).
    pub requests: Arc<storage::Requests>,
}

impl Context {
    pub fn new(config: config::Config) -> Context {
        let tools = process::tools::PgTools::locate(config.tools.pg_bin_dir.as_deref());
        Context {
            config,
            tools,
            progress: Arc::new(progress::NoProgress),
            cancel: CancellationToken::new(),
            lock_wait: std::time::Duration::ZERO,
            requests: Arc::default(),
        }
    }

    /// What the storages a command opens share: its stop request and a request count.
    pub fn storage_env(&self) -> storage::Env {
        let mut env = storage::Env::new(self.cancel.clone());
        env.requests = Arc::new(storage::Requests::within(self.requests.clone()));
        env
    }

    /// The same context with another configuration (a copy's: [`config::Config::for_copy`]).
    pub fn with_config(&self, config: config::Config) -> Context {
        Context {
            config,
            ..self.with_cancel(self.cancel.clone())
        }
    }

    /// The same context with the PostgreSQL programs of server `pg` (its `pg_bin_dir`, else
    /// these).
    pub fn for_server(&self, pg: &config::PostgresConfig) -> Context {
        match &pg.pg_bin_dir {
            Some(dir) => self.with_tools(process::tools::PgTools::locate(Some(dir))),
            None => self.with_cancel(self.cancel.clone()),
        }
    }

    /// The same context with other PostgreSQL programs (those of a data folder's version).
    pub fn with_tools(&self, tools: process::tools::PgTools) -> Context {
        Context {
            tools,
            ..self.with_cancel(self.cancel.clone())
        }
    }

    /// The same context, stopped by `cancel` (a child of this one's).
    pub fn with_cancel(&self, cancel: CancellationToken) -> Context {
        Context {
            config: self.config.clone(),
            tools: self.tools.clone(),
            progress: Arc::clone(&self.progress),
            cancel,
            lock_wait: self.lock_wait,
            requests: Arc::clone(&self.requests),
        }
    }
}
