//! `wal-push`: one file into the archive, and the background pusher that archives the next
//! ready segments ahead of PostgreSQL's calls.
//!
//! A push exits 0 only after the object is stored and its size checked, so PostgreSQL keeps
//! and retries anything not safely archived; pushing a name that is already archived succeeds
//! only if the content is the same. One upload per `archive_command` call limits a busy
//! server, so a push also has the next segments PostgreSQL has marked ready
//! (`archive_status/*.ready`) pushed in parallel by a background pusher, which leaves a marker
//! in the spool for each; when PostgreSQL asks for one of those, the push is already done (or
//! is waited for).

use std::path::Path;

use futures::StreamExt;

use super::spool::{spool_dir, try_lock};
use super::{cluster, identities, segment, stored, WalName};
use crate::error::{Error, Result};
use crate::pipeline::{sha256_hex, SealOptions};
use crate::repository::Repository;
use crate::Context;

pub fn seal_options(ctx: &Context) -> SealOptions {
    SealOptions {
        level: ctx.config.compression.level,
        threads: 1,
        recipients: ctx
            .config
            .encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default(),
        framing: None,
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// More segments are ready and no [`push_ready`] runs: the caller starts one in the
    /// background, so that PostgreSQL, which waits for `archive_command`, does not wait for it.
    pub ahead: bool,
}

/// Archives one file (`path` as PostgreSQL gives it, relative to the data folder). A segment
/// that a background [`push_ready`] has pushed (its marker in the spool) is done at once; one
/// that it is about to push is waited for; anything else is pushed here.
pub async fn push_wal(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    path: &Path,
) -> Result<Pushed> {
    let name = file_name(path)?;
    let spool = push_spool(ctx, repo, cluster)?;
    let segment = matches!(WalName::parse(&name), Some(WalName::Segment { .. }));
    let ahead_on = segment && ctx.config.wal.push_ahead > 0;
    let done_ahead = if take_marker(&spool, &name, path) {
        tracing::debug!(wal = %name, "already pushed ahead");
        true
    } else {
        ahead_on && wait_for_pusher(&spool, &name, path).await
    };
    if !done_ahead {
        push_one(ctx, repo, cluster, path, &name, &spool).await?;
    }
    let ahead = ahead_on
        && pusher_scope(&spool).is_none()
        && path
            .parent()
            .is_some_and(|dir| !ready_after(dir, &name, &spool).is_empty());
    Ok(Pushed { ahead })
}

const PUSH_LOCK: &str = ".push.lock";
/// How long a push waits for the background pusher to reach its segment.
const PUSHER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// What a pushed-ahead marker records of the file it pushed: size, modification time and
/// inode, so that a marker never vouches for another file of the same name.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {}.{} {}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    ))
}

/// Removes `name`'s pushed-ahead marker; true if there was one and it is for the file at
/// `path` as it is now.
fn take_marker(spool: &Path, name: &str, path: &Path) -> bool {
    let marker = spool.join(format!("{name}.pushed"));
    let Ok(recorded) = std::fs::read_to_string(&marker) else {
        return false;
    };
    let _ = std::fs::remove_file(&marker);
    let same = file_identity(path).is_some_and(|now| now == recorded);
    if !same {
        tracing::warn!(wal = %name, "a pushed-ahead marker does not match the file; pushing it again");
    }
    same
}

/// The segment after which the running background pusher works, if one runs.
fn pusher_scope(spool: &Path) -> Option<String> {
    let file = std::fs::File::open(spool.join(PUSH_LOCK)).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {
            Some(std::fs::read_to_string(spool.join(PUSH_LOCK)).unwrap_or_default())
        }
        _ => None,
    }
}

