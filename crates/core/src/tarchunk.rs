//! The chunked layout of base backups: a tar stream cut into independently compressed parts.
//!
//! `pg_basebackup` writes one tar stream. Compressed as one zstd frame it can only be unpacked
//! by one decompressor feeding one writer, which bounds a restore to one core. Here the stream
//! is cut into chunks of about [`CHUNK_TARGET`] tar bytes, each compressed on its own (in
//! parallel) and preceded by a zstd *skippable frame* that says how long the chunk is and, when
//! it starts inside a file, which file and where. A restore hands chunks to as many workers as
//! there are cores, each writing its files at their offsets; and since decompressors skip
//! skippable frames, `zstd -d | tar -x` still reads the stored stream as the original tar.
//!
//! Cuts fall on 512-byte tar blocks, either before a header or inside a regular file's data,
//! so a chunk never splits a header. Only what `pg_basebackup` writes is accepted: regular
//! files, directories and symbolic links with ustar names (no GNU or pax extensions); paths
//! that would leave the target folder are refused.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use serde::{Deserialize, Serialize};

use crate::progress::Progress;

/// Tar bytes per chunk: large enough that compression loses nothing (zstd level 3 looks back
/// 2 MiB), small enough that chunks in flight stay a few dozen MiB.
pub const CHUNK_TARGET: usize = 8 << 20;
/// The largest chunk a restore accepts (a damaged description must not allocate gigabytes).
const CHUNK_LIMIT: u64 = 64 << 20;
const BLOCK: usize = 512;
/// Largest single write while unpacking.
const WRITE_PIECE: usize = 256 << 10;
/// The magic number of lifeboat's skippable frames (zstd reserves 0x184D2A50..=0x184D2A5F).
const MAGIC: u32 = 0x184D_2A5B;

/// What the skippable frame before each chunk says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Bytes of the zstd frame that follows.
    pub stored: u64,
    /// Tar bytes in that frame.
    pub raw: u64,
    /// Set when the chunk starts inside a file's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// Where a chunk that starts inside a file's data continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub path: String,
    /// Offset in the file of the chunk's first byte.
    pub offset: u64,
    /// The file's whole size.
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    path: String,
    kind: Kind,
    size: u64,
    mode: u32,
}

fn damaged(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// A tar number: octal text, or base-256 when the first byte has its high bit set.
fn tar_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| damaged("tar number out of range"))?;
        }
        return Ok(value);
    }
    let text = std::str::from_utf8(field).map_err(|_| damaged("tar number is not text"))?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| damaged(format!("bad tar number `{text}`")))
}

fn tar_text(field: &[u8]) -> io::Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| damaged("tar name is not UTF-8"))
}

