//! PostgreSQL 17's incremental base backups, on the tar side: an incremental's tar applied onto
//! a data folder that holds its parent (restored), and the `backup_manifest` a backup's tar
//! ends with, caught while the tar streams past.
//!
//! An incremental's tar lists every file of the cluster. A relation file the server found
//! worth it is sent as `INCREMENTAL.<name>`: a magic number, the count of blocks sent, the
//! truncation length (in blocks), the block numbers, padding to a block when blocks follow,
//! then the blocks. Applied in order onto the folder of the previous backup, each such file
//! cuts its relation at the truncation length and writes its blocks at their places (a block
//! beyond the old end and not sent reads as zeros, as `pg_combinebackup` writes it); every
//! other file replaces the folder's; a file or folder the tar does not list is gone from the
//! cluster and is removed. So a chain is restored into the data folder itself, newest block
//! last, with no other disk.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use super::extract::{open_file, safe_join};
use super::format::{damaged, padding, parse_header, EntryKind, BLOCK};
use super::unpack::read_full;
use crate::progress::Task;

/// PostgreSQL's `INCREMENTAL_MAGIC`.
pub const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;
/// Relation block size (PostgreSQL's default `BLCKSZ`; another is refused, not guessed).
pub const BLCKSZ: u64 = 8192;
/// Blocks in a relation segment file (`RELSEG_SIZE` with the default 1 GiB segments).
const RELSEG_BLOCKS: u32 = 131_072;
/// The prefix of an incremental relation file's name.
pub const PREFIX: &str = "INCREMENTAL.";

/// What applying one incremental did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Relation files changed block by block, and the blocks written.
    pub incremental_files: u64,
    pub blocks: u64,
    /// Files written whole.
    pub whole_files: u64,
    /// Files and folders removed (gone from the cluster since the parent).
    pub removed: u64,
}

/// The head of an `INCREMENTAL.` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalHead {
    pub truncation_blocks: u32,
    pub blocks: Vec<u32>,
    /// Bytes before the first block.
    pub header_len: u64,
}

