//! Unpacking: chunks read in order and handed to workers, each decompressing its chunk and
//! writing its files at their offsets.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use super::extract::Extractor;
use super::format::{damaged, ChunkMeta, CHUNK_LIMIT, MAGIC, WRITE_PIECE};
use crate::progress::Task;

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
    task: &Task,
) -> io::Result<Unpacked> {
    let mut magic = [0u8; 4];
    let got = read_full(&mut stored, &mut magic)?;
    if got < 4 || u32::from_le_bytes(magic) != MAGIC {
        let chained = io::Cursor::new(magic[..got].to_vec()).chain(stored);
        let mut decoder = zstd::stream::read::Decoder::new(chained)?;
        let mut writer = Extractor::new(dest, None)?;
        let raw = copy_counting(&mut decoder, &mut writer, task)?;
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
                        unpack_chunk(&mut decompressor, &mut raw, dest, &meta, &frame, task);
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
pub(super) fn unpack_chunk(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    raw: &mut Vec<u8>,
    dest: &Path,
    meta: &ChunkMeta,
    frame: &[u8],
    task: &Task,
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
    task.advance(raw.len() as u64);
    writer.finish_chunk()
}

pub(super) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

pub(super) fn copy_counting(
    from: &mut impl Read,
    to: &mut impl Write,
    task: &Task,
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
        task.advance(n as u64);
    }
}
