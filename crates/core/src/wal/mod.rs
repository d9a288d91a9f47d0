//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`), `wal-fetch` (its
//! `restore_command`), and reading the archive's shape (timelines, gaps, windows).
//!
//! Each file is stored whole, compressed (and encrypted), at `wal/<name>.zst[.age]`, with a
//! description of what it is inside ([`stored`]), created atomically so that nothing is ever
//! overwritten ([`push`]). A segment must be what its name says and come from the archive's
//! cluster ([`segment`], [`cluster`]), on the way in and on the way out. Fetches download
//! files back, and the following segments ahead ([`fetch`]). Both keep their work in a spool
//! folder private to the user PostgreSQL runs as.

pub mod cluster;
mod fetch;
pub mod marks;
mod names;
mod push;
pub mod queue;
mod report;
pub mod segment;
pub mod stored;
mod timelines;

pub use fetch::{fetch_wal, prefetch, read_archived, Fetched};
pub use names::*;
pub use push::{last_refusal, push_ready, push_wal, Pushed, Refusal};
pub use report::{archive_report, ArchiveReport, RecoveryWindow, TimelineReport};
pub use timelines::*;

use std::path::{Path, PathBuf};

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::Context;

/// The spool: pushed-ahead markers and prefetched segments. What is in it is trusted (a
/// marker stands for an upload, a prefetched segment is handed to PostgreSQL as it is), so it
/// must be private: `[wal] spool_dir`, else `lifeboat-wal-<uid>` in the temporary folder, is
/// created with mode 0700 and refused when it is a symlink, another user owns it, or others
/// may write to it. In it, each repository has a folder of its own, so that two never share
/// files, not even a repository and one created after it at the same location.
fn spool_dir(ctx: &Context, repo: &Repository) -> Result<PathBuf> {
    let (base, uid) = spool_base(ctx)?;
    let digest = crate::pipeline::sha256_hex(repo.instance().as_bytes());
    let dir = base.join(&digest[..16]);
    private_folder(&dir, uid)?;
    Ok(dir)
}

/// The spool's own folder (made private), and the user it belongs to.
fn spool_base(ctx: &Context) -> Result<(PathBuf, u32)> {
    let uid = crate::process::effective_uid()
        .ok_or_else(|| Error::Internal("cannot tell which user lifeboat runs as".into()))?;
    let base = match &ctx.config.wal.spool_dir {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("lifeboat-wal-{uid}")),
    };
    private_folder(&base, uid)?;
    Ok((base, uid))
}

/// Creates `dir` (mode 0700) if needed and checks that only user `uid` can write to it.
fn private_folder(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating the WAL spool `{}`", dir.display()), e))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("reading the WAL spool `{}`", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(Error::NotReady(format!(
            "WAL spool `{}` is not a private folder of this user (owner uid {}, mode {:o}{}): remove it, or set `[wal] spool_dir` to a folder only uid {uid} can write",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777,
            if meta.is_symlink() { ", a symlink" } else { "" }
        )));
    }
    Ok(())
}

/// Opens (creating) the lock file `name` in `dir` and takes it if it is free: `None` when
/// another process holds it. The lock goes with the returned file.
fn try_lock(dir: &Path, name: &str) -> Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))
        .map_err(|e| {
            Error::io(
                format!("creating the lock `{name}` in `{}`", dir.display()),
                e,
            )
        })?;
    Ok(file.try_lock().is_ok().then_some(file))
}

/// The identities to read an archive written with or without encryption.
pub fn identities(ctx: &Context, encrypted: bool) -> Result<Option<Identities>> {
    if !encrypted {
        return Ok(None);
    }
    let path = ctx
        .config
        .encryption
        .as_ref()
        .and_then(|e| e.identity_file.as_deref())
        .ok_or_else(|| {
            Error::Crypto("the WAL archive is encrypted: set `encryption.identity_file`".into())
        })?;
    crate::crypto::load_identities(Path::new(path)).map(Some)
}