/// Reads an `INCREMENTAL.` file's head from `r`, whose whole size is `size`; the blocks follow.
pub fn read_incremental_head(
    r: &mut impl Read,
    size: u64,
    name: &str,
) -> io::Result<IncrementalHead> {
    let bad = |what: String| damaged(format!("incremental file `{name}`: {what}"));
    let mut fixed = [0u8; 12];
    if read_full(r, &mut fixed)? < 12 {
        return Err(bad("shorter than its header".into()));
    }
    let word = |i: usize| u32::from_le_bytes(fixed[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    if word(0) != INCREMENTAL_MAGIC {
        return Err(bad(format!(
            "magic number {:#x}, not {INCREMENTAL_MAGIC:#x}",
            word(0)
        )));
    }
    let (count, truncation_blocks) = (word(1), word(2));
    if count > RELSEG_BLOCKS || truncation_blocks > RELSEG_BLOCKS {
        return Err(bad(format!(
            "{count} blocks, truncated at {truncation_blocks}: more than a segment holds"
        )));
    }
    let mut raw = vec![0u8; count as usize * 4];
    r.read_exact(&mut raw)?;
    let blocks: Vec<u32> = raw
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if let Some(b) = blocks.iter().find(|&&b| b >= RELSEG_BLOCKS) {
        return Err(bad(format!("block {b} is beyond a segment")));
    }
    let mut header_len = 12 + 4 * u64::from(count);
    // Blocks start on a block boundary (PostgreSQL 17's `GetIncrementalHeaderSize`).
    if count > 0 && header_len % BLCKSZ != 0 {
        let pad = BLCKSZ - header_len % BLCKSZ;
        io::copy(&mut r.take(pad), &mut io::sink())?;
        header_len += pad;
    }
    if header_len + u64::from(count) * BLCKSZ != size {
        return Err(bad(format!(
            "{size} bytes for {count} blocks of {BLCKSZ} (a server with another block size is not supported)"
        )));
    }
    Ok(IncrementalHead {
        truncation_blocks,
        blocks,
        header_len,
    })
}

/// Files at most this large are applied by the worker threads; a larger one (a relation
/// segment that changed throughout) is applied by the reading thread as it streams past.
const JOB_LIMIT: u64 = 8 << 20;

/// One file of an incremental's tar, read whole, for a worker.
struct Job {
    /// Where the tar puts it (for an `INCREMENTAL.` file, that name).
    path: PathBuf,
    name: String,
    mode: u32,
    data: Vec<u8>,
}

/// Applies an incremental backup's tar (`raw`, uncompressed) onto `dest`, which holds the
/// restored parent: see the module's header. One thread reads the tar; files are applied by
/// `threads` workers (each file is one path, written by one of them), a large one by the
/// reader itself; memory stays within about `2 × threads × JOB_LIMIT`.
pub fn apply_incremental(
    mut raw: impl Read,
    dest: &Path,
    threads: usize,
    task: &Task,
) -> io::Result<Applied> {
    let threads = threads.max(1);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<io::Error>> = Mutex::new(None);
    let applied = Mutex::new(Applied::default());
    let mut listed: HashSet<PathBuf> = HashSet::new();
    let fail = |e: io::Error| {
        failed.store(true, Ordering::Relaxed);
        first_error.lock().expect("error slot").get_or_insert(e);
    };
    let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (queue, failed, applied, fail) = (&queue, &failed, &applied, &fail);
            scope.spawn(move || loop {
                let Ok(job) = queue.lock().expect("job queue").recv() else {
                    return;
                };
                if failed.load(Ordering::Relaxed) {
                    continue;
                }
                let size = job.data.len() as u64;
                match apply_file(
                    &mut job.data.as_slice(),
                    size,
                    &job.path,
                    &job.name,
                    job.mode,
                ) {
                    Ok(done) => {
                        applied.lock().expect("counts").add(done);
                        task.advance(size + padding(size));
                    }
                    Err(e) => fail(e),
                }
            });
        }
        let reading = (|| -> io::Result<()> {
            let mut header = [0u8; BLOCK];
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if read_full(&mut raw, &mut header)? < BLOCK {
                    return Err(damaged("the archive ends before its end-of-archive block"));
                }
                task.advance(BLOCK as u64);
                let Some(entry) = parse_header(&header)? else {
                    return Ok(());
                };
                let path = safe_join(dest, entry.path.trim_end_matches('/'))?;
                match entry.kind {
                    EntryKind::Dir => {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::create_dir_all(&path)?;
                        std::fs::set_permissions(
                            &path,
                            std::fs::Permissions::from_mode(entry.mode | 0o700),
                        )?;
                        listed.insert(path);
                    }
                    EntryKind::Symlink(target) => {
                        remove_any(&path)?;
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::os::unix::fs::symlink(target, &path)?;
                        listed.insert(path);
                    }
                    EntryKind::File => {
                        let name = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or_default()
                            .to_string();
                        listed.insert(match name.strip_prefix(PREFIX) {
                            Some(relation) => path.with_file_name(relation),
                            None => path.clone(),
                        });
                        let mut data = (&mut raw).take(entry.size);
                        if entry.size <= JOB_LIMIT {
                            let mut bytes = Vec::with_capacity(entry.size as usize);
                            data.read_to_end(&mut bytes)?;
                            if bytes.len() as u64 != entry.size {
                                return Err(damaged(format!(
                                    "the archive ends inside `{}`",
                                    entry.path
                                )));
                            }
                            let job = Job {
                                path,
                                name: entry.path.clone(),
                                mode: entry.mode,
                                data: bytes,
                            };
                            jobs.send(job)
                                .map_err(|_| io::Error::other("the applying threads stopped"))?;
                        } else {
                            let done =
                                apply_file(&mut data, entry.size, &path, &entry.path, entry.mode)?;
                            applied.lock().expect("counts").add(done);
                            task.advance(entry.size + padding(entry.size));
                        }
                        io::copy(&mut (&mut raw).take(padding(entry.size)), &mut io::sink())?;
                    }
                }
            }
        })();
        drop(jobs);
        if let Err(e) = reading {
            fail(e);
        }
    });
    if let Some(e) = first_error.into_inner().expect("error slot") {
        return Err(e);
    }
    let mut applied = applied.into_inner().expect("counts");
    applied.removed = remove_unlisted(dest, &listed)?;
    Ok(applied)
}

