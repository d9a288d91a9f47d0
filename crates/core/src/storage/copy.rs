//! Copies that stream through this machine, between any two backends (another account, a
//! local folder, an object too large for one server-side copy).

use futures::TryStreamExt;

use super::backend::{Backend, CopyOptions, UploadOptions};
use crate::error::{Error, Result, StorageFailure};

/// A copy through this machine: the source read (with its headers) streams into an upload
/// here, in parts of `options.part_size`, with its content type and user metadata.
pub(super) async fn stream_copy(
    dest: &dyn Backend,
    source: &dyn Backend,
    from: &str,
    to: &str,
    options: &CopyOptions,
) -> Result<Option<u64>> {
    let Some((meta, mut body)) = source.read(from).await? else {
        return Ok(None);
    };
    let mut upload = dest
        .upload(
            to,
            &UploadOptions {
                part_size: options.part_size,
                concurrency: 1,
                storage_class: options.storage_class.clone(),
                content_type: meta.content_type.clone(),
                user_metadata: meta.user_metadata.clone(),
            },
        )
        .await?;
    let part_size = options.part_size.max(1);
    let copied = async {
        let mut copied = 0u64;
        // Parts of exactly `part_size` bytes but the last, whatever pieces the source gives.
        let mut part = bytes::BytesMut::new();
        while let Some(chunk) = body.try_next().await? {
            copied += chunk.len() as u64;
            part.extend_from_slice(&chunk);
            while part.len() >= part_size {
                upload.write(part.split_to(part_size).freeze()).await?;
            }
        }
        if !part.is_empty() {
            upload.write(part.freeze()).await?;
        }
        if copied != meta.size {
            return Err(Error::Storage {
                op: "reading",
                path: format!("{}/{from}", source.info().location.trim_end_matches('/')),
                kind: StorageFailure::Unavailable,
                message: format!("got {copied} bytes of {}", meta.size),
            });
        }
        upload.close().await?;
        Ok(copied)
    }
    .await;
    match copied {
        Ok(copied) => Ok(Some(copied)),
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}
