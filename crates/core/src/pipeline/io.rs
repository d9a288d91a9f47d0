//! The adapters between the pipeline's stages: a writer that hashes, one that cuts parts of
//! equal size for the uploader, a reader over the download channel, a shared hashing reader
//! that can be drained after its consumer stops, and a writer that holds back a stream's end.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::Result;

/// The SHA-256 of `data`, in hex, as manifests and descriptions record stored bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Decoded bytes withheld from the consumer until the stored bytes are verified.
pub(super) const HOLD_BACK: usize = 256 * 1024;

/// Counts and hashes what passes through.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, u64, String) {
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
pub(super) struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    part_size: usize,
    buf: BytesMut,
}

impl ChunkSender {
    pub(super) fn new(tx: mpsc::Sender<Bytes>, part_size: usize) -> Self {
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

    pub(super) fn finish(mut self) -> io::Result<()> {
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
pub(super) struct SharedHashingReader(Arc<Mutex<(ChannelReader, Sha256, u64)>>);

impl SharedHashingReader {
    pub(super) fn new(inner: ChannelReader) -> Self {
        SharedHashingReader(Arc::new(Mutex::new((inner, Sha256::new(), 0))))
    }

    pub(super) fn drain_and_finish(self) -> io::Result<(u64, String)> {
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
pub(crate) struct HoldBack<W: Write> {
    inner: W,
    tail: Vec<u8>,
}

impl<W: Write> HoldBack<W> {
    pub(crate) fn new(inner: W) -> Self {
        HoldBack {
            inner,
            tail: Vec::with_capacity(2 * HOLD_BACK),
        }
    }

    pub(crate) fn release(mut self) -> std::result::Result<W, (W, io::Error)> {
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

    pub(crate) fn into_inner_unreleased(self) -> W {
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
}