/// Downloads archived file `name` and checks it: it must be the file it is stored as, and a
/// segment must come from the archive's cluster (`spool` remembers the cluster). `None` when
/// the archive does not have it.
async fn download(
    ctx: &Context,
    repo: &Repository,
    name: &str,
    spool: Option<&Path>,
) -> Result<Option<Vec<u8>>> {
    let storage = repo.storage();
    for encrypted in [false, true] {
        if let Some(sealed) = storage.read_opt(&key(name, encrypted)).await? {
            let ids = identities(ctx, encrypted)?;
            let owned = name.to_string();
            let raw =
                tokio::task::spawn_blocking(move || stored::open(&owned, &sealed, ids.as_ref()))
                    .await
                    .map_err(|e| Error::thread("decompression", e))??;
            let header = segment::check(name, &raw).map_err(|detail| Error::DamagedWal {
                name: name.to_string(),
                detail,
            })?;
            if let Some(header) = header {
                cluster::check_fetched(repo, spool, header.system_id, name).await?;
            }
            return Ok(Some(raw));
        }
    }
    Ok(None)
}

/// Writes `data` to a temporary file beside `dest`, syncs it when `sync`, and renames it
/// into place.
pub(crate) fn write_atomically(dest: &Path, data: &[u8], sync: bool) -> Result<()> {
    use std::io::Write;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lifeboat-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a file in `{}`", dir.display()), e))?;
    tmp.write_all(data)
        .and_then(|()| {
            if sync {
                tmp.as_file().sync_all()
            } else {
                Ok(())
            }
        })
        .map_err(|e| Error::io(format!("writing `{}`", dest.display()), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io(format!("renaming into `{}`", dest.display()), e.error))?;
    Ok(())
}

/// Each archived timeline history among `names`, parsed: `(timeline, its history)`.
pub async fn read_histories(
    ctx: &Context,
    repo: &Repository,
    names: &[String],
) -> Result<Vec<(u32, Vec<(u32, u64)>)>> {
    let mut histories = Vec::new();
    for name in names {
        if let Some(WalName::History { timeline }) = WalName::parse(name) {
            if let Some(text) = read_archived(ctx, repo, name).await? {
                histories.push((timeline, parse_history(&String::from_utf8_lossy(&text))));
            }
        }
    }
    Ok(histories)
}

/// When archived file `name` was stored, if it is in the archive.
pub async fn stored_at(repo: &Repository, name: &str) -> Result<Option<jiff::Timestamp>> {
    for encrypted in [false, true] {
        if let Some(at) = repo.storage().modified(&key(name, encrypted)).await? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// For each archived timeline, when its newest file (segment or history) was stored: what
/// [`production_line`] tells the production line by.
pub async fn last_archived(
    repo: &Repository,
    names: &[String],
    segment_size: u64,
) -> Result<Vec<(u32, jiff::Timestamp)>> {
    let mut newest: Vec<(u32, String)> = spans(names, segment_size)
        .into_iter()
        .map(|span| (span.timeline, span.last))
        .collect();
    for name in names {
        if let Some(WalName::History { timeline }) = WalName::parse(name) {
            newest.push((timeline, name.clone()));
        }
    }
    let mut out: Vec<(u32, jiff::Timestamp)> = Vec::new();
    for (timeline, name) in newest {
        let Some(at) = stored_at(repo, &name).await? else {
            continue;
        };
        match out.iter_mut().find(|(t, _)| *t == timeline) {
            Some((_, seen)) => *seen = (*seen).max(at),
            None => out.push((timeline, at)),
        }
    }
    Ok(out)
}

/// Names of every archived WAL file, sorted.
pub async fn archived_names(repo: &Repository) -> Result<Vec<String>> {
    let entries = repo
        .storage()
        .list(crate::repository::layout::Area::Wal.dirname())
        .await?;
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|e| name_of_key(&e.path).map(String::from))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