impl Applied {
    fn add(&mut self, other: Applied) {
        self.incremental_files += other.incremental_files;
        self.blocks += other.blocks;
        self.whole_files += other.whole_files;
        self.removed += other.removed;
    }
}

/// Applies one file of an incremental's tar, `size` bytes read from `data`: an `INCREMENTAL.`
/// file onto its relation file, any other written whole at `path`. `name` is the tar's.
fn apply_file(
    data: &mut impl Read,
    size: u64,
    path: &Path,
    name: &str,
    mode: u32,
) -> io::Result<Applied> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let short = || damaged(format!("the archive ends inside `{name}`"));
    if let Some(relation) = file_name.strip_prefix(PREFIX) {
        let target = path.with_file_name(relation);
        let head = read_incremental_head(data, size, name)?;
        let file = open(&target, mode, false)?;
        // Cut (or lengthen with zeros) to what the relation kept, then the blocks.
        file.set_len(u64::from(head.truncation_blocks) * BLCKSZ)?;
        let mut buf = vec![0u8; BLCKSZ as usize];
        for &block in &head.blocks {
            if read_full(data, &mut buf)? < buf.len() {
                return Err(short());
            }
            file.write_all_at(&buf, u64::from(block) * BLCKSZ)?;
        }
        Ok(Applied {
            incremental_files: 1,
            blocks: head.blocks.len() as u64,
            ..Applied::default()
        })
    } else {
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(path)?;
        }
        let mut file = open(path, mode, true)?;
        if io::copy(&mut data.take(size), &mut file)? != size {
            return Err(short());
        }
        Ok(Applied {
            whole_files: 1,
            ..Applied::default()
        })
    }
}

/// [`open_file`], after removing a symbolic link in the way (the parent's, now a file).
fn open(path: &Path, mode: u32, truncate: bool) -> io::Result<std::fs::File> {
    if path.is_symlink() {
        std::fs::remove_file(path)?;
    }
    open_file(path, mode, truncate)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what under `dest` the newest tar did not list; returns how many entries went.
fn remove_unlisted(dest: &Path, listed: &HashSet<PathBuf>) -> io::Result<u64> {
    let mut removed = 0;
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if !listed.contains(&path) {
                remove_any(&path)?;
                removed += 1;
            } else if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    Ok(removed)
}

/// The largest `backup_manifest` kept from a tar (a line per file: millions of files).
const MANIFEST_LIMIT: u64 = 1 << 30;

/// A reader that passes a base backup's tar through unchanged and keeps the content of its
/// `backup_manifest` entry (which `pg_basebackup` puts in the tar it writes to stdout).
pub struct ManifestTap<R> {
    inner: R,
    caught: Caught,
    header: Vec<u8>,
    at: Tap,
}

/// Where a [`ManifestTap`] leaves the manifest it caught.
pub type Caught = Arc<Mutex<Option<Vec<u8>>>>;

enum Tap {
    Header,
    Skip(u64),
    Keep {
        content: Vec<u8>,
        left: u64,
        pad: u64,
    },
    /// The archive ended, or the tar could not be followed (the unpacking would refuse it).
    Done,
}

impl<R> ManifestTap<R> {
    /// The reader, and where the manifest will be once the tar has passed.
    pub fn new(inner: R) -> (ManifestTap<R>, Caught) {
        let caught = Arc::new(Mutex::new(None));
        let tap = ManifestTap {
            inner,
            caught: caught.clone(),
            header: Vec::with_capacity(BLOCK),
            at: Tap::Header,
        };
        (tap, caught)
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.at {
                Tap::Header => {
                    let n = (BLOCK - self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.header.len() == BLOCK {
                        self.at = match parse_header(&self.header) {
                            Ok(Some(h)) if h.kind == EntryKind::File => {
                                if h.path == "backup_manifest" && h.size <= MANIFEST_LIMIT {
                                    Tap::Keep {
                                        content: Vec::with_capacity(h.size as usize),
                                        left: h.size,
                                        pad: padding(h.size),
                                    }
                                } else {
                                    Tap::Skip(h.size + padding(h.size))
                                }
                            }
                            Ok(Some(_)) => Tap::Header,
                            Ok(None) | Err(_) => Tap::Done,
                        };
                        self.header.clear();
                        if matches!(self.at, Tap::Keep { left: 0, .. }) {
                            self.keep_done();
                        }
                    }
                }
                Tap::Skip(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    *left -= n;
                    if *left == 0 {
                        self.at = Tap::Header;
                    }
                }
                Tap::Keep { content, left, .. } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    content.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.keep_done();
                    }
                }
                Tap::Done => return,
            }
        }
    }

    fn keep_done(&mut self) {
        if let Tap::Keep { content, pad, .. } = std::mem::replace(&mut self.at, Tap::Done) {
            *self.caught.lock().expect("manifest tap") = Some(content);
            self.at = if pad == 0 {
                Tap::Header
            } else {
                Tap::Skip(pad)
            };
        }
    }
}

