//! The run lock: one run at a time per repository, for jobs and for every command that writes
//! backups (`backup *`, `prune`).
//!
//! `locks/run.json` names the holder (a random id, the job, host, pid and start). It is created
//! only where none exists (a hard link on a local folder, `If-None-Match` on S3), and never
//! rewritten. A store whose conditional write is a check and then a write (`s3s-fs`) can let
//! two runs both "create" it, the later write winning; so the store's answer is not taken as
//! the verdict: the lock is read back, and on a store that is not a local folder read again
//! after [`SETTLE`], and only the run whose id it holds goes on. The others wait as for any
//! held lock, leaving nothing behind (what they wrote was replaced).
//!
//! The holder shows it is alive by writing its own `locks/run.<id>.beat` every 30 s; a lock
//! whose last beat (or start) is older than `daemon.lock_stale_minutes` belongs to a run that
//! died, and is taken over. A holder on this host whose process is gone (killed) is known dead
//! at once: its lock is taken over without waiting, and said so. `lifeboat unlock` removes a
//! lock whose holder is not alive, and refuses one that is.
//!
//! A holder checks that the lock is still its own at every beat and before every commit. One
//! that finds it taken over (it was judged dead while it was only slow) stops: what it has in
//! flight is aborted, nothing more is committed, and it reports the run as failed.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{layout, Repository};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::Context;

const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a new lock on a remote store must stay this run's before the run goes on: longer
/// than a competing write that passed the store's check before this one landed takes.
const SETTLE: Duration = Duration::from_millis(500);
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
    /// What tells the holder's process apart on its host (absent in older locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::process::ProcessMark>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    heartbeat: Timestamp,
}