/// Parses one header block; `None` for the zero block that ends an archive.
fn parse_header(block: &[u8]) -> io::Result<Option<Header>> {
    debug_assert_eq!(block.len(), BLOCK);
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let expected = tar_number(&block[148..156])?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != expected {
        return Err(damaged("tar header checksum mismatch"));
    }
    let name = tar_text(&block[0..100])?;
    let prefix = if &block[257..262] == b"ustar" {
        tar_text(&block[345..500])?
    } else {
        String::new()
    };
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    let size = tar_number(&block[124..136])?;
    let mode = tar_number(&block[100..108])? as u32 & 0o7777;
    let kind = match block[156] {
        b'0' | 0 | b'7' => Kind::File,
        b'5' => Kind::Dir,
        b'2' => Kind::Symlink(tar_text(&block[157..257])?),
        other => {
            return Err(damaged(format!(
                "tar entry `{path}` has type `{}`, which base backups do not use",
                other as char
            )))
        }
    };
    if kind != Kind::File && size != 0 {
        return Err(damaged(format!(
            "tar entry `{path}` has data but is not a file"
        )));
    }
    Ok(Some(Header {
        path,
        kind,
        size,
        mode,
    }))
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Where the reader of a tar stream is.
#[derive(Debug)]
enum At {
    /// Before a header (`got` bytes of it read).
    Header,
    /// In a file's data: `done` of `size` bytes read.
    Data {
        path: String,
        mode: u32,
        size: u64,
        done: u64,
    },
    /// In padding after a file's data.
    Pad(u64),
    /// After the end-of-archive block: what follows is ignored.
    End,
}

/// A chunk of tar bytes, cut by [`Cutter`].
#[derive(Debug)]
pub struct RawChunk {
    pub bytes: Vec<u8>,
    pub resume: Option<Resume>,
}

/// Cuts a tar stream into chunks of about `target` bytes on block boundaries. Pure: bytes in,
/// chunks out.
pub struct Cutter {
    target: usize,
    at: At,
    header: Vec<u8>,
    chunk: Vec<u8>,
    resume: Option<Resume>,
    /// Buffers of chunks already compressed, reused (fresh pages cost more than the copy).
    spare: Vec<Vec<u8>>,
}

impl Cutter {
    pub fn new(target: usize) -> Cutter {
        let target = target.max(BLOCK) / BLOCK * BLOCK;
        Cutter {
            target,
            at: At::Header,
            header: Vec::with_capacity(BLOCK),
            chunk: Vec::with_capacity(target + BLOCK),
            resume: None,
            spare: Vec::new(),
        }
    }

    /// Gives back the buffer of a chunk that is done with.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    fn cut(&mut self, resume: Option<Resume>) -> RawChunk {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.target + BLOCK));
        let bytes = std::mem::replace(&mut self.chunk, next);
        RawChunk {
            bytes,
            resume: std::mem::replace(&mut self.resume, resume),
        }
    }

    /// Takes the next bytes of the stream; chunks completed by them go to `out`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(RawChunk) -> io::Result<()>,
    ) -> io::Result<()> {
        while !data.is_empty() {
            let full = self.chunk.len() >= self.target;
            match &mut self.at {
                At::Header => {
                    if self.header.is_empty() && full {
                        let chunk = self.cut(None);
                        out(chunk)?;
                    }
                    let n = (BLOCK - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.header.len() == BLOCK {
                        self.at = match parse_header(&self.header)? {
                            None => At::End,
                            Some(h) if h.kind == Kind::File && h.size > 0 => At::Data {
                                path: h.path,
                                mode: h.mode,
                                size: h.size,
                                done: 0,
                            },
                            Some(_) => At::Header,
                        };
                        self.header.clear();
                    }
                }
                At::Data {
                    path,
                    mode,
                    size,
                    done,
                } => {
                    if full && *done % BLOCK as u64 == 0 {
                        let resume = Resume {
                            path: path.clone(),
                            offset: *done,
                            size: *size,
                            mode: *mode,
                        };
                        let chunk = self.cut(Some(resume));
                        out(chunk)?;
                        continue;
                    }
                    let room = if full {
                        BLOCK - (*done % BLOCK as u64) as usize
                    } else {
                        self.target - self.chunk.len()
                    };
                    let left = *size - *done;
                    let n = room
                        .min(data.len())
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *done += n as u64;
                    if *done == *size {
                        let pad = padding(*size);
                        self.at = if pad == 0 { At::Header } else { At::Pad(pad) };
                    }
                }
                At::Pad(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = At::Header;
                    }
                }
                At::End => {
                    self.chunk.extend_from_slice(data);
                    data = &[];
                }
            }
        }
        Ok(())
    }

    /// The last chunk, once the stream has ended; an archive cut short is an error.
    pub fn finish(mut self) -> io::Result<Option<RawChunk>> {
        if !matches!(self.at, At::End) {
            return Err(damaged(
                "the tar stream ended before its end-of-archive block",
            ));
        }
        Ok((!self.chunk.is_empty()).then(|| self.cut(None)))
    }
}

