//! The run lock: one run at a time per repository.
//!
//! A small object `locks/run.json` (holder, host, pid, start, heartbeat) created with a
//! conditional write, so that of two runs starting together only one gets it. The holder
//! refreshes the heartbeat while it runs; a lock whose heartbeat is older than
//! `daemon.lock_stale_minutes` belongs to a run that died and is taken over.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::storage::Storage;
use crate::Context;

pub const LOCK_PATH: &str = "locks/run.json";
const HEARTBEAT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockFile {
    pub id: String,
    pub job: String,
    pub host: String,
    pub pid: u32,
    pub started: Timestamp,
    pub heartbeat: Timestamp,
}

pub struct RunLock {
    id: String,
    storage: std::sync::Arc<Storage>,
    beating: tokio::task::JoinHandle<()>,
}

impl RunLock {
    pub async fn acquire(ctx: &Context, repo: &Repository, job: &str) -> Result<RunLock> {
        let storage = std::sync::Arc::new(Storage::open(&ctx.config.repository, false)?);
        let stale_after = SignedDuration::from_mins(ctx.config.daemon.lock_stale_minutes as i64);
        let now = Timestamp::now();
        let mine = LockFile {
            id: format!("{:016x}", rand::random::<u64>()),
            job: job.to_string(),
            host: crate::jobs::host_name(),
            pid: std::process::id(),
            started: now,
            heartbeat: now,
        };
        for attempt in 0..2 {
            let json = serde_json::to_vec_pretty(&mine).expect("locks serialize");
            if storage.write_new(LOCK_PATH, json).await? {
                let beating = tokio::spawn(heartbeat(storage.clone(), mine.clone()));
                return Ok(RunLock {
                    id: mine.id,
                    storage,
                    beating,
                });
            }
            let Some(held) = read(&storage).await? else {
                continue;
            };
            let age = Timestamp::now().duration_since(held.heartbeat);
            if age > stale_after && attempt == 0 {
                tracing::warn!(
                    "taking over the run lock of `{}` on `{}` (pid {}): its heartbeat is {} minutes old",
                    held.job,
                    held.host,
                    held.pid,
                    age.as_secs() / 60
                );
                // Only the lock that was judged stale is removed.
                if read(&storage)
                    .await?
                    .is_some_and(|again| again.id == held.id)
                {
                    storage.delete(LOCK_PATH).await?;
                }
                continue;
            }
            return Err(Error::invalid(format!(
                "repository `{}` is busy: job `{}` on `{}` (pid {}) has run since {}, last heartbeat {}; a lock without a heartbeat for {} minutes is taken over",
                repo.location(),
                held.job,
                held.host,
                held.pid,
                held.started.strftime("%Y-%m-%d %H:%M:%S UTC"),
                held.heartbeat.strftime("%H:%M:%S UTC"),
                ctx.config.daemon.lock_stale_minutes
            )));
        }
        Err(Error::invalid(format!(
            "repository `{}` is busy: another run took the lock at the same moment",
            repo.location()
        )))
    }

    /// Stops the heartbeat and removes the lock if it is still this run's.
    pub async fn release(self) {
        self.beating.abort();
        match read(&self.storage).await {
            Ok(Some(held)) if held.id == self.id => {
                if let Err(e) = self.storage.delete(LOCK_PATH).await {
                    tracing::warn!("could not remove the run lock: {e}");
                }
            }
            Ok(_) => tracing::warn!("the run lock was taken over while this run held it"),
            Err(e) => tracing::warn!("could not read the run lock to remove it: {e}"),
        }
    }
}

async fn read(storage: &Storage) -> Result<Option<LockFile>> {
    Ok(storage
        .read_opt(LOCK_PATH)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

async fn heartbeat(storage: std::sync::Arc<Storage>, mut mine: LockFile) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match read(&storage).await {
            Ok(Some(held)) if held.id == mine.id => {
                mine.heartbeat = Timestamp::now();
                let json = serde_json::to_vec_pretty(&mine).expect("locks serialize");
                if let Err(e) = storage.write(LOCK_PATH, json).await {
                    tracing::warn!("could not refresh the run lock: {e}");
                }
            }
            _ => return,
        }
    }
}
