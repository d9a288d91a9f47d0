//! The streaming pipeline between a process and the repository.
//!
//! Upload: source → zstd (multi-threaded) → age (when configured) → SHA-256 of the stored
//! bytes → equal-size parts → multipart upload. Download: the reverse, with the hash and size
//! checked against the manifest before the consumer is given the last bytes of the stream, so a
//! consumer that needs the whole stream (a full `pg_restore`) can never finish on damaged data.
//!
//! Memory is bounded by the part size times the parts in flight, whatever the data size. The
//! CPU-bound stages run on a blocking thread; the network side is async, and the two meet in a
//! bounded channel. A failure on either side stops both and aborts the upload, so nothing
//! partial is left at the final path.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::crypto::{self, Identities};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::storage::Storage;

const READ_BUFFER: usize = 1 << 20;
/// Decoded bytes withheld from the consumer until the stored bytes are verified.
const HOLD_BACK: usize = 256 * 1024;

/// How stored bytes are compressed and encrypted.
#[derive(Debug, Clone)]
pub struct SealOptions {
    pub level: i32,
    /// zstd workers; 0 means one per core.
    pub threads: u32,
    /// age recipients; empty means no encryption.
    pub recipients: Vec<String>,
    /// The source is a tar stream, stored in the chunked layout of [`crate::tarchunk`].
    pub tar_chunks: bool,
}

/// Where and how an upload is stored.
#[derive(Debug, Clone)]
pub struct UploadTarget<'a> {
    pub path: &'a str,
    pub storage_class: Option<&'a str>,
    pub part_size: usize,
    pub concurrency: usize,
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    pub raw_size: u64,
    pub stored_size: u64,
    pub sha256: String,
}

/// Turns an `io::Error` that wraps an engine error back into it.
pub fn from_io(e: io::Error, context: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = e.into_inner().expect("checked above");
        *inner.downcast::<Error>().expect("checked above")
    } else {
        Error::io(context, e)
    }
}

