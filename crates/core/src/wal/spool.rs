//! The spool: a folder private to the user PostgreSQL runs as (one per repository), where
//! `wal-push` leaves its markers and `wal-fetch` its prefetched segments, with the locks that
//! keep one background worker per folder, and files written into place atomically.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::Context;

/// The spool: pushed-ahead markers and prefetched segments. What is in it is trusted (a
/// marker stands for an upload, a prefetched segment is handed to PostgreSQL as it is), so it
/// must be private: `[wal] spool_dir`, else `lifeboat-wal-<uid>` in the temporary folder, is
/// created with mode 0700 and refused when it is a symlink, another user owns it, or others
/// may write to it. In it, each repository has a folder of its own, so that two never share
/// files, not even a repository and one created after it at the same location.
pub(super) fn spool_dir(ctx: &Context, repo: &Repository, scope: &str) -> Result<PathBuf> {
    let (base, uid) = spool_base(ctx)?;
    // `scope` (an archive's prefix, a cluster's name) is empty for the one cluster of a
    // repository at `wal/`, which keeps the folder it had before clusters and generations.
    let digest = crate::pipeline::sha256_hex(format!("{}{scope}", repo.instance()).as_bytes());
    let dir = base.join(&digest[..16]);
    private_folder(&dir, uid)?;
    Ok(dir)
}

/// The spool's own folder (made private), and the user it belongs to.
pub(super) fn spool_base(ctx: &Context) -> Result<(PathBuf, u32)> {
    let uid = crate::process::effective_uid();
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
pub(super) fn try_lock(dir: &Path, name: &str) -> Result<Option<std::fs::File>> {
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

/// Writes `data` to a temporary file beside `dest`, syncs it when `sync`, and renames it
/// into place.
pub(super) fn write_atomically(dest: &Path, data: &[u8], sync: bool) -> Result<()> {
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
