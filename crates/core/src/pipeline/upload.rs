//! Uploading: a source sealed on a blocking thread, its parts sent as they fill; aborted,
//! leaving nothing, on any failure.

use std::io::Read;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::io::ChunkSender;
use super::seal::{seal_stream, SealOptions};
use crate::error::{Error, Result};
use crate::progress::Task;
use crate::storage::Storage;

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
    task: Task,
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
        seal_stream(source, &seal, ChunkSender::new(tx, part_size), &task)
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
        .map_err(|e| Error::thread("pipeline", e))
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