/// Streams `source` through compression and encryption into the repository at `target`.
/// On any failure (the source, the storage, cancellation) `stop_source` is called (the source
/// may be blocked in a read), the upload is aborted and the error returned; the object then
/// does not exist.
pub async fn upload(
    storage: &Storage,
    target: UploadTarget<'_>,
    source: impl Read + Send + 'static,
    stop_source: impl FnOnce(),
    seal: SealOptions,
    progress: Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<StreamStats> {
    let options = crate::storage::UploadOptions {
        storage_class: target.storage_class.map(str::to_string),
        ..crate::storage::UploadOptions::parts(target.part_size, target.concurrency)
    };
    let mut writer = storage.upload(target.path, &options).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let part_size = target.part_size;
    let sealing = tokio::task::spawn_blocking(move || {
        seal_stream(
            source,
            &seal,
            ChunkSender::new(tx, part_size),
            progress.as_ref(),
        )
    });

    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(chunk) => {
                    if let Err(e) = writer.write(chunk).await {
                        failure = Some(e);
                        break;
                    }
                }
                None => break,
            },
            () = cancel.cancelled() => {
                failure = Some(Error::Interrupted(format!("upload of `{}` stopped", target.path)));
                break;
            }
        }
    }
    // Stops the sealing thread if it is still sending, or still waiting for its source.
    drop(rx);
    if failure.is_some() {
        stop_source();
    }
    let sealed = sealing
        .await
        .map_err(|e| Error::invalid(format!("pipeline thread failed: {e}")))
        .and_then(|r| r);
    let outcome = match (failure, sealed) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e),
        (None, Ok(stats)) => match writer.close().await {
            Ok(()) => return Ok(stats),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = writer.abort().await {
        tracing::warn!(path = target.path, error = %e, "could not abort an unfinished upload");
    }
    outcome
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
pub fn open_bytes(stored: &[u8], identities: Option<&Identities>, what: &str) -> Result<Vec<u8>> {
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

/// zstd workers: as configured, or one per core but one (left to the process being read,
/// pg_dump, which with the server's backend is the floor of a backup's time). With one worker
/// compression runs inline, which on a two-core machine measured faster than two workers.
fn zstd_threads(threads: u32) -> u32 {
    if threads == 0 {
        std::thread::available_parallelism()
            .map_or(1, |n| (n.get() as u32).saturating_sub(1).max(1))
    } else {
        threads
    }
}

/// Compresses and encrypts `source` into `sink`; runs on a blocking thread.
fn seal_stream(
    source: impl Read,
    seal: &SealOptions,
    sink: ChunkSender,
    progress: &dyn Progress,
) -> Result<StreamStats> {
    let hashing = HashingWriter::new(sink);
    let sealed = if seal.recipients.is_empty() {
        Sealed::Plain(hashing)
    } else {
        Sealed::Age(crypto::encrypt_to(&seal.recipients, hashing)?)
    };
    let (sealed, raw_size) = if seal.tar_chunks {
        let mut sealed = sealed;
        let threads = zstd_threads(seal.threads) as usize;
        let raw = crate::tarchunk::compress(source, seal.level, threads, &mut sealed, progress)
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => sink_err(e),
                io::ErrorKind::InvalidData => from_io(e, "reading the tar stream"),
                _ => from_io(e, "compressing"),
            })?;
        (sealed, raw)
    } else {
        compress_stream(source, seal, sealed, progress)?
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
    progress: &dyn Progress,
) -> Result<(Sealed<W>, u64)> {
    let zstd_err = |e: io::Error| from_io(e, "compressing");
    let mut encoder = zstd::stream::write::Encoder::new(sealed, seal.level).map_err(zstd_err)?;
    encoder.include_checksum(true).map_err(zstd_err)?;
    let workers = zstd_threads(seal.threads);
    if workers > 1 {
        encoder.multithread(workers).map_err(zstd_err)?;
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
        progress.advance(n as u64);
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

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Cuts a byte stream into parts of exactly `part_size` bytes (the last may be shorter) and
/// hands them to the async uploader.
struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    part_size: usize,
    buf: BytesMut,
}

impl ChunkSender {
    fn new(tx: mpsc::Sender<Bytes>, part_size: usize) -> Self {
        ChunkSender {
            tx,
            part_size,
            buf: BytesMut::with_capacity(part_size),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let part = self.buf.split().freeze();
        self.buf.reserve(self.part_size);
        self.tx
            .blocking_send(part)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a stored object must be, from its manifest.
#[derive(Debug, Clone)]
pub struct Expected {
    pub backup_id: String,
    pub sha256: String,
    pub stored_size: u64,
    pub encrypted: bool,
}

/// How a download ended.
pub enum Delivered<W> {
    /// The whole stream was verified, and written (up to where the consumer stopped reading
    /// its verified end).
    Complete(W),
    /// The consumer closed its input before the stream was verified (it needed only a part,
    /// or it failed).
    ConsumerClosed(W),
}

/// Streams a stored object, verifies it, and writes its decoded bytes to `sink`.
pub async fn download<W: Write + Send + 'static>(
    storage: &Storage,
    path: &str,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
    sink: W,
    cancel: &CancellationToken,
) -> Result<Delivered<W>> {
    let expected_owned = expected.clone();
    fetch(
        storage,
        path,
        expected,
        identities.is_some(),
        cancel,
        move |reader| open_stream(reader, &expected_owned, identities, sink),
    )
    .await
}

/// Streams a stored object to `consume`, decrypted but still compressed (for readers of
/// their own layout, such as [`crate::tarchunk::unpack`]), and verifies its size and hash
/// once `consume` is done. What `consume` wrote is only known good when this returns `Ok`.
pub async fn download_sealed<T: Send + 'static>(
    storage: &Storage,
    path: &str,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
    consume: impl FnOnce(&mut dyn Read) -> io::Result<T> + Send + 'static,
    cancel: &CancellationToken,
) -> Result<T> {
    let expected_owned = expected.clone();
    fetch(
        storage,
        path,
        expected,
        identities.is_some(),
        cancel,
        move |reader| {
            let expected = &expected_owned;
            let hashing = SharedHashingReader::new(reader);
            let mut decoded = decrypted(&hashing, expected, identities)?;
            let value = consume(&mut decoded).map_err(|e| match from_io(e, "reading") {
                Error::Io { source, .. }
                    if matches!(
                        source.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    Error::Integrity {
                        id: expected.backup_id.clone(),
                        detail: format!("cannot decode: {source}"),
                    }
                }
                other => other,
            })?;
            drop(decoded);
            verify_stored(hashing, expected)?;
            Ok(value)
        },
    )
    .await
}

/// Feeds a stored object's bytes to `open` on a blocking thread, until it ends or `cancel`.
async fn fetch<T: Send + 'static>(
    storage: &Storage,
    path: &str,
    expected: &Expected,
    have_identities: bool,
    cancel: &CancellationToken,
    open: impl FnOnce(ChannelReader) -> Result<T> + Send + 'static,
) -> Result<T> {
    if expected.encrypted && !have_identities {
        return Err(Error::Crypto(format!(
            "backup `{}` is encrypted: set `encryption.identity_file` or pass `--identity FILE`",
            expected.backup_id
        )));
    }
    let mut stream = storage.download(path).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(4);
    let opening = tokio::task::spawn_blocking(move || open(ChannelReader::new(rx)));
    let mut interrupted = false;
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(item) => {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
                None => break,
            },
            () = cancel.cancelled() => {
                interrupted = true;
                break;
            }
        }
    }
    drop(tx);
    let result = opening
        .await
        .map_err(|e| Error::invalid(format!("pipeline thread failed: {e}")))?;
    if interrupted {
        return Err(Error::Interrupted(format!("download of `{path}` stopped")));
    }
    result
}

