//! Sealing: compression (zstd, in the framing the caller chose) then encryption (age, when
//! recipients are configured), on a blocking thread, hashed as it is written out.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::io::{ChunkSender, HashingWriter};
use super::{from_io, StreamStats, READ_BUFFER};
use crate::crypto;
use crate::error::{Error, Result};
use crate::progress::Task;

/// How a source becomes zstd frames, when not as one frame of the whole stream: a layout
/// that its reader understands (see [`crate::tarchunk::TarChunks`]).
pub trait Framing: Send + Sync {
    /// Compresses all of `source` into `out` at `level` with `threads` workers; returns the
    /// bytes read. A source that breaks the layout's rules is `InvalidData`.
    fn compress(
        &self,
        source: &mut dyn Read,
        level: i32,
        threads: usize,
        out: &mut dyn Write,
        task: &Task,
    ) -> io::Result<u64>;
}

/// How stored bytes are compressed and encrypted.
#[derive(Clone)]
pub struct SealOptions {
    pub level: i32,
    /// zstd workers; 0 means one per core.
    pub threads: u32,
    /// age recipients; empty means no encryption.
    pub recipients: Vec<String>,
    /// The framing of the compressed stream; `None`: one frame.
    pub framing: Option<Arc<dyn Framing>>,
}

impl fmt::Debug for SealOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealOptions")
            .field("level", &self.level)
            .field("threads", &self.threads)
            .field("recipients", &self.recipients)
            .field("framed", &self.framing.is_some())
            .finish()
    }
}

/// Compresses (and encrypts) a whole small object in memory: WAL segments, history files.
pub fn seal_bytes(raw: &[u8], seal: &SealOptions) -> Result<Vec<u8>> {
    let out = Vec::with_capacity(raw.len() / 2 + 1024);
    let sealed = if seal.recipients.is_empty() {
        Sealed::Plain(out)
    } else {
        Sealed::Age(crypto::encrypt_to(&seal.recipients, out)?)
    };
    let err = |e: io::Error| Error::io("compressing", e);
    let mut encoder = zstd::stream::write::Encoder::new(sealed, seal.level).map_err(err)?;
    encoder.include_checksum(true).map_err(err)?;
    encoder.write_all(raw).map_err(err)?;
    encoder.finish().map_err(err)?.finish().map_err(err)
}

/// Reverses [`seal_bytes`]; `what` names the object in errors.
#[cfg(test)]
pub fn open_bytes(
    stored: &[u8],
    identities: Option<&crypto::Identities>,
    what: &str,
) -> Result<Vec<u8>> {
    let damaged = |e: io::Error| Error::Integrity {
        id: what.to_string(),
        detail: format!("cannot decode: {e}"),
    };
    let mut raw = Vec::new();
    match identities {
        Some(ids) => {
            let reader = crypto::decrypt_from(stored, ids, what)?;
            zstd::stream::read::Decoder::new(reader)
                .and_then(|mut d| d.read_to_end(&mut raw))
                .map_err(damaged)?;
        }
        None => {
            zstd::stream::read::Decoder::new(stored)
                .and_then(|mut d| d.read_to_end(&mut raw))
                .map_err(damaged)?;
        }
    }
    Ok(raw)
}

/// Compressed, then possibly encrypted, bytes: the writer stages below zstd.
enum Sealed<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> Sealed<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

/// zstd workers for chunked framings (base backups, whose 8 MiB chunks each worker holds):
/// as configured, or one per core but one (left to the process being read).
fn zstd_threads(threads: u32) -> u32 {
    if threads == 0 {
        std::thread::available_parallelism()
            .map_or(1, |n| (n.get() as u32).saturating_sub(1).max(1))
    } else {
        threads
    }
}

/// The input of each zstd worker compressing one stream. zstd's default at level 3 (8 MiB)
/// made a backup's peak memory grow with the workers (94 MiB with 2, 168 MiB with 8, against
/// 36 MiB inline); 2 MiB jobs keep it small (`zstd -T8 -B2M`: 43 MiB against 132 MiB) at the
/// same speed and ratio on the realistic benchmark's dump.
const STREAM_JOB_SIZE: u32 = 2 << 20;

/// zstd workers for one stream (a dump): as configured, or one per core, at most 8. On text
/// that compresses like user content, compression is the slowest stage of a backup: inline on
/// two cores it took 1.4 times `pg_dump | zstd -T0`, with two workers the same time.
fn stream_workers(threads: u32) -> u32 {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| (n.get() as u32).min(8))
    } else {
        threads
    }
}

/// Compresses and encrypts `source` into `sink`; runs on a blocking thread.
pub(super) fn seal_stream(
    source: impl Read,
    seal: &SealOptions,
    sink: ChunkSender,
    task: &Task,
) -> Result<StreamStats> {
    let hashing = HashingWriter::new(sink);
    let sealed = if seal.recipients.is_empty() {
        Sealed::Plain(hashing)
    } else {
        Sealed::Age(crypto::encrypt_to(&seal.recipients, hashing)?)
    };
    let (sealed, raw_size) = if let Some(framing) = &seal.framing {
        let mut sealed = sealed;
        let mut source = source;
        let threads = zstd_threads(seal.threads) as usize;
        let raw = framing
            .compress(&mut source, seal.level, threads, &mut sealed, task)
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => sink_err(e),
                io::ErrorKind::InvalidData => from_io(e, "reading the source"),
                _ => from_io(e, "compressing"),
            })?;
        (sealed, raw)
    } else {
        compress_stream(source, seal, sealed, task)?
    };
    let hashing = sealed.finish().map_err(sink_err)?;
    let (sink, stored_size, sha256) = hashing.finish();
    sink.finish().map_err(sink_err)?;
    Ok(StreamStats {
        raw_size,
        stored_size,
        sha256,
    })
}

/// One zstd frame of the whole source, written into `sealed`; returns it and the bytes read.
fn compress_stream<W: Write>(
    mut source: impl Read,
    seal: &SealOptions,
    sealed: Sealed<W>,
    task: &Task,
) -> Result<(Sealed<W>, u64)> {
    let zstd_err = |e: io::Error| from_io(e, "compressing");
    let mut encoder = zstd::stream::write::Encoder::new(sealed, seal.level).map_err(zstd_err)?;
    encoder.include_checksum(true).map_err(zstd_err)?;
    let workers = stream_workers(seal.threads);
    if workers > 1 {
        encoder.multithread(workers).map_err(zstd_err)?;
        encoder
            .set_parameter(zstd::stream::raw::CParameter::JobSize(STREAM_JOB_SIZE))
            .map_err(zstd_err)?;
    }
    let mut buf = vec![0u8; READ_BUFFER];
    let mut raw_size = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(from_io(e, "reading the source")),
        };
        encoder.write_all(&buf[..n]).map_err(sink_err)?;
        raw_size += n as u64;
        task.advance(n as u64);
    }
    let sealed = encoder.finish().map_err(sink_err)?;
    Ok((sealed, raw_size))
}

fn sink_err(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::Interrupted("the upload stopped".into())
    } else {
        from_io(e, "compressing")
    }
}
