//! `wal-fetch`: one archived file back into `pg_wal`, written atomically, and the background
//! prefetch that downloads the following segments into the spool, where the next fetches find
//! them and only rename them into place.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::archive::download;
use super::cluster::WalArchive;
use super::spool::{spool_dir, try_lock, write_atomically};
use super::{segment_name, segment_number, WalName, DEFAULT_SEGMENT_SIZE};
use crate::error::{Error, Result};
use crate::Context;

/// The spool of fetches from `archive`.
fn fetch_spool(ctx: &Context, archive: &WalArchive<'_>) -> Result<PathBuf> {
    let scope = if archive.prefix() == crate::repository::layout::Area::Wal.dirname() {
        ""
    } else {
        archive.prefix()
    };
    Ok(spool_dir(ctx, archive.repo(), scope)?.join("fetched"))
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The archive had the file, and it is at its destination.
    pub found: bool,
    /// The following segments to download ahead into the spool (see [`prefetch`]); empty
    /// when they are there already or a prefetch is running. The caller starts it in the
    /// background, so that PostgreSQL, which waits for `restore_command`, does not wait for it.
    pub ahead: Vec<String>,
}

/// Restores one archived file to `dest`, atomically, from the spool when a prefetch put it
/// there, else from the archive. `found` is false when the archive does not have it
/// (PostgreSQL asks for files that may not exist).
pub async fn fetch_wal(
    ctx: &Context,
    repo: &WalArchive<'_>,
    name: &str,
    dest: &Path,
) -> Result<Fetched> {
    WalName::parse(name).ok_or_else(|| Error::Usage(format!("`{name}` is not a WAL file name")))?;
    let spool = fetch_spool(ctx, repo)?;
    let prefetched = spool.join(name);
    // A prefetched file was written whole and synced: on the same file system it is renamed
    // into place, else copied. One left from long ago is not trusted.
    let spooled = fresh(&prefetched) || {
        let _ = std::fs::remove_file(&prefetched);
        false
    };
    let size = if spooled && std::fs::rename(&prefetched, dest).is_ok() {
        std::fs::metadata(dest)
            .map_err(|e| Error::io(format!("reading `{}`", dest.display()), e))?
            .len()
    } else {
        let raw = if spooled {
            let raw = tokio::fs::read(&prefetched)
                .await
                .map_err(|e| Error::io(format!("reading `{}`", prefetched.display()), e))?;
            let _ = std::fs::remove_file(&prefetched);
            raw
        } else {
            match download(ctx, repo, name).await? {
                Some(raw) => raw,
                None => return streamed(ctx, repo, name, dest).await,
            }
        };
        // PostgreSQL reads the file at once and fetches it again after a crash: no sync.
        write_atomically(dest, &raw, false)?;
        raw.len() as u64
    };
    let mut fetched = Fetched {
        found: true,
        ahead: Vec::new(),
    };
    if let Some(WalName::Segment { timeline, log, seg }) = WalName::parse(name) {
        if ctx.config.wal.prefetch > 0 && !prefetch_running(&spool) {
            let segment_size = if size.is_power_of_two() {
                size
            } else {
                DEFAULT_SEGMENT_SIZE
            };
            let number = segment_number(log, seg, segment_size);
            forget_older(&spool, timeline, number, segment_size);
            fetched.ahead = (1..=ctx.config.wal.prefetch as u64)
                .map(|i| segment_name(timeline, number + i, segment_size))
                .filter(|n| !spool.join(n).exists())
                .collect();
        }
    }
    Ok(fetched)
}

/// The newest segment, not yet whole: assembled from what `wal-stream` stored of it, up to
/// its last streamed byte (recovery ends there). Never prefetched: the pieces grow.
async fn streamed(
    ctx: &Context,
    repo: &WalArchive<'_>,
    name: &str,
    dest: &Path,
) -> Result<Fetched> {
    if !matches!(WalName::parse(name), Some(WalName::Segment { .. })) {
        return Ok(Fetched::default());
    }
    let Some((raw, streamed)) = super::pieces::assemble(ctx, repo, name).await? else {
        return Ok(Fetched::default());
    };
    tracing::info!(wal = %name, bytes = streamed, "fetched the streamed part of a segment");
    write_atomically(dest, &raw, false)?;
    Ok(Fetched {
        found: true,
        ahead: Vec::new(),
    })
}

/// An archived file's content, if the archive has it.
pub async fn read_archived(
    ctx: &Context,
    repo: &WalArchive<'_>,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    download(ctx, repo, name).await
}

/// How long a prefetched segment waits for the fetch that asks for it: a recovery asks within
/// seconds; anything older is left from another one.
const PREFETCH_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether `path` is a file written within [`PREFETCH_KEPT`].
fn fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < PREFETCH_KEPT))
}

/// Removes spooled segments of `timeline` before segment `number`, which recovery has gone
/// past (fetched directly while a prefetch was still on its way), and anything not fresh.
fn forget_older(spool: &Path, timeline: u32, number: u64, segment_size: u64) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let passed = match WalName::parse(name) {
            Some(WalName::Segment {
                timeline: t,
                log,
                seg,
            }) => t == timeline && segment_number(log, seg, segment_size) < number,
            _ => false,
        };
        if passed || (!name.starts_with(".prefetch") && !fresh(&entry.path())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

const PREFETCH_LOCK: &str = ".prefetch.lock";

/// Whether a prefetch holds the spool's lock.
fn prefetch_running(spool: &Path) -> bool {
    let Ok(file) = std::fs::File::open(spool.join(PREFETCH_LOCK)) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Downloads `names` in parallel into the spool, where the next fetches find them: each
/// written whole and synced before it is renamed into place, since a fetch hands it to
/// PostgreSQL as it is. One prefetch runs at a time (a lock in the spool); files the archive
/// does not have are skipped.
pub async fn prefetch(ctx: &Context, repo: &WalArchive<'_>, names: &[String]) -> Result<()> {
    let spool = fetch_spool(ctx, repo)?;
    std::fs::create_dir_all(&spool)
        .map_err(|e| Error::io(format!("creating `{}`", spool.display()), e))?;
    let Some(lock) = try_lock(&spool, PREFETCH_LOCK)? else {
        return Ok(());
    };
    let spool = &spool;
    let fetches = names
        .iter()
        .filter(|n| !spool.join(n).exists())
        .map(|name| async move {
            match download(ctx, repo, name).await {
                Ok(Some(raw)) => {
                    if let Err(e) = write_atomically(&spool.join(name), &raw, true) {
                        tracing::debug!(wal = %name, error = %e, "prefetch not kept");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(wal = %name, error = %e, "prefetch failed"),
            }
        });
    futures::stream::iter(fetches)
        .buffer_unordered(names.len().max(1))
        .collect::<Vec<()>>()
        .await;
    drop(lock);
    Ok(())
}