/// The stored bytes read through `hashing`, decrypted when the backup is encrypted.
fn decrypted<'a>(
    hashing: &SharedHashingReader,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
) -> Result<Box<dyn Read + 'a>> {
    Ok(if expected.encrypted {
        let ids = identities.expect("checked by the caller");
        Box::new(crypto::decrypt_from(
            hashing.clone(),
            &ids,
            &expected.backup_id,
        )?)
    } else {
        Box::new(hashing.clone())
    })
}

/// Reads what is left of the stored bytes and checks their size and hash.
fn verify_stored(hashing: SharedHashingReader, expected: &Expected) -> Result<()> {
    let damaged = |detail: String| Error::Integrity {
        id: expected.backup_id.clone(),
        detail,
    };
    let (size, sha256) = hashing
        .drain_and_finish()
        .map_err(|e| match from_io(e, "reading") {
            Error::Io { source, .. } => damaged(format!("cannot read: {source}")),
            other => other,
        })?;
    if size != expected.stored_size {
        return Err(damaged(format!(
            "stored size is {size} bytes, the manifest says {}",
            expected.stored_size
        )));
    }
    if sha256 != expected.sha256 {
        return Err(damaged(format!(
            "sha256 of the stored data is {sha256}, the manifest says {}",
            expected.sha256
        )));
    }
    Ok(())
}

/// Verifies and decodes on a blocking thread.
fn open_stream<W: Write>(
    reader: ChannelReader,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
    sink: W,
) -> Result<Delivered<W>> {
    let hashing = SharedHashingReader::new(reader);
    let mut hold = HoldBack::new(sink);
    let decoded = decrypted(&hashing, expected, identities)?;
    let damaged = |detail: String| Error::Integrity {
        id: expected.backup_id.clone(),
        detail,
    };
    let mut decoder = zstd::stream::read::Decoder::new(decoded)
        .map_err(|e| damaged(format!("cannot start decompression: {e}")))?;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A storage error arrives wrapped; anything else is damaged data.
                return Err(match from_io(e, "reading") {
                    Error::Io { source, .. } => damaged(format!("cannot decode: {source}")),
                    other => other,
                });
            }
        };
        match hold.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Ok(Delivered::ConsumerClosed(hold.into_inner_unreleased()));
            }
            Err(e) => return Err(Error::io("writing the restored stream", e)),
        }
    }
    drop(decoder);
    verify_stored(hashing, expected)?;
    match hold.release() {
        Ok(sink) => Ok(Delivered::Complete(sink)),
        // Every stored byte is verified: a consumer that stopped reading the held-back end
        // had all it wanted (pg_restore ends at its last data block, not at end of input).
        Err((sink, e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Delivered::Complete(sink)),
        Err((_, e)) => Err(Error::io("writing the restored stream", e)),
    }
}

/// The receiving end of the download channel as `Read`.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Hashes what is read through it; shared so that the rest of the stream can be drained and
/// hashed after the decoder above it has stopped reading.
#[derive(Clone)]
struct SharedHashingReader(Arc<Mutex<(ChannelReader, Sha256, u64)>>);

impl SharedHashingReader {
    fn new(inner: ChannelReader) -> Self {
        SharedHashingReader(Arc::new(Mutex::new((inner, Sha256::new(), 0))))
    }

    fn drain_and_finish(self) -> io::Result<(u64, String)> {
        let mut me = self.clone();
        io::copy(&mut me, &mut io::sink())?;
        let guard = self.0.lock().expect("hash state poisoned");
        Ok((guard.2, hex::encode(guard.1.clone().finalize())))
    }
}