/// Tar stream `source` cut into chunks, compressed at `level` on `threads` threads, written in
/// order to `sink` each behind its description. Returns the tar bytes read.
pub fn compress<W: Write>(
    mut source: impl Read,
    level: i32,
    threads: usize,
    sink: &mut W,
    progress: &dyn Progress,
) -> io::Result<u64> {
    let threads = threads.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, RawChunk)>(threads);
    let job_rx = Mutex::new(job_rx);
    // A compressed chunk, its description, and the buffer of its tar bytes (to reuse).
    type Done = (Vec<u8>, ChunkMeta, Vec<u8>);
    let (done_tx, done_rx) = mpsc::channel::<(u64, io::Result<Done>)>();
    let frames: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (job_rx, frames) = (&job_rx, &frames);
            scope.spawn(move || {
                let mut compressor = match zstd::bulk::Compressor::new(level).and_then(|mut c| {
                    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send((u64::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    let job = job_rx.lock().expect("job queue").recv();
                    let Ok((index, chunk)) = job else { return };
                    let mut frame = frames.lock().expect("frame pool").pop().unwrap_or_default();
                    frame.clear();
                    frame.reserve(zstd::zstd_safe::compress_bound(chunk.bytes.len()));
                    let result =
                        compressor
                            .compress_to_buffer(&chunk.bytes, &mut frame)
                            .map(|_| {
                                let meta = ChunkMeta {
                                    stored: frame.len() as u64,
                                    raw: chunk.bytes.len() as u64,
                                    resume: chunk.resume,
                                };
                                (frame, meta, chunk.bytes)
                            });
                    if done_tx.send((index, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        let mut cutter = Cutter::new(CHUNK_TARGET);
        // Chunks compressed out of order wait here for their turn.
        let mut ready: BTreeMap<u64, Done> = BTreeMap::new();
        let mut next_out = 0u64;
        let mut sent = 0u64;
        let in_flight_limit = 2 * threads as u64;
        // Takes one finished chunk (waiting for it when `block`), writes those whose turn it is.
        let collect = |ready: &mut BTreeMap<u64, Done>,
                       next_out: &mut u64,
                       spare: &mut Vec<Vec<u8>>,
                       sink: &mut W,
                       block: bool|
         -> io::Result<()> {
            let received = if block {
                done_rx.recv().ok()
            } else {
                done_rx.try_recv().ok()
            };
            if let Some((index, result)) = received {
                ready.insert(index, result?);
            } else if block {
                return Err(io::Error::other("a compression thread stopped"));
            }
            while let Some((frame, meta, raw)) = ready.remove(next_out) {
                write_chunk(sink, &frame, &meta)?;
                frames.lock().expect("frame pool").push(frame);
                spare.push(raw);
                *next_out += 1;
            }
            Ok(())
        };

        let mut buf = vec![0u8; 1 << 20];
        let mut raw_total = 0u64;
        let mut spare = Vec::new();
        let result = (|| -> io::Result<u64> {
            let mut submit = |chunk: RawChunk,
                              ready: &mut BTreeMap<u64, Done>,
                              next_out: &mut u64,
                              spare: &mut Vec<Vec<u8>>|
             -> io::Result<()> {
                job_tx
                    .send((sent, chunk))
                    .map_err(|_| io::Error::other("the compression threads stopped"))?;
                sent += 1;
                while sent - *next_out > in_flight_limit {
                    collect(ready, next_out, spare, sink, true)?;
                }
                collect(ready, next_out, spare, sink, false)
            };
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                raw_total += n as u64;
                progress.advance(n as u64);
                for old in spare.drain(..) {
                    cutter.recycle(old);
                }
                cutter.feed(&buf[..n], &mut |chunk| {
                    submit(chunk, &mut ready, &mut next_out, &mut spare)
                })?;
            }
            let cutter = std::mem::replace(&mut cutter, Cutter::new(BLOCK));
            if let Some(last) = cutter.finish()? {
                submit(last, &mut ready, &mut next_out, &mut spare)?;
            }
            Ok(raw_total)
        })();
        drop(job_tx);
        let raw = result?;
        while next_out < sent {
            collect(&mut ready, &mut next_out, &mut spare, sink, true)?;
        }
        Ok(raw)
    })
}

fn write_chunk(sink: &mut impl Write, frame: &[u8], meta: &ChunkMeta) -> io::Result<()> {
    let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
    sink.write_all(&MAGIC.to_le_bytes())?;
    sink.write_all(&(text.len() as u32).to_le_bytes())?;
    sink.write_all(&text)?;
    sink.write_all(frame)
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub chunks: u64,
    pub raw_size: u64,
}

/// Unpacks a stored base backup (compressed, already decrypted) into `dest` on `threads`
/// threads. A stream in the chunked layout is unpacked chunk by chunk in parallel; an older
/// stream (one zstd frame) is unpacked in one pass.
pub fn unpack(
    mut stored: impl Read,
    dest: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> io::Result<Unpacked> {
    let mut magic = [0u8; 4];
    let got = read_full(&mut stored, &mut magic)?;
    if got < 4 || u32::from_le_bytes(magic) != MAGIC {
        let chained = io::Cursor::new(magic[..got].to_vec()).chain(stored);
        let mut decoder = zstd::stream::read::Decoder::new(chained)?;
        let mut writer = Extractor::new(dest, None)?;
        let raw = copy_counting(&mut decoder, &mut writer, progress)?;
        writer.finish_archive()?;
        return Ok(Unpacked {
            chunks: 1,
            raw_size: raw,
        });
    }

    let threads = threads.max(1);
    let failed = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, ChunkMeta, Vec<u8>)>(threads);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, io::Result<bool>)>();
    // Frame buffers go back to the reader once unpacked.
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let recycle_tx = recycle_tx.clone();
            let (job_rx, failed) = (&job_rx, &failed);
            scope.spawn(move || {
                let mut raw = Vec::new();
                let mut decompressor = match zstd::bulk::Decompressor::new() {
                    Ok(d) => d,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        let _ = done_tx.send((u64::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    let job = job_rx.lock().expect("job queue").recv();
                    let Ok((index, meta, frame)) = job else {
                        return;
                    };
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let result =
                        unpack_chunk(&mut decompressor, &mut raw, dest, &meta, &frame, progress);
                    let _ = recycle_tx.send(frame);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if done_tx.send((index, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(recycle_tx);

        let mut first = true;
        let mut chunks = 0u64;
        let mut raw_size = 0u64;
        let reading = (|| -> io::Result<()> {
            loop {
                let mut head = [0u8; 8];
                if first {
                    head[..4].copy_from_slice(&magic);
                    if read_full(&mut stored, &mut head[4..])? < 4 {
                        return Err(damaged("the stream ends inside a chunk description"));
                    }
                    first = false;
                } else {
                    match read_full(&mut stored, &mut head)? {
                        0 => return Ok(()),
                        8 => {}
                        _ => return Err(damaged("the stream ends inside a chunk description")),
                    }
                    if u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) != MAGIC {
                        return Err(damaged(format!("chunk {chunks} has no description")));
                    }
                }
                let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
                if len > 1 << 16 {
                    return Err(damaged(format!(
                        "chunk {chunks} has a description of {len} bytes"
                    )));
                }
                let mut text = vec![0u8; len];
                stored.read_exact(&mut text)?;
                let meta: ChunkMeta = serde_json::from_slice(&text)
                    .map_err(|e| damaged(format!("chunk {chunks}: unreadable description: {e}")))?;
                if meta.raw > CHUNK_LIMIT || meta.stored > CHUNK_LIMIT {
                    return Err(damaged(format!("chunk {chunks} claims {} bytes", meta.raw)));
                }
                let mut frame = recycle_rx.try_recv().unwrap_or_default();
                frame.clear();
                (&mut stored).take(meta.stored).read_to_end(&mut frame)?;
                if frame.len() as u64 != meta.stored {
                    return Err(damaged(format!("the stream ends inside chunk {chunks}")));
                }
                raw_size += meta.raw;
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                job_tx
                    .send((chunks, meta, frame))
                    .map_err(|_| io::Error::other("the unpacking threads stopped"))?;
                chunks += 1;
            }
        })();
        drop(job_tx);
        // Every chunk's outcome, whatever happened to the reading.
        let mut ended = BTreeMap::new();
        let mut first_error = None;
        for (index, result) in done_rx {
            match result {
                Ok(end) => {
                    ended.insert(index, end);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        reading?;
        if let Some(e) = first_error {
            return Err(e);
        }
        if chunks == 0 || ended.len() as u64 != chunks {
            return Err(damaged("not every chunk was unpacked"));
        }
        if ended.get(&(chunks - 1)) != Some(&true) {
            return Err(damaged("the last chunk does not end the archive"));
        }
        Ok(Unpacked { chunks, raw_size })
    })
}

/// Decompresses one chunk and writes its files; true when it holds the end of the archive.
fn unpack_chunk(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    raw: &mut Vec<u8>,
    dest: &Path,
    meta: &ChunkMeta,
    frame: &[u8],
    progress: &dyn Progress,
) -> io::Result<bool> {
    raw.clear();
    raw.reserve(meta.raw as usize);
    decompressor
        .decompress_to_buffer(frame, raw)
        .map_err(|e| damaged(format!("cannot decompress a chunk: {e}")))?;
    if raw.len() as u64 != meta.raw {
        return Err(damaged(format!(
            "a chunk holds {} bytes where its description says {}",
            raw.len(),
            meta.raw
        )));
    }
    let mut writer = Extractor::new(dest, meta.resume.as_ref())?;
    // In pieces: a file's inode is locked for each write, and the other threads may be
    // writing other chunks of the same file.
    for piece in raw.chunks(WRITE_PIECE) {
        writer.write_all(piece)?;
    }
    progress.advance(raw.len() as u64);
    writer.finish_chunk()
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn copy_counting(
    from: &mut impl Read,
    to: &mut impl Write,
    progress: &dyn Progress,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
        progress.advance(n as u64);
    }
}

/// The path of a tar entry under `dest`, refused when it would leave it.
fn safe_join(dest: &Path, name: &str) -> io::Result<PathBuf> {
    let relative = Path::new(name);
    let mut out = dest.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(damaged(format!(
                    "tar entry `{name}` would be written outside the target folder"
                )))
            }
        }
    }
    if out == dest {
        return Err(damaged(format!(
            "tar entry `{name}` names the target folder itself"
        )));
    }
    Ok(out)
}

fn open_file(path: &Path, mode: u32) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode | 0o600)
        .open(path)
}

/// Where an [`Extractor`] is in its tar bytes.
enum Writing {
    Header,
    Data { file: File, left: u64, pad: u64 },
    Skip(u64),
    End,
}

/// Writes tar bytes into files under a folder: a whole archive, or one chunk of it, which may
/// start and end inside a file (files are opened without truncation, so chunks of one file
/// can be written in any order).
struct Extractor<'a> {
    dest: &'a Path,
    at: Writing,
    header: Vec<u8>,
}

impl<'a> Extractor<'a> {
    fn new(dest: &'a Path, resume: Option<&Resume>) -> io::Result<Extractor<'a>> {
        let at = match resume {
            None => Writing::Header,
            Some(r) => {
                if r.offset >= r.size || r.offset % BLOCK as u64 != 0 {
                    return Err(damaged(format!(
                        "chunk resumes `{}` at a bad offset",
                        r.path
                    )));
                }
                let mut file = open_file(&safe_join(dest, &r.path)?, r.mode)?;
                file.seek(SeekFrom::Start(r.offset))?;
                Writing::Data {
                    file,
                    left: r.size - r.offset,
                    pad: padding(r.size),
                }
            }
        };
        Ok(Extractor {
            dest,
            at,
            header: Vec::with_capacity(BLOCK),
        })
    }

    fn start_entry(&mut self) -> io::Result<Writing> {
        let Some(header) = parse_header(&self.header)? else {
            return Ok(Writing::End);
        };
        let path = safe_join(self.dest, &header.path)?;
        match header.kind {
            Kind::Dir => {
                std::fs::create_dir_all(&path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(header.mode | 0o700),
                )?;
                Ok(Writing::Header)
            }
            Kind::Symlink(target) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &path)?;
                Ok(Writing::Header)
            }
            Kind::File => {
                let file = open_file(&path, header.mode)?;
                Ok(if header.size == 0 {
                    Writing::Header
                } else {
                    Writing::Data {
                        file,
                        left: header.size,
                        pad: padding(header.size),
                    }
                })
            }
        }
    }

    /// The chunk ended; true when it held the end of the archive.
    fn finish_chunk(self) -> io::Result<bool> {
        if !self.header.is_empty() {
            return Err(damaged("a chunk ends inside a tar header"));
        }
        Ok(matches!(self.at, Writing::End))
    }

    /// The whole archive ended: it must have reached its end-of-archive block.
    fn finish_archive(self) -> io::Result<()> {
        if self.finish_chunk()? {
            Ok(())
        } else {
            Err(damaged("the archive ends before its end-of-archive block"))
        }
    }
}

impl Write for Extractor<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            match &mut self.at {
                Writing::Header => {
                    let n = (BLOCK - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.header.len() == BLOCK {
                        self.at = self.start_entry()?;
                        self.header.clear();
                    }
                }
                Writing::Data { file, left, pad } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    file.write_all(&rest[..n])?;
                    rest = &rest[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = if *pad == 0 {
                            Writing::Header
                        } else {
                            Writing::Skip(*pad)
                        };
                    }
                }
                Writing::Skip(left) => {
                    let n = (*left).min(rest.len() as u64);
                    rest = &rest[n as usize..];
                    *left -= n;
                    if *left == 0 {
                        self.at = Writing::Header;
                    }
                }
                Writing::End => rest = &[],
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress as Silent;

    /// A ustar archive as `pg_basebackup` writes one.
    fn archive(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let mut h = [0u8; BLOCK];
            h[..name.len()].copy_from_slice(name.as_bytes());
            let (mode, kind, size) = match data {
                Some(d) => (0o600, b'0', d.len()),
                None => (0o700, b'5', 0),
            };
            h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[156] = kind;
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            if let Some(d) = data {
                out.extend_from_slice(d);
                out.resize(out.len() + padding(d.len() as u64) as usize, 0);
            }
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn sample() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
        let files = vec![
            ("base/1/1259", pseudo_random(40_000, 1)),
            ("base/1/16384", pseudo_random(3 * 4096 + 17, 2)),
            ("global/pg_control", pseudo_random(8192, 3)),
            ("PG_VERSION", b"15\n".to_vec()),
            ("empty", Vec::new()),
        ];
        let mut entries: Vec<(&str, Option<&[u8]>)> =
            vec![("base", None), ("base/1", None), ("global", None)];
        entries.extend(files.iter().map(|(n, d)| (*n, Some(d.as_slice()))));
        (archive(&entries), files)
    }

    #[test]
    fn cuts_fall_on_blocks_and_rebuild_the_stream() {
        let (tar, _) = sample();
        for target in [512, 1024, 4096, 10_000, 1 << 20] {
            let mut cutter = Cutter::new(target);
            let mut chunks = Vec::new();
            // Fed in odd pieces, as a pipe delivers.
            for piece in tar.chunks(777) {
                cutter
                    .feed(piece, &mut |c| {
                        chunks.push(c);
                        Ok(())
                    })
                    .unwrap();
            }
            chunks.extend(cutter.finish().unwrap());
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            assert_eq!(joined, tar, "target {target}");
            let mut offset = 0;
            for c in &chunks {
                assert_eq!(offset % BLOCK, 0, "target {target}: cut off a block");
                offset += c.bytes.len();
            }
            if target <= 4096 {
                assert!(
                    chunks.iter().any(|c| c.resume.is_some()),
                    "target {target}: no cut inside a file"
                );
            }
        }
    }

    #[test]
    fn a_cut_short_archive_is_refused() {
        let (tar, _) = sample();
        let mut cutter = Cutter::new(4096);
        cutter
            .feed(&tar[..tar.len() - 2 * BLOCK - 1000], &mut |_| Ok(()))
            .unwrap();
        assert!(cutter.finish().is_err());
    }

    fn check_tree(dest: &Path, files: &[(&str, Vec<u8>)]) {
        for (name, data) in files {
            let got = std::fs::read(dest.join(name)).unwrap();
            assert_eq!(&got, data, "{name}");
        }
    }

    #[test]
    fn chunked_stream_unpacks_in_parallel_and_reads_as_plain_zstd() {
        let (tar, files) = sample();
        // Small chunks through the same code as real ones: cut, compress, write.
        let mut cutter = Cutter::new(4096);
        let mut stored = Vec::new();
        let mut chunks = Vec::new();
        cutter
            .feed(&tar, &mut |c| {
                chunks.push(c);
                Ok(())
            })
            .unwrap();
        chunks.extend(cutter.finish().unwrap());
        for c in &chunks {
            let frame = zstd::bulk::compress(&c.bytes, 3).unwrap();
            let meta = ChunkMeta {
                stored: frame.len() as u64,
                raw: c.bytes.len() as u64,
                resume: c.resume.clone(),
            };
            write_chunk(&mut stored, &frame, &meta).unwrap();
        }
        // Any zstd decoder skips the descriptions: the stored stream is the tar.
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), tar);
        for threads in [1, 3] {
            let dest = tempfile::tempdir().unwrap();
            let got = unpack(&stored[..], dest.path(), threads, &Silent).unwrap();
            assert_eq!(got.chunks, chunks.len() as u64);
            assert_eq!(got.raw_size, tar.len() as u64);
            check_tree(dest.path(), &files);
        }
        // A chunk lost from the middle is noticed.
        let mut missing = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i == chunks.len() - 1 {
                continue;
            }
            let frame = zstd::bulk::compress(&c.bytes, 3).unwrap();
            let meta = ChunkMeta {
                stored: frame.len() as u64,
                raw: c.bytes.len() as u64,
                resume: c.resume.clone(),
            };
            write_chunk(&mut missing, &frame, &meta).unwrap();
        }
        let dest = tempfile::tempdir().unwrap();
        assert!(unpack(&missing[..], dest.path(), 2, &Silent).is_err());
    }

    #[test]
    fn compress_then_unpack_round_trips() {
        let (tar, files) = sample();
        let mut stored = Vec::new();
        let raw = compress(&tar[..], 3, 2, &mut stored, &Silent).unwrap();
        assert_eq!(raw, tar.len() as u64);
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), tar);
        let dest = tempfile::tempdir().unwrap();
        unpack(&stored[..], dest.path(), 2, &Silent).unwrap();
        check_tree(dest.path(), &files);
        // An older backup: the tar as one zstd frame.
        let single = zstd::bulk::compress(&tar, 3).unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert_eq!(
            unpack(&single[..], dest.path(), 2, &Silent).unwrap().chunks,
            1
        );
        check_tree(dest.path(), &files);
    }

    #[test]
    fn paths_leaving_the_folder_are_refused() {
        let tar = archive(&[("../escape", Some(b"x"))]);
        let dest = tempfile::tempdir().unwrap();
        let single = zstd::bulk::compress(&tar, 3).unwrap();
        let err = unpack(&single[..], dest.path(), 1, &Silent).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(!dest.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let (mut tar, _) = sample();
        tar[10] ^= 1;
        let mut cutter = Cutter::new(4096);
        let err = cutter.feed(&tar, &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
