//! Downloading: a stored object streamed to a blocking thread that decrypts, decompresses and
//! hands on its bytes, holding back the last of them until the size and hash of the stored
//! bytes are checked against the manifest.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::io::{ChannelReader, HoldBack, SharedHashingReader};
use super::{from_io, READ_BUFFER};
use crate::crypto::{self, Identities};
use crate::error::{Error, Result};
use crate::storage::Storage;

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
    let result = opening.await.map_err(|e| Error::thread("pipeline", e))?;
    // A stop request can also reach the reader first, as an error of the stream (the storage
    // layer ends a request at once): what the reader then says (a header it could not read,
    // a stream cut short) is about the stop, never about the backup.
    if interrupted || (result.is_err() && cancel.is_cancelled()) {
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