/// Waits while a background pusher that covers `name` runs; true once it has pushed it, false
/// when it failed it, stopped, or does not cover it (the caller then pushes it).
async fn wait_for_pusher(spool: &Path, name: &str, path: &Path) -> bool {
    let begun = std::time::Instant::now();
    loop {
        if take_marker(spool, name, path) {
            return true;
        }
        if std::fs::remove_file(spool.join(format!("{name}.failed"))).is_ok() {
            return false;
        }
        match pusher_scope(spool) {
            Some(after) if name > after.trim() => {}
            // Stopped (a last look for the marker: it may have finished just now) or not ours.
            _ => return take_marker(spool, name, path),
        }
        if begun.elapsed() > PUSHER_WAIT {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Ready segments after `after` in `wal_dir`'s `archive_status`, not yet pushed ahead, sorted.
fn ready_after(wal_dir: &Path, after: &str, spool: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut ready: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(String::from)
        })
        .filter(|n| {
            n.as_str() > after && matches!(WalName::parse(n), Some(WalName::Segment { .. }))
        })
        .filter(|n| !spool.join(format!("{n}.pushed")).exists())
        .collect();
    ready.sort();
    ready
}

/// The background pusher: pushes the ready segments after `path`'s (as PostgreSQL marks
/// them, until none is left) `[wal] push_ahead` at a time, and marks each in the spool,
/// where PostgreSQL's own `wal-push` for it finds it done. One runs at a time (a lock in the
/// spool). A segment it cannot push is marked failed, and that `wal-push` pushes it itself.
pub async fn push_ready(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    path: &Path,
) -> Result<()> {
    let after = file_name(path)?;
    let Some(wal_dir) = path.parent() else {
        return Ok(());
    };
    let spool = push_spool(ctx, repo, cluster)?;
    let Some(lock) = try_lock(&spool, PUSH_LOCK)? else {
        return Ok(());
    };
    {
        use std::io::Write;
        let mut lock = &lock;
        lock.set_len(0)
            .and_then(|()| lock.write_all(after.as_bytes()))
            .map_err(|e| Error::io("writing the push lock", e))?;
    }
    let mut tried = std::collections::HashSet::new();
    loop {
        let ready: Vec<String> = ready_after(wal_dir, &after, &spool)
            .into_iter()
            .filter(|n| tried.insert(n.clone()))
            .collect();
        if ready.is_empty() {
            break;
        }
        let spool = &spool;
        let pushes = ready.iter().map(|name| async move {
            let file = wal_dir.join(name);
            let identity = file_identity(&file);
            let outcome = push_one(ctx, repo, cluster, &file, name, spool).await;
            let (marker, content) = match (&outcome, identity) {
                (Ok(()), Some(identity)) => (format!("{name}.pushed"), identity),
                (Ok(()), None) => return,
                (Err(e), _) => {
                    tracing::warn!(wal = %name, error = %e, "push ahead failed; PostgreSQL's own push will retry it");
                    (format!("{name}.failed"), String::new())
                }
            };
            if let Err(e) = std::fs::write(spool.join(marker), content) {
                tracing::warn!(wal = %name, error = %e, "cannot mark a pushed segment");
            }
        });
        futures::stream::iter(pushes)
            .buffer_unordered(ctx.config.wal.push_ahead.max(1))
            .collect::<Vec<()>>()
            .await;
    }
    drop(lock);
    Ok(())
}

/// The spool of pushes for `cluster`: the one cluster of a repository keeps the folder it had
/// before clusters.
pub fn push_spool(ctx: &Context, repo: &Repository, cluster: &str) -> Result<std::path::PathBuf> {
    let scope = if cluster::sole(ctx, cluster) {
        String::new()
    } else {
        format!("cluster {cluster}")
    };
    spool_dir(ctx, repo, &scope)
}

fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("`{}` is not a WAL file path", path.display())))?;
    WalName::parse(name).ok_or_else(|| {
        Error::Usage(format!(
            "`{name}` is not a WAL segment, history, partial or backup file name"
        ))
    })?;
    Ok(name.to_string())
}

async fn push_one(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    path: &Path,
    name: &str,
    spool: &Path,
) -> Result<()> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?;
    store(ctx, repo, cluster, spool, name, raw).await
}

