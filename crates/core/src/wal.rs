//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`), `wal-fetch` (its
//! `restore_command`), and reading the archive's shape (timelines, gaps).
//!
//! Each file is stored whole, compressed (and encrypted), at `wal/<name>.zst[.age]`, written
//! with a conditional PUT so that nothing is ever overwritten: pushing a name that is already
//! archived succeeds only if the content is the same. A push exits 0 only after the object is
//! stored and its size checked, so PostgreSQL keeps and retries anything not safely archived.
//!
//! Speed: one upload per `archive_command` call limits a busy server, so a push also has the
//! next segments PostgreSQL has marked ready (`archive_status/*.ready`) pushed in parallel by a
//! background pusher, which leaves a marker in the spool folder for each; when PostgreSQL asks
//! for one of those, the push is already done (or is waited for). A fetch likewise downloads the following segments in parallel into the spool
//! folder, where the next fetches find them.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pipeline::{self, SealOptions};
use crate::repository::Repository;
use crate::Context;

pub const WAL_PREFIX: &str = "wal/";
/// PostgreSQL's default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// What a file name in `pg_wal` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalName {
    Segment { timeline: u32, log: u32, seg: u32 },
    History { timeline: u32 },
    Partial { timeline: u32, log: u32, seg: u32 },
    Backup { timeline: u32, log: u32, seg: u32 },
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

fn segment_parts(text: &str) -> Option<(u32, u32, u32)> {
    if text.len() != 24 {
        return None;
    }
    Some((hex8(&text[..8])?, hex8(&text[8..16])?, hex8(&text[16..])?))
}

impl WalName {
    pub fn parse(name: &str) -> Option<WalName> {
        if let Some((timeline, log, seg)) = segment_parts(name) {
            return Some(WalName::Segment { timeline, log, seg });
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalName::History {
                timeline: hex8(tli)?,
            });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = segment_parts(base)?;
            return Some(WalName::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (base, offset) = rest.split_once('.')?;
            hex8(offset)?;
            let (timeline, log, seg) = segment_parts(base)?;
            return Some(WalName::Backup { timeline, log, seg });
        }
        None
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalName::Segment { timeline, .. }
            | WalName::History { timeline }
            | WalName::Partial { timeline, .. }
            | WalName::Backup { timeline, .. } => timeline,
        }
    }
}

/// Segments per "log" file number for a segment size.
fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The absolute segment number of a segment name's log and seg parts.
pub fn segment_number(log: u32, seg: u32, segment_size: u64) -> u64 {
    u64::from(log) * segments_per_log(segment_size) + u64::from(seg)
}

pub fn segment_name(timeline: u32, number: u64, segment_size: u64) -> String {
    let per = segments_per_log(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", number / per, number % per)
}

/// The segment holding `lsn`.
pub fn segment_of_lsn(timeline: u32, lsn: u64, segment_size: u64) -> String {
    segment_name(timeline, lsn / segment_size, segment_size)
}

/// Parses an LSN written as `16/B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The key of an archived file.
pub fn key(name: &str, encrypted: bool) -> String {
    format!(
        "{WAL_PREFIX}{name}.zst{}",
        if encrypted { ".age" } else { "" }
    )
}

/// The file name a key stores, if it is a WAL key.
pub fn name_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(WAL_PREFIX)?;
    let name = rest
        .strip_suffix(".zst.age")
        .or_else(|| rest.strip_suffix(".zst"))?;
    WalName::parse(name).map(|_| name)
}

/// One timeline's run of archived segments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TimelineSpan {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Missing runs `(first missing, last missing)`: every moment after one is unrecoverable
    /// from a base backup taken before it.
    pub gaps: Vec<(String, String)>,
}