impl Read for SharedHashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut guard = self.0.lock().expect("hash state poisoned");
        let (reader, hasher, size) = &mut *guard;
        let n = reader.read(buf)?;
        hasher.update(&buf[..n]);
        *size += n as u64;
        Ok(n)
    }
}

/// Passes bytes on, always keeping the last `HOLD_BACK` of them until released.
struct HoldBack<W: Write> {
    inner: W,
    tail: Vec<u8>,
}

impl<W: Write> HoldBack<W> {
    fn new(inner: W) -> Self {
        HoldBack {
            inner,
            tail: Vec::with_capacity(2 * HOLD_BACK),
        }
    }

    fn release(mut self) -> std::result::Result<W, (W, io::Error)> {
        let tail = std::mem::take(&mut self.tail);
        match self
            .inner
            .write_all(&tail)
            .and_then(|()| self.inner.flush())
        {
            Ok(()) => Ok(self.inner),
            Err(e) => Err((self.inner, e)),
        }
    }

    fn into_inner_unreleased(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HoldBack<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail.extend_from_slice(buf);
        if self.tail.len() >= 2 * HOLD_BACK {
            let cut = self.tail.len() - HOLD_BACK;
            self.inner.write_all(&self.tail[..cut])?;
            self.tail.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sender_cuts_equal_parts() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut sender = ChunkSender::new(tx, 10);
        for piece in [&b"abc"[..], &[7u8; 15], &[1u8; 9]] {
            sender.write_all(piece).unwrap();
        }
        sender.finish().unwrap();
        let mut sizes = Vec::new();
        while let Ok(part) = rx.try_recv() {
            sizes.push(part.len());
        }
        assert_eq!(sizes, vec![10, 10, 7]);
    }

    #[test]
    fn hold_back_keeps_the_tail_until_released() {
        let mut hold = HoldBack::new(Vec::new());
        let data: Vec<u8> = (0..3 * HOLD_BACK).map(|i| i as u8).collect();
        hold.write_all(&data).unwrap();
        assert!(hold.inner.len() <= data.len() - HOLD_BACK);
        assert_eq!(hold.release().ok().unwrap(), data);
    }

    #[test]
    fn sealed_bytes_round_trip() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let plain = SealOptions {
            level: 3,
            threads: 1,
            recipients: vec![],
            tar_chunks: false,
        };
        let stored = seal_bytes(&raw, &plain).unwrap();
        assert!(stored.len() < raw.len());
        assert_eq!(open_bytes(&stored, None, "x").unwrap(), raw);
        let mut bad = stored.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(open_bytes(&bad, None, "x").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_downloads_as_it_was_and_a_damaged_byte_is_caught() {
        let storage = Storage::memory("p", &crate::storage::Env::default());
        let raw: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let seal = SealOptions {
            level: 3,
            threads: 1,
            recipients: vec![],
            tar_chunks: false,
        };
        let target = UploadTarget {
            path: "data/db/x.dump.zst",
            storage_class: None,
            part_size: 1 << 20,
            concurrency: 2,
        };
        let cancel = CancellationToken::new();
        let stats = upload(
            &storage,
            target,
            std::io::Cursor::new(raw.clone()),
            || {},
            seal,
            Arc::new(crate::progress::NoProgress),
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!(stats.raw_size, raw.len() as u64);
        let expected = Expected {
            backup_id: "x".into(),
            sha256: stats.sha256.clone(),
            stored_size: stats.stored_size,
            encrypted: false,
        };
        let got = download(
            &storage,
            "data/db/x.dump.zst",
            &expected,
            None,
            Vec::new(),
            &cancel,
        )
        .await
        .unwrap();
        match got {
            Delivered::Complete(bytes) => assert!(bytes == raw),
            Delivered::ConsumerClosed(_) => panic!("the consumer closed"),
        }
        let mut stored = storage
            .read_opt("data/db/x.dump.zst")
            .await
            .unwrap()
            .unwrap();
        let middle = stored.len() / 2;
        stored[middle] ^= 1;
        storage.write("data/db/x.dump.zst", stored).await.unwrap();
        let err = download(
            &storage,
            "data/db/x.dump.zst",
            &expected,
            None,
            Vec::new(),
            &cancel,
        )
        .await
        .err()
        .expect("a damaged object is refused");
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
    }

    #[test]
    fn io_error_round_trips_engine_error() {
        let wrapped = io::Error::other(Error::invalid("x"));
        assert!(matches!(from_io(wrapped, "c"), Error::Invalid(_)));
        assert!(matches!(
            from_io(io::Error::other("plain"), "c"),
            Error::Io { .. }
        ));
    }
}