/// Stores WAL file `name` with content `raw` as `wal-push` does (the stream stores each
/// segment it completes through here): checked, routed to its generation, sealed, created
/// if absent; a name already stored is a success only with the same content.
pub async fn store(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    spool: &Path,
    name: &str,
    raw: Vec<u8>,
) -> Result<()> {
    // A file that is not the segment its name says, or of another cluster, is never archived:
    // PostgreSQL keeps it and retries, the log says why, and so does `status`.
    let header = match segment::check(name, &raw) {
        Ok(header) => header,
        Err(e) => return Err(refuse(repo, name, format!("{e}; refusing to archive it")).await),
    };
    // Each segment goes to the generation of the system identifier it carries.
    let routed = cluster::route(
        repo,
        Some(spool),
        cluster,
        cluster::sole(ctx, cluster),
        header.map(|h| (h.system_id, h.magic)),
        &format!("wal-push of WAL file `{name}`"),
    )
    .await;
    let archive = match routed {
        Err(e @ Error::ForeignCluster { .. }) => {
            return Err(refuse(repo, name, e.to_string()).await)
        }
        other => other?,
    };
    let seal = seal_options(ctx);
    let encrypted = !seal.recipients.is_empty();
    let key = archive.key(name, encrypted);
    let raw = std::sync::Arc::new(raw);
    let sealed = {
        let raw = std::sync::Arc::clone(&raw);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || stored::seal(&name, &raw, &seal))
            .await
            .map_err(|e| Error::thread("compression", e))??
    };
    let size = sealed.len();
    let storage = repo.storage();
    // Locked (`object_lock`) for the PITR window; a push whose lock failed fails, and its
    // retry locks what it finds archived.
    let until = repo.hold().map(|l| l.wal(jiff::Timestamp::now()));
    if storage.write_new(&key, sealed).await? {
        if let Some(until) = until {
            repo.hold_new(&[&key], until).await?;
        }
        tracing::info!(wal = name, bytes = raw.len(), stored = size, "archived");
        return Ok(());
    }
    // Already archived: the same content is a success (a retry), other content never is.
    let existing = storage.read_opt(&key).await?.unwrap_or_default();
    let identities = identities(ctx, encrypted)?;
    let archived = stored::open(name, &existing, identities.as_ref())?;
    if sha256_hex(&archived) == sha256_hex(&raw) {
        if let Some(until) = until {
            repo.hold_at_least(&[&key], until).await?;
        }
        tracing::info!(wal = name, "already archived with the same content");
        Ok(())
    } else {
        Err(refuse(
            repo,
            name,
            format!(
                "`{name}` is already archived in `{}` ({}) with different content: refusing to overwrite it (is another server archiving to this repository as the same cluster?)",
                repo.location(),
                archive.describe()
            ),
        )
        .await)
    }
}

/// A push refused for what the file is (not for a storage failure): recorded in the
/// repository for `status`, and returned as the error.
async fn refuse(repo: &Repository, name: &str, message: String) -> Error {
    let refusal = Refusal {
        name: name.to_string(),
        reason: message.clone(),
        at: jiff::Timestamp::now(),
    };
    let json = serde_json::to_vec_pretty(&refusal).expect("refusals serialize");
    if let Err(e) = repo.storage().write(&refusal_key(), json).await {
        tracing::warn!(error = %e, "cannot record the refused push for `status`");
    }
    Error::WalRefused {
        name: name.to_string(),
        reason: message,
    }
}

/// The last push `wal-push` refused.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub name: String,
    pub reason: String,
    pub at: jiff::Timestamp,
}

fn refusal_key() -> String {
    crate::repository::layout::wal_refused()
}

/// The last refused push, if any.
pub async fn last_refusal(repo: &Repository) -> Result<Option<Refusal>> {
    Ok(repo
        .storage()
        .read_opt(&refusal_key())
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}
