//! The run lock: one run at a time per repository, for jobs and for every command that writes
//! backups (`backup *`, `prune`).
//!
//! `locks/run.json` names the holder (a random id, the job, host, pid and start). It is created
//! atomically (a hard link on a local folder, `If-None-Match` on S3), so of two runs starting
//! together exactly one gets it, and it is never rewritten. The holder shows it is alive by
//! writing its own `locks/run.<id>.beat` every 30 s; a lock whose last beat (or start) is older
//! than `daemon.lock_stale_minutes` belongs to a run that died, and is taken over.
//!
//! A holder checks that the lock is still its own at every beat and before every commit. One
//! that finds it taken over (it was judged dead while it was only slow) stops: what it has in
//! flight is aborted, nothing more is committed, and it reports the run as failed.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::layout;
use crate::error::{Error, Result};
use crate::storage::Storage;

const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often a waiting command looks at the lock again.
const WAIT_STEP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockFile {
    pub id: String,
    pub job: String,
    pub host: String,
    pub pid: u32,
    pub started: Timestamp,
    /// Written by lifeboat before beats had objects of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Timestamp>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    heartbeat: Timestamp,
}

impl LockFile {
    /// The error a run that finds this lock in its place reports.
    pub fn taken_over(&self) -> Error {
        Error::LockLost {
            job: self.job.clone(),
            host: self.host.clone(),
            pid: self.pid,
        }
    }
}

/// How a run asks for the lock.
pub struct LockRequest<'a> {
    /// The job (or command) that will hold it, shown to runs it makes wait.
    pub job: &'a str,
    /// How long to wait while another run holds it (`--wait`).
    pub wait: Duration,
    /// A lock without a heartbeat for this long belongs to a dead run.
    pub stale_minutes: u64,
    /// Stops the waiting.
    pub cancel: CancellationToken,
    /// Cancelled if the lock is ever found taken over.
    pub lost: CancellationToken,
}

pub struct RunLock {
    id: String,
    storage: Arc<Storage>,
    beating: tokio::task::JoinHandle<()>,
    lost: CancellationToken,
}

impl RunLock {
    /// Takes the lock in `taking` (a repository's storage), waiting while another run holds
    /// it as long as `request` allows.
    pub async fn acquire(taking: &Storage, request: LockRequest<'_>) -> Result<RunLock> {
        let LockRequest {
            job,
            wait,
            stale_minutes,
            cancel,
            lost,
        } = request;
        // Taking the lock stops when asked to; its heartbeat and its release do not.
        let storage = Arc::new(taking.without_cancel());
        let stale_after = SignedDuration::from_mins(stale_minutes as i64);
        let mine = LockFile {
            id: format!("{:016x}", rand::random::<u64>()),
            job: job.to_string(),
            host: crate::process::host_name(),
            pid: std::process::id(),
            started: Timestamp::now(),
            heartbeat: None,
        };
        let json = serde_json::to_vec_pretty(&mine).expect("locks serialize");
        let waited = std::time::Instant::now();
        let mut taken_over = false;
        loop {
            let created = match taking.write_new(&layout::lock(), json.clone()).await {
                Ok(created) => created,
                Err(e @ Error::Interrupted(_)) => {
                    // Stopped while the lock was being written: it may be there; if it is
                    // ours, it goes.
                    let held = read(&storage).await.ok().flatten();
                    if held.is_some_and(|held| held.id == mine.id) {
                        let _ = storage.delete(&layout::lock()).await;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if created {
                write_beat(&storage, &mine.id).await;
                let beating =
                    tokio::spawn(heartbeat(storage.clone(), mine.id.clone(), lost.clone()));
                return Ok(RunLock {
                    id: mine.id,
                    storage,
                    beating,
                    lost,
                });
            }
            let Some(held) = read(taking).await? else {
                continue;
            };
            let last_sign = last_beat(&storage, &held).await;
            let age = Timestamp::now().duration_since(last_sign);
            if age > stale_after && !taken_over {
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
                    storage.delete(&layout::lock()).await?;
                    storage.delete(&layout::lock_beat(&held.id)).await?;
                }
                taken_over = true;
                continue;
            }
            if waited.elapsed() >= wait {
                return Err(Error::Busy {
                    location: taking.location().to_string(),
                    job: held.job,
                    host: held.host,
                    pid: held.pid,
                    since: held.started,
                    heartbeat: last_sign,
                    stale_minutes,
                });
            }
            tokio::select! {
                () = tokio::time::sleep(WAIT_STEP) => {}
                () = cancel.cancelled() => {
                    return Err(Error::Interrupted("waiting for the run lock".into()))
                }
            }
        }
    }

    /// The lock's id, which its lock file names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Cancelled when the lock was found taken over.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Stops the heartbeat and removes the lock if it is still this run's.
    pub async fn release(self) {
        self.beating.abort();
        match read(&self.storage).await {
            Ok(Some(held)) if held.id == self.id => {
                if let Err(e) = self.storage.delete(&layout::lock()).await {
                    tracing::warn!("could not remove the run lock: {e}");
                }
            }
            Ok(Some(held)) => tracing::warn!(
                "the run lock was taken over by job `{}` on `{}` (pid {}) while this run held it",
                held.job,
                held.host,
                held.pid
            ),
            Ok(None) => tracing::warn!("the run lock was removed while this run held it"),
            Err(e) => tracing::warn!("could not read the run lock to remove it: {e}"),
        }
        if let Err(e) = self.storage.delete(&layout::lock_beat(&self.id)).await {
            tracing::warn!("could not remove the run lock's heartbeat: {e}");
        }
    }
}

/// Who holds the lock now.
pub async fn read(storage: &Storage) -> Result<Option<LockFile>> {
    Ok(storage
        .read_opt(&layout::lock())
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Checks that the lock is still `id`'s: the error says who took it otherwise.
pub async fn check_held(storage: &Storage, id: &str) -> Result<()> {
    match read(storage).await? {
        Some(held) if held.id == id => Ok(()),
        Some(held) => Err(held.taken_over()),
        None => Err(Error::LockLost {
            job: "(none: the lock was removed)".into(),
            host: "?".into(),
            pid: 0,
        }),
    }
}

/// The last sign of life of a lock's holder: its newest beat, else its start.
async fn last_beat(storage: &Storage, held: &LockFile) -> Timestamp {
    let beat = storage
        .read_opt(&layout::lock_beat(&held.id))
        .await
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<Beat>(&bytes).ok())
        .map(|b| b.heartbeat);
    beat.or(held.heartbeat)
        .unwrap_or(held.started)
        .max(held.started)
}

async fn write_beat(storage: &Storage, id: &str) {
    let beat = serde_json::to_vec(&Beat {
        heartbeat: Timestamp::now(),
    })
    .expect("beats serialize");
    if let Err(e) = storage.write(&layout::lock_beat(id), beat).await {
        tracing::warn!("could not refresh the run lock: {e}");
    }
}

async fn heartbeat(storage: Arc<Storage>, id: String, lost: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = lost.cancelled() => return,
        }
        match check_held(&storage, &id).await {
            Ok(()) => write_beat(&storage, &id).await,
            Err(e @ Error::LockLost { .. }) => {
                tracing::error!("{e}");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!("could not check the run lock: {e}"),
        }
    }
}
