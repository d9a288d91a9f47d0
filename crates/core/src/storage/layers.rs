//! Behaviour added to any backend by wrapping it.
//!
//! - [`Guard`]: every operation ends. It gets a deadline, retries included (an endpoint that
//!   hangs fails the operation, and a command, within `request_secs`), and a stop request
//!   (SIGTERM) ends whatever is in flight at once. Streams (a download's bytes, a listing)
//!   get the deadline per item, so a long download is not cut short while it moves. Aborting
//!   an upload is never cancelled: it is how nothing is left behind.
//! - [`DryRun`]: writes are shown, not made; reads go through (`prune --dry-run`,
//!   `backup objects --dry-run`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::backend::{
    Backend, BackendInfo, ByteStream, CopyOptions, Deletion, ListStream, ObjectMeta, S3Call,
    S3Reply, Upload, UploadOptions, WriteOptions, Written,
};
use crate::error::{Error, Result, StorageFailure};
use jiff::Timestamp;

/// Ends every operation of `inner` within `deadline`, or at once on `cancel`.
#[derive(Debug)]
pub struct Guard {
    inner: Arc<dyn Backend>,
    deadline: Option<Duration>,
    cancel: Option<CancellationToken>,
}

impl Guard {
    pub fn new(
        inner: Arc<dyn Backend>,
        deadline: Option<Duration>,
        cancel: Option<CancellationToken>,
    ) -> Guard {
        Guard {
            inner,
            deadline,
            cancel,
        }
    }

    fn display(&self, key: &str) -> String {
        format!("{}/{key}", self.inner.info().location.trim_end_matches('/'))
    }

    async fn bound<T>(
        &self,
        op: &'static str,
        key: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        bound(
            self.deadline,
            self.cancel.as_ref(),
            op,
            || self.display(key),
            work,
        )
        .await
    }
}

/// Runs `work` within `deadline`, stopped by `cancel`.
async fn bound<T>(
    deadline: Option<Duration>,
    cancel: Option<&CancellationToken>,
    op: &'static str,
    display: impl FnOnce() -> String,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let timed = async {
        match deadline {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => Err(Error::Storage {
                    op,
                    path: display(),
                    kind: StorageFailure::Timeout,
                    message: format!(
                        "no answer within {} s, retries included (`request_secs` of `[repository.timeouts]`)",
                        limit.as_secs()
                    ),
                }),
            },
            None => work.await,
        }
    };
    match cancel {
        // Once a stop is asked for, nothing new starts (clean-up goes through a storage
        // without cancellation).
        Some(cancel) => tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::Interrupted(format!("{op} stopped"))),
            result = timed => result,
        },
        None => timed.await,
    }
}