impl<R: Read> Read for ManifestTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n]);
        Ok(n)
    }
}

/// Writes what a chain's restore leaves to be done once its newest backup is applied: the
/// `backup_label` without the lines that mark an incremental (PostgreSQL refuses to start
/// from those, as `pg_combinebackup` removes them), and a `backup_manifest` that describes
/// the files as they now are (names without `INCREMENTAL.`, sizes read from the folder), so
/// that `pg_verifybackup` checks the restored folder.
pub fn finish_chain(dest: &Path) -> io::Result<()> {
    let label_path = dest.join("backup_label");
    let label = std::fs::read_to_string(&label_path)?;
    let kept: String = label
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("INCREMENTAL FROM "))
        .collect();
    std::fs::write(&label_path, kept)?;
    let manifest_path = dest.join("backup_manifest");
    let text = std::fs::read_to_string(&manifest_path)?;
    std::fs::write(&manifest_path, rewrite_manifest(&text, dest)?)
}

/// PostgreSQL's manifest text with each file's entry as the folder now has it, and its
/// checksum (SHA-256 of everything before the `Manifest-Checksum` line) made again.
fn rewrite_manifest(text: &str, dest: &Path) -> io::Result<String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("\"Manifest-Checksum\"") {
            break;
        }
        let Some(body) = line.strip_prefix("{ \"Path\": ") else {
            out.push_str(line);
            continue;
        };
        let comma = line.trim_end().ends_with(',');
        let json = line.trim_end().trim_end_matches(',');
        let mut entry: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
            .map_err(|e| damaged(format!("backup_manifest line `{}`: {e}", body.trim_end())))?;
        let path = entry
            .get("Path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| damaged("backup_manifest has a file entry without a path"))?
            .to_string();
        let (folder, name) = path
            .rsplit_once('/')
            .map_or(("", path.as_str()), |(d, n)| (d, n));
        let actual = match name.strip_prefix(PREFIX) {
            Some(relation) if folder.is_empty() => relation.to_string(),
            Some(relation) => format!("{folder}/{relation}"),
            None => path.clone(),
        };
        let size = std::fs::metadata(dest.join(&actual))?.len();
        // In PostgreSQL's order.
        let mut fields = vec![
            format!("\"Path\": {}", serde_json::Value::from(actual.as_str())),
            format!("\"Size\": {size}"),
        ];
        if let Some(modified) = entry.remove("Last-Modified") {
            fields.push(format!("\"Last-Modified\": {modified}"));
        }
        // A file written whole keeps its checksum; one rebuilt from blocks has none.
        if actual == path && path != "backup_label" {
            for key in ["Checksum-Algorithm", "Checksum"] {
                if let Some(v) = entry.remove(key) {
                    fields.push(format!("\"{key}\": {v}"));
                }
            }
        }
        out.push_str("{ ");
        out.push_str(&fields.join(", "));
        out.push_str(if comma { " },\n" } else { " }\n" });
    }
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(out.as_bytes()));
    out.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    Ok(out)
}
