//! Compressing chunks in parallel, written out in order, each after its description.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Mutex};

use super::cut::{Cutter, RawChunk};
use super::format::{write_chunk, ChunkMeta, BLOCK, CHUNK_TARGET};
use crate::progress::Task;

/// The chunked layout as the pipeline's framing of a base backup's tar stream.
pub struct TarChunks;

impl crate::pipeline::Framing for TarChunks {
    fn compress(
        &self,
        source: &mut dyn Read,
        level: i32,
        threads: usize,
        out: &mut dyn Write,
        task: &Task,
    ) -> io::Result<u64> {
        compress(source, level, threads, out, task)
    }
}

/// Tar stream `source` cut into chunks, compressed at `level` on `threads` threads, written in
/// order to `sink` each behind its description. Returns the tar bytes read.
pub fn compress<W: Write + ?Sized>(
    mut source: impl Read,
    level: i32,
    threads: usize,
    sink: &mut W,
    task: &Task,
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
                task.advance(n as u64);
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