/// Puts each item of `stream` under the deadline and the stop request.
fn bound_stream<T: Send + 'static>(
    stream: futures::stream::BoxStream<'static, Result<T>>,
    deadline: Option<Duration>,
    cancel: Option<CancellationToken>,
    op: &'static str,
    display: String,
) -> futures::stream::BoxStream<'static, Result<T>> {
    futures::stream::unfold(Some(stream), move |state| {
        let cancel = cancel.clone();
        let display = display.clone();
        async move {
            let mut stream = state?;
            let next = bound(deadline, cancel.as_ref(), op, || display, async {
                Ok(stream.next().await)
            })
            .await;
            match next {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                // The stream ends with the error.
                Err(e) => Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl Backend for Guard {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.bound("checking", key, self.inner.stat(key)).await
    }

    async fn read(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        let opened = self.bound("reading", key, self.inner.read(key)).await?;
        Ok(opened.map(|(meta, body)| {
            let body = bound_stream(
                body,
                self.deadline,
                self.cancel.clone(),
                "reading",
                self.display(key),
            );
            (meta, body)
        }))
    }

    async fn write(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<Written> {
        self.bound("writing", key, self.inner.write(key, data, options))
            .await
    }

    async fn upload(&self, key: &str, options: &UploadOptions) -> Result<Box<dyn Upload>> {
        let inner = self
            .bound("uploading", key, self.inner.upload(key, options))
            .await?;
        Ok(Box::new(GuardedUpload {
            inner,
            deadline: self.deadline,
            cancel: self.cancel.clone(),
            display: self.display(key),
        }))
    }

    async fn list(&self, prefix: &str, delimiter: bool) -> Result<ListStream> {
        let listing = self
            .bound("listing", prefix, self.inner.list(prefix, delimiter))
            .await?;
        Ok(bound_stream(
            listing,
            self.deadline,
            self.cancel.clone(),
            "listing",
            self.display(prefix),
        ))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bound("deleting", key, self.inner.delete(key)).await
    }

    async fn copy_from(
        &self,
        source: &Arc<dyn Backend>,
        from: &str,
        to: &str,
        options: &CopyOptions,
    ) -> Result<Option<u64>> {
        // A copy through this machine moves a whole object: its deadline grows with its size
        // (at the least a MiB per `request_secs`... per part, each part has the full deadline).
        let parts = options
            .size
            .div_ceil(options.part_size.max(1) as u64)
            .max(1) as u32;
        let deadline = self.deadline.map(|d| d.saturating_mul(parts));
        bound(
            deadline,
            self.cancel.as_ref(),
            "copying",
            || self.display(to),
            self.inner.copy_from(source, from, to, options),
        )
        .await
    }

    async fn s3(&self, call: S3Call) -> Result<S3Reply> {
        let (op, key) = (call.op(), call.key().to_string());
        self.bound(op, &key, self.inner.s3(call)).await
    }
}

struct GuardedUpload {
    inner: Box<dyn Upload>,
    deadline: Option<Duration>,
    cancel: Option<CancellationToken>,
    display: String,
}

#[async_trait::async_trait]
impl Upload for GuardedUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let display = self.display.clone();
        bound(
            self.deadline,
            self.cancel.as_ref(),
            "uploading",
            || display,
            self.inner.write(chunk),
        )
        .await
    }

    async fn close(&mut self) -> Result<()> {
        let display = self.display.clone();
        bound(
            self.deadline,
            self.cancel.as_ref(),
            "completing",
            || display,
            self.inner.close(),
        )
        .await
    }

    async fn abort(&mut self) -> Result<()> {
        let display = self.display.clone();
        bound(
            self.deadline,
            None,
            "aborting",
            || display,
            self.inner.abort(),
        )
        .await
    }
}

/// Shows writes instead of making them.
#[derive(Debug)]
pub struct DryRun {
    inner: Arc<dyn Backend>,
    info: BackendInfo,
}

impl DryRun {
    pub fn new(inner: Arc<dyn Backend>) -> DryRun {
        let mut info = inner.info().clone();
        info.dry_run = true;
        DryRun { inner, info }
    }

    fn display(&self, key: &str) -> String {
        format!("{}/{key}", self.info.location.trim_end_matches('/'))
    }
}

#[async_trait::async_trait]
impl Backend for DryRun {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.stat(key).await
    }

    async fn read(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        self.inner.read(key).await
    }

    async fn write(&self, key: &str, data: Bytes, _options: &WriteOptions) -> Result<Written> {
        tracing::info!(
            "dry run: would write `{}` ({} bytes)",
            self.display(key),
            data.len()
        );
        Ok(Written::Created)
    }

    async fn upload(&self, key: &str, _options: &UploadOptions) -> Result<Box<dyn Upload>> {
        Ok(Box::new(Discard {
            display: self.display(key),
            bytes: 0,
        }))
    }

    async fn list(&self, prefix: &str, delimiter: bool) -> Result<ListStream> {
        self.inner.list(prefix, delimiter).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        tracing::info!("dry run: would delete `{}`", self.display(key));
        Ok(())
    }

    async fn copy_from(
        &self,
        _source: &Arc<dyn Backend>,
        from: &str,
        to: &str,
        options: &CopyOptions,
    ) -> Result<Option<u64>> {
        tracing::info!(
            "dry run: would copy `{from}` ({} bytes) to `{}`",
            options.size,
            self.display(to)
        );
        Ok(Some(options.size))
    }

    /// Reads go through; writes are shown, answered as a real run would find them.
    async fn s3(&self, call: S3Call) -> Result<S3Reply> {
        match call {
            S3Call::SetClass { key, class } => {
                tracing::info!("dry run: would move `{}` to `{class}`", self.display(&key));
                Ok(S3Reply::Done)
            }
            S3Call::Lifecycle { replace } => {
                if replace.is_some() {
                    tracing::info!(
                        "dry run: would set the lifecycle rules of `{}`",
                        self.info.location
                    );
                }
                self.inner.s3(S3Call::Lifecycle { replace: None }).await
            }
            S3Call::RequestRestore { key, tier, .. } => {
                tracing::info!(
                    "dry run: would request the restore of `{}` ({tier})",
                    self.display(&key)
                );
                Ok(S3Reply::Done)
            }
            S3Call::SetHold { key, mode, until } => {
                tracing::info!(
                    "dry run: would lock `{}` until {until} ({})",
                    self.display(&key),
                    mode.as_s3()
                );
                Ok(S3Reply::Done)
            }
            S3Call::DeleteVersions { key } => {
                tracing::info!(
                    "dry run: would delete every version of `{}`",
                    self.display(&key)
                );
                // What a real run would meet: a hold, if the current version has one.
                Ok(S3Reply::Deletion(match self.inner.hold(&key).await? {
                    Some(h) if h.until > Timestamp::now() => Deletion::Locked { until: h.until },
                    _ => Deletion::Deleted,
                }))
            }
            S3Call::Hidden { prefix, show } => {
                if show {
                    tracing::info!(
                        "dry run: would show again what is hidden below `{}`",
                        self.display(&prefix)
                    );
                }
                let call = S3Call::Hidden {
                    prefix,
                    show: false,
                };
                self.inner.s3(call).await
            }
            read @ (S3Call::Readiness { .. } | S3Call::HoldEnabled | S3Call::Hold { .. }) => {
                self.inner.s3(read).await
            }
        }
    }
}

/// An upload that keeps nothing (a dry run's).
struct Discard {
    display: String,
    bytes: u64,
}

#[async_trait::async_trait]
impl Upload for Discard {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        tracing::info!(
            "dry run: would upload `{}` ({} bytes)",
            self.display,
            self.bytes
        );
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        Ok(())
    }
}