/// Groups archived segment names (sorted or not) into timelines and finds gaps.
pub fn spans(names: &[String], segment_size: u64) -> Vec<TimelineSpan> {
    let mut segments: Vec<(u32, u64)> = names
        .iter()
        .filter_map(|n| match WalName::parse(n)? {
            WalName::Segment { timeline, log, seg } => {
                Some((timeline, segment_number(log, seg, segment_size)))
            }
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    segments.dedup();
    let mut out: Vec<TimelineSpan> = Vec::new();
    let mut previous: Option<(u32, u64)> = None;
    for (timeline, number) in segments {
        let name = segment_name(timeline, number, segment_size);
        match (previous, out.last_mut()) {
            (Some((tli, prev)), Some(span)) if tli == timeline => {
                if number > prev + 1 {
                    span.gaps.push((
                        segment_name(timeline, prev + 1, segment_size),
                        segment_name(timeline, number - 1, segment_size),
                    ));
                }
                span.last = name;
                span.segments += 1;
            }
            _ => out.push(TimelineSpan {
                timeline,
                first: name.clone(),
                last: name,
                segments: 1,
                gaps: Vec::new(),
            }),
        }
        previous = Some((timeline, number));
    }
    out
}

/// A timeline history file: each ancestor timeline and the LSN where the next one branched
/// off it, oldest first (`1\t0/3000000\tno recovery target specified`).
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let parent = fields.next()?.parse().ok()?;
            let switch = parse_lsn(fields.next()?)?;
            Some((parent, switch))
        })
        .collect()
}

/// The timeline recovery ends on (`recovery_target_timeline = 'latest'`) from a base backup
/// that started at `start_lsn` on `timeline`: the newest whose history passes through that
/// timeline after the start; `histories` holds each archived timeline's parsed history.
pub fn latest_timeline_from(
    timeline: u32,
    start_lsn: u64,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> (u32, Vec<(u32, u64)>) {
    histories
        .iter()
        .filter(|(tli, history)| {
            *tli > timeline
                && history
                    .iter()
                    .any(|(parent, switch)| *parent == timeline && *switch >= start_lsn)
        })
        .max_by_key(|(tli, _)| *tli)
        .map_or((timeline, Vec::new()), |(tli, h)| (*tli, h.clone()))
}

/// The first segment missing on recovery's path from segment `first` of `timeline` to the
/// newest archived segment of `last_timeline`, following the switches in `history` (that of
/// `last_timeline`), with the path's segment just before it. Each timeline is read up to the
/// segment where the next branched off; the switch segment itself comes from the new one.
pub fn first_gap_on_path(
    names: &[String],
    timeline: u32,
    first: u64,
    last_timeline: u32,
    history: &[(u32, u64)],
    segment_size: u64,
) -> Option<(String, Option<String>)> {
    let archived: std::collections::HashSet<(u32, u64)> = names
        .iter()
        .filter_map(|n| segment_of_name(n, segment_size))
        .collect();
    // (timeline, from, to exclusive) pieces of the path.
    let mut pieces = Vec::new();
    let (mut current, mut from) = (timeline, first);
    let switches: Vec<&(u32, u64)> = history.iter().filter(|(p, _)| *p >= timeline).collect();
    for (i, (parent, switch)) in switches.iter().enumerate() {
        if *parent != current {
            continue;
        }
        let to = switch / segment_size;
        pieces.push((current, from, to.max(from)));
        current = switches
            .get(i + 1)
            .map_or(last_timeline, |(next_parent, _)| *next_parent);
        from = to.max(from);
    }
    let newest = archived
        .iter()
        .filter(|(tli, _)| *tli == current)
        .map(|(_, n)| *n)
        .max();
    if let Some(newest) = newest {
        pieces.push((current, from, newest + 1));
    }
    let mut before = None;
    for (tli, from, to) in pieces {
        for number in from..to {
            if !archived.contains(&(tli, number)) {
                return Some((segment_name(tli, number, segment_size), before));
            }
            before = Some(segment_name(tli, number, segment_size));
        }
    }
    None
}

fn seal_options(ctx: &Context) -> SealOptions {
    SealOptions {
        level: ctx.config.compression.level,
        threads: 1,
        recipients: ctx
            .config
            .encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default(),
        tar_chunks: false,
    }
}

fn spool_dir(ctx: &Context, repo: &Repository) -> PathBuf {
    if let Some(dir) = &ctx.config.wal.spool_dir {
        return PathBuf::from(dir);
    }
    // One spool per repository, so two repositories never share markers.
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(repo.location().as_bytes()));
    std::env::temp_dir().join(format!("lifeboat-wal-{}", &digest[..16]))
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
pub async fn push(ctx: &Context, repo: &Repository, path: &Path) -> Result<Pushed> {
    let name = file_name(path)?;
    let spool = spool_dir(ctx, repo);
    let segment = matches!(WalName::parse(&name), Some(WalName::Segment { .. }));
    let ahead_on = segment && ctx.config.wal.push_ahead > 0;
    let done_ahead = if take_marker(&spool, &name, path) {
        tracing::debug!(wal = %name, "already pushed ahead");
        true
    } else {
        ahead_on && wait_for_pusher(&spool, &name, path).await
    };
    if !done_ahead {
        push_one(ctx, repo, path, &name).await?;
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
pub async fn push_ready(ctx: &Context, repo: &Repository, path: &Path) -> Result<()> {
    let after = file_name(path)?;
    let Some(wal_dir) = path.parent() else {
        return Ok(());
    };
    let spool = spool_dir(ctx, repo);
    std::fs::create_dir_all(&spool)
        .map_err(|e| Error::io(format!("creating the WAL spool `{}`", spool.display()), e))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.join(PUSH_LOCK))
        .map_err(|e| {
            Error::io(
                format!("creating the push lock in `{}`", spool.display()),
                e,
            )
        })?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
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
            let outcome = push_one(ctx, repo, &file, name).await;
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

fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("`{}` is not a WAL file path", path.display())))?;
    WalName::parse(name).ok_or_else(|| {
        Error::invalid(format!(
            "`{name}` is not a WAL segment, history, partial or backup file name"
        ))
    })?;
    Ok(name.to_string())
}