impl LockFile {
    /// Whether the holder is a process of this host that no longer exists.
    pub fn holder_is_gone(&self) -> bool {
        self.host == crate::process::host_name()
            && self
                .process
                .as_ref()
                .and_then(|mark| mark.is_gone(self.pid))
                .unwrap_or(false)
    }

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
            process: crate::process::ProcessMark::of_this_process(),
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
            // The content, not the store's answer, says whose the lock is.
            let held = match created {
                true => confirm(taking, &mine.id).await?,
                false => read(taking).await?,
            };
            if held.as_ref().is_some_and(|held| held.id == mine.id) {
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
            let Some(held) = held else {
                continue;
            };
            let last_sign = last_beat(&storage, &held).await;
            let age = Timestamp::now().duration_since(last_sign);
            let gone = held.holder_is_gone();
            if (age > stale_after || gone) && !taken_over {
                if gone {
                    tracing::warn!(
                        "taking over the run lock of `{}` (pid {} on this host): that process no longer exists",
                        held.job,
                        held.pid
                    );
                } else {
                    tracing::warn!(
                        "taking over the run lock of `{}` on `{}` (pid {}): its heartbeat is {} minutes old",
                        held.job,
                        held.host,
                        held.pid,
                        age.as_secs() / 60
                    );
                }
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

/// Who holds the lock just written as `id`: read back, and on a store other than a local
/// folder read again after [`SETTLE`], so that a competing write the store let through lands
/// before the verdict.
async fn confirm(storage: &Storage, id: &str) -> Result<Option<LockFile>> {
    let held = read(storage).await?;
    if storage.is_local() || held.as_ref().is_none_or(|held| held.id != id) {
        return Ok(held);
    }
    tokio::time::sleep(SETTLE).await;
    read(storage).await
}

/// A lock's holder is alive: on this host, its process exists; elsewhere, it beat within
/// two heartbeats.
pub async fn holder_is_alive(storage: &Storage, held: &LockFile) -> bool {
    if held.host == crate::process::host_name() && held.process.is_some() {
        if let Some(gone) = held.process.as_ref().and_then(|m| m.is_gone(held.pid)) {
            return !gone;
        }
    }
    let age = Timestamp::now().duration_since(last_beat(storage, held).await);
    age < SignedDuration::try_from(HEARTBEAT * 2 + Duration::from_secs(15)).unwrap_or_default()
}

/// `lifeboat unlock`: removes the run lock (and its heartbeat) when its holder is not alive;
/// refuses when it is. Returns the lock removed (or that would be, with `dry_run`).
pub async fn unlock(storage: &Storage, dry_run: bool) -> Result<Option<LockFile>> {
    let Some(held) = read(storage).await? else {
        return Ok(None);
    };
    if holder_is_alive(storage, &held).await {
        let last = last_beat(storage, &held).await;
        return Err(Error::NotReady(format!(
            "the run lock is held by job `{}` on `{}` (pid {}), which is alive (last heartbeat {}): stop that run, or wait for it; `unlock` removes only a dead run's lock",
            held.job,
            held.host,
            held.pid,
            last.strftime("%H:%M:%S UTC")
        )));
    }
    if !dry_run {
        // Only the lock that was judged dead goes.
        if read(storage)
            .await?
            .is_some_and(|again| again.id == held.id)
        {
            storage.delete(&layout::lock()).await?;
        }
        storage.delete(&layout::lock_beat(&held.id)).await?;
    }
    Ok(Some(held))
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

/// The error of a run whose lock was taken over, naming who took it.
pub async fn lost_lock(repo: &Repository) -> Error {
    match read(repo.storage()).await {
        Ok(Some(held)) => held.taken_over(),
        _ => Error::LockLost {
            job: "(none: the lock was removed)".into(),
            host: "?".into(),
            pid: 0,
        },
    }
}

/// Runs `work` under the repository's run lock, as a command that writes (`backup`, `prune`)
/// does outside a job: refused while a run holds it, unless `--wait` gives time.
pub async fn with_run_lock<T>(
    ctx: &Context,
    repo: &Repository,
    what: &str,
    work: impl AsyncFnOnce(&Context) -> Result<T>,
) -> Result<T> {
    let locked_ctx = ctx.with_cancel(ctx.cancel.child_token());
    let lock = repo
        .lock(&locked_ctx, what, locked_ctx.cancel.clone())
        .await?;
    let outcome = work(&locked_ctx).await;
    let lost = lock.lost().is_cancelled() && !ctx.cancel.is_cancelled();
    lock.release().await;
    match outcome {
        Err(Error::Interrupted(_)) if lost => Err(lost_lock(repo).await),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryBackend;

    /// On a store whose conditional create is a check and then a write, a competitor's lock
    /// can land on ours after the store said ours was created: the lock is its, and this run
    /// waits (here: is refused as busy, naming the competitor), never runs beside it.
    #[tokio::test]
    async fn a_lock_that_a_competing_write_replaced_is_not_taken() {
        let backend = MemoryBackend::new("race");
        let theirs = LockFile {
            id: "0123456789abcdef".into(),
            job: "daily".into(),
            host: "elsewhere".into(),
            pid: 4242,
            started: Timestamp::now(),
            heartbeat: None,
            process: None,
        };
        backend.replace_after_create(&layout::lock(), serde_json::to_vec(&theirs).unwrap());
        let env = crate::storage::Env::new(CancellationToken::new());
        let storage = Storage::layered(Arc::new(backend), None, &env);
        let taken = RunLock::acquire(
            &storage,
            LockRequest {
                job: "backup",
                wait: Duration::ZERO,
                stale_minutes: 10,
                cancel: CancellationToken::new(),
                lost: CancellationToken::new(),
            },
        )
        .await;
        match taken {
            Err(Error::Busy { host, pid, .. }) => {
                assert_eq!((host.as_str(), pid), ("elsewhere", 4242))
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("the lock was taken although the competitor's write is in its place"),
        }
        // The competitor's lock is left as it is.
        assert_eq!(read(&storage).await.unwrap().unwrap().id, theirs.id);
    }
}