async fn push_one(ctx: &Context, repo: &Repository, path: &Path, name: &str) -> Result<()> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?;
    let seal = seal_options(ctx);
    let encrypted = !seal.recipients.is_empty();
    let key = key(name, encrypted);
    let raw = std::sync::Arc::new(raw);
    let sealed = {
        let raw = std::sync::Arc::clone(&raw);
        tokio::task::spawn_blocking(move || pipeline::seal_bytes(&raw, &seal))
            .await
            .map_err(|e| Error::invalid(format!("compression thread failed: {e}")))??
    };
    let size = sealed.len() as u64;
    let storage = repo.storage();
    if storage.write_new(&key, sealed).await? {
        match storage.size(&key).await? {
            Some(stored) if stored == size => {
                tracing::info!(wal = name, bytes = raw.len(), stored, "archived");
                Ok(())
            }
            other => Err(Error::Integrity {
                id: name.to_string(),
                detail: format!("stored {other:?} bytes, uploaded {size}"),
            }),
        }
    } else {
        // Already archived: the same content is a success (a retry), other content never is.
        let existing = storage.read_opt(&key).await?.unwrap_or_default();
        let identities = identities(ctx, encrypted)?;
        let archived = pipeline::open_bytes(&existing, identities.as_ref(), name)?;
        if archived == *raw {
            tracing::info!(wal = name, "already archived with the same content");
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "`{name}` is already archived in `{}` with different content: refusing to overwrite it (is another server archiving to this repository?)",
                repo.location()
            )))
        }
    }
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
pub async fn fetch(ctx: &Context, repo: &Repository, name: &str, dest: &Path) -> Result<Fetched> {
    WalName::parse(name)
        .ok_or_else(|| Error::invalid(format!("`{name}` is not a WAL file name")))?;
    let spool = spool_dir(ctx, repo).join("fetched");
    let prefetched = spool.join(name);
    // A prefetched file was written whole and synced: on the same file system it is renamed
    // into place, else copied.
    let size = if prefetched.exists() && std::fs::rename(&prefetched, dest).is_ok() {
        std::fs::metadata(dest)
            .map_err(|e| Error::io(format!("reading `{}`", dest.display()), e))?
            .len()
    } else {
        let raw = if prefetched.exists() {
            let raw = tokio::fs::read(&prefetched)
                .await
                .map_err(|e| Error::io(format!("reading `{}`", prefetched.display()), e))?;
            let _ = std::fs::remove_file(&prefetched);
            raw
        } else {
            match download(ctx, repo, name).await? {
                Some(raw) => raw,
                None => return Ok(Fetched::default()),
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

/// The timeline and number of a segment file name.
pub fn segment_of_name(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    match WalName::parse(name)? {
        WalName::Segment { timeline, log, seg } => {
            Some((timeline, segment_number(log, seg, segment_size)))
        }
        _ => None,
    }
}

/// An archived file's content, if the archive has it.
pub async fn read_archived(
    ctx: &Context,
    repo: &Repository,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    download(ctx, repo, name).await
}

async fn download(ctx: &Context, repo: &Repository, name: &str) -> Result<Option<Vec<u8>>> {
    let storage = repo.storage();
    for encrypted in [false, true] {
        if let Some(stored) = storage.read_opt(&key(name, encrypted)).await? {
            let ids = identities(ctx, encrypted)?;
            let name = name.to_string();
            return tokio::task::spawn_blocking(move || {
                pipeline::open_bytes(&stored, ids.as_ref(), &name)
            })
            .await
            .map_err(|e| Error::invalid(format!("decompression thread failed: {e}")))?
            .map(Some);
        }
    }
    Ok(None)
}

/// Removes spooled segments of `timeline` before segment `number`: recovery has gone past
/// them (they were fetched directly while a prefetch was still on its way, or are left from
/// an earlier recovery).
fn forget_older(spool: &Path, timeline: u32, number: u64, segment_size: u64) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(WalName::Segment {
            timeline: t,
            log,
            seg,
        }) = WalName::parse(name)
        {
            if t == timeline && segment_number(log, seg, segment_size) < number {
                let _ = std::fs::remove_file(entry.path());
            }
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
pub async fn prefetch(ctx: &Context, repo: &Repository, names: &[String]) -> Result<()> {
    let spool = spool_dir(ctx, repo).join("fetched");
    std::fs::create_dir_all(&spool)
        .map_err(|e| Error::io(format!("creating `{}`", spool.display()), e))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.join(PREFETCH_LOCK))
        .map_err(|e| {
            Error::io(
                format!("creating the prefetch lock in `{}`", spool.display()),
                e,
            )
        })?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
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

/// Writes `data` to a temporary file beside `dest`, syncs it when `sync`, and renames it
/// into place.
fn write_atomically(dest: &Path, data: &[u8], sync: bool) -> Result<()> {
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

/// Names of every archived WAL file, sorted.
pub async fn archived_names(repo: &Repository) -> Result<Vec<String>> {
    let entries = repo.storage().list(WAL_PREFIX).await?;
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|e| name_of_key(&e.path).map(String::from))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(list: &[(u32, u64)]) -> Vec<String> {
        list.iter()
            .map(|(t, n)| segment_name(*t, *n, DEFAULT_SEGMENT_SIZE))
            .collect()
    }

    #[test]
    fn gaps_are_found_along_the_timeline_path() {
        let seg = DEFAULT_SEGMENT_SIZE;
        let history = parse_history("1\t0/5000028\tno recovery target specified\n");
        assert_eq!(history, vec![(1, 0x500_0028)]);
        // Timeline 1 from 2 to 5, its segment 6 lost after the switch to timeline 2 at
        // segment 5, which goes on from there: nothing missing on the way.
        let archive = archive_of(&[(1, 2), (1, 3), (1, 4), (1, 7), (2, 5), (2, 6), (2, 7)]);
        assert_eq!(first_gap_on_path(&archive, 1, 2, 2, &history, seg), None);
        // Staying on timeline 1, 5 and 6 are missing.
        assert_eq!(
            first_gap_on_path(&archive, 1, 2, 1, &[], seg),
            Some((segment_name(1, 5, seg), Some(segment_name(1, 4, seg))))
        );
        // A hole before the switch, and one after it on the new timeline.
        let holed = archive_of(&[(1, 2), (1, 4), (2, 5), (2, 6)]);
        assert_eq!(
            first_gap_on_path(&holed, 1, 2, 2, &history, seg),
            Some((segment_name(1, 3, seg), Some(segment_name(1, 2, seg))))
        );
        let holed = archive_of(&[(1, 2), (1, 3), (1, 4), (2, 5), (2, 7)]);
        assert_eq!(
            first_gap_on_path(&holed, 1, 2, 2, &history, seg),
            Some((segment_name(2, 6, seg), Some(segment_name(2, 5, seg))))
        );
        // A base backup taken on timeline 2 starts there.
        assert_eq!(first_gap_on_path(&archive, 2, 5, 2, &history, seg), None);
    }

    #[test]
    fn recovery_follows_the_newest_timeline_that_branched_after_the_backup() {
        let histories = vec![
            (2, vec![(1, 0x300_0000)]),
            (3, vec![(1, 0x300_0000), (2, 0x900_0000)]),
            // Branched off timeline 1 before the backup started: not on its path.
            (4, vec![(1, 0x100_0000)]),
        ];
        assert_eq!(latest_timeline_from(1, 0x200_0000, &histories).0, 3);
        assert_eq!(latest_timeline_from(1, 0x400_0000, &histories).0, 1);
        assert_eq!(latest_timeline_from(2, 0x400_0000, &histories).0, 3);
        assert_eq!(latest_timeline_from(3, 0x400_0000, &histories), (3, vec![]));
    }

    #[test]
    fn names() {
        assert_eq!(
            WalName::parse("000000010000000A000000FF"),
            Some(WalName::Segment {
                timeline: 1,
                log: 10,
                seg: 255
            })
        );
        assert_eq!(
            WalName::parse("00000002.history"),
            Some(WalName::History { timeline: 2 })
        );
        assert!(matches!(
            WalName::parse("000000010000000000000003.partial"),
            Some(WalName::Partial { timeline: 1, .. })
        ));
        assert!(matches!(
            WalName::parse("000000010000000000000002.00000028.backup"),
            Some(WalName::Backup { seg: 2, .. })
        ));
        for bad in [
            "",
            "0000000100000000000000",
            "00000001000000000000000G",
            "x.history",
            "../etc/passwd",
        ] {
            assert_eq!(WalName::parse(bad), None, "{bad}");
        }
        assert_eq!(
            name_of_key("wal/00000002.history.zst.age"),
            Some("00000002.history")
        );
        assert_eq!(name_of_key("wal/junk.zst"), None);
    }

    #[test]
    fn segment_arithmetic() {
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_name(1, segment_number(0, 0xFF, s) + 1, s),
            "000000010000000100000000"
        );
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(
            segment_of_lsn(1, parse_lsn("0/2000028").unwrap(), s),
            "000000010000000000000002"
        );
        // 64 MiB segments: 64 per log.
        assert_eq!(segment_name(3, 64, 64 << 20), "000000030000000100000000");
    }

    #[test]
    fn spans_and_gaps() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "000000010000000100000000",
            "00000002.history",
            "000000020000000000000005",
            "000000010000000000000006",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = spans(&names, DEFAULT_SEGMENT_SIZE);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].first, "000000010000000000000001");
        assert_eq!(got[0].last, "000000010000000100000000");
        assert_eq!(got[0].segments, 5);
        assert_eq!(
            got[0].gaps,
            vec![
                (
                    "000000010000000000000003".to_string(),
                    "000000010000000000000004".to_string()
                ),
                (
                    "000000010000000000000007".to_string(),
                    "0000000100000000000000FF".to_string()
                ),
            ]
        );
        assert_eq!(got[1].timeline, 2);
        assert!(got[1].gaps.is_empty());
        assert!(spans(&[], DEFAULT_SEGMENT_SIZE).is_empty());
    }
}
