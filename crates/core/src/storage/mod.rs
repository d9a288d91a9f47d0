//! Storage: a local folder, an S3 bucket (or, in unit tests, memory) behind one small trait,
//! with what cuts across every operation added in one place each:
//!
//! - [`backend`]: the trait, what a place that keeps objects does;
//! - [`opendal`]: local folders and S3 through OpenDAL, and [`s3`] for the S3 requests OpenDAL
//!   does not make (server-side copies, storage classes, lifecycle rules, GETs with headers);
//!   [`local`] creates a local file atomically; `copy` streams a copy through this machine;
//! - [`client`]: the one HTTP client, with the timeouts and the request counts;
//! - [`retry`]: the one retry policy;
//! - [`layers`]: a deadline and cancellation for every operation, and dry runs;
//! - [`memory`]: objects in memory, for unit tests.
//!
//! [`Storage`] is the handle the rest of lifeboat holds: a backend with its layers, and the
//! convenience methods (whole small objects, listings, uploads, downloads).

pub mod backend;
pub mod client;
mod copy;
pub mod credentials;
pub mod layers;
pub mod local;
pub mod memory;
pub mod opendal;
mod parts;
mod ranges;
pub mod retry;
pub mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

pub use backend::{
    Backend, BackendInfo, ByteStream, CopyOptions, Listed, ObjectMeta, S3Account, Upload,
    UploadOptions, WriteOptions, Written,
};
pub use client::{RequestCounts, Requests};
pub use opendal::LOCAL_STAGING_DIR;

use crate::config::{BucketConfig, RepositoryConfig, RepositoryUrl};
use crate::error::{Error, Result};

/// The most one clean-up operation may take (see [`Storage::without_cancel`]).
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);

/// What every storage opened for a command shares: its stop request, whether it only shows
/// what it would write, and the count of its requests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub cancel: CancellationToken,
    pub dry_run: bool,
    pub requests: Arc<Requests>,
}

impl Env {
    pub fn new(cancel: CancellationToken) -> Env {
        Env {
            cancel,
            dry_run: false,
            requests: Arc::default(),
        }
    }

    /// The same, showing writes instead of making them.
    pub fn dry(&self) -> Env {
        Env {
            dry_run: true,
            ..self.clone()
        }
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub modified: Option<jiff::Timestamp>,
}

impl From<ObjectMeta> for Entry {
    fn from(meta: ObjectMeta) -> Entry {
        Entry {
            path: meta.key,
            size: meta.size,
            etag: meta.etag,
            modified: meta.modified,
        }
    }
}

/// A backend with its layers, and what its callers need of it.
#[derive(Clone, Debug)]
pub struct Storage {
    /// With every layer.
    backend: Arc<dyn Backend>,
    /// Without the guard (dry run included), to guard anew without cancellation.
    unguarded: Arc<dyn Backend>,
    deadline: Option<Duration>,
    requests: Arc<Requests>,
}

impl Storage {
    /// The storage of a repository. A local folder that does not exist is created only when
    /// `create` is set (by `init`); otherwise it is reported as not a repository.
    pub fn open(config: &RepositoryConfig, create: bool, env: &Env) -> Result<Storage> {
        let location = config.url.to_string();
        let policy = retry::RetryPolicy::default();
        let backend: Arc<dyn Backend> = match &config.url {
            RepositoryUrl::Local(path) => {
                if !create && !path.exists() {
                    return Err(Error::NotARepository { location });
                }
                if path.exists() && !path.is_dir() {
                    return Err(Error::Config(format!(
                        "repository `{location}` is a file, not a folder: point `repository.url` at a folder"
                    )));
                }
                Arc::new(opendal::OpendalBackend::local(
                    &absolute(path)?,
                    location,
                    policy,
                )?)
            }
            RepositoryUrl::S3 { bucket, prefix } => Arc::new(opendal::OpendalBackend::s3(
                S3Account {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    access: config.access(),
                },
                location,
                env.requests.clone(),
                policy,
                None,
            )?),
        };
        let deadline =
            (!matches!(config.url, RepositoryUrl::Local(_))).then(|| config.timeouts.request());
        Ok(Storage::layered(backend, deadline, env))
    }

    /// An S3 bucket of an object backup (below its prefix), uploading with its storage class.
    pub fn bucket(config: &BucketConfig, env: &Env) -> Result<Storage> {
        let backend = opendal::OpendalBackend::s3(
            S3Account {
                bucket: config.url.bucket.clone(),
                prefix: config.url.prefix.clone(),
                access: config.access(),
            },
            config.url.to_string(),
            env.requests.clone(),
            retry::RetryPolicy::default(),
            config.storage_class.as_deref(),
        )?;
        Ok(Storage::layered(
            Arc::new(backend),
            Some(config.timeouts.request()),
            env,
        ))
    }

    /// Objects in memory (unit tests).
    pub fn memory(name: &str, env: &Env) -> Storage {
        Storage::layered(Arc::new(memory::MemoryBackend::new(name)), None, env)
    }

    /// `backend` with the layers `env` asks for.
    pub fn layered(backend: Arc<dyn Backend>, deadline: Option<Duration>, env: &Env) -> Storage {
        let unguarded: Arc<dyn Backend> = if env.dry_run {
            Arc::new(layers::DryRun::new(backend))
        } else {
            backend
        };
        let backend = Arc::new(layers::Guard::new(
            unguarded.clone(),
            deadline,
            Some(env.cancel.clone()),
        ));
        Storage {
            backend,
            unguarded,
            deadline,
            requests: env.requests.clone(),
        }
    }

    /// The same storage, not stopped by a stop request but bounded by a short deadline: for
    /// the clean-up after a stop (removing what an unfinished backup wrote, releasing the run
    /// lock), which must be tried, and must not keep a stopping command waiting on storage
    /// that does not answer.
    pub fn without_cancel(&self) -> Storage {
        let deadline = Some(
            self.deadline
                .map_or(CLEANUP_DEADLINE, |d| d.min(CLEANUP_DEADLINE)),
        );
        Storage {
            backend: Arc::new(layers::Guard::new(self.unguarded.clone(), deadline, None)),
            ..self.clone()
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository's or bucket's URL, for messages.
    pub fn location(&self) -> &str {
        &self.backend.info().location
    }

    pub fn is_local(&self) -> bool {
        self.backend.info().local
    }

    /// Requests sent so far through the storages sharing this one's [`Env`].
    pub fn requests(&self) -> RequestCounts {
        self.requests.counts()
    }

    /// How a path is named in messages: the URL and the key.
    pub fn display(&self, path: &str) -> String {
        format!("{}/{path}", self.location().trim_end_matches('/'))
    }

    pub async fn stat(&self, path: &str) -> Result<Option<ObjectMeta>> {
        self.backend.stat(path).await
    }

    /// Reads a whole (small) object; `None` if it does not exist.
    pub async fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some((_, body)) = self.backend.read(path).await? else {
            return Ok(None);
        };
        let parts: Vec<Bytes> = body.try_collect().await?;
        Ok(Some(parts.concat()))
    }

    /// Writes a whole (small) object, replacing any previous one.
    pub async fn write(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.backend
            .write(path, data.into(), &WriteOptions::default())
            .await
            .map(|_| ())
    }

    /// Writes a whole object only if none exists at `path`: `true` when this call created it
    /// with `data`, `false` when one was there (or another writer's got there first).
    pub async fn write_new(&self, path: &str, data: Vec<u8>) -> Result<bool> {
        let options = WriteOptions {
            if_absent: true,
            ..WriteOptions::default()
        };
        Ok(self.backend.write(path, data.into(), &options).await? == Written::Created)
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.stat(path).await?.is_some())
    }

    /// Size of an object, `None` if it does not exist.
    pub async fn size(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.stat(path).await?.map(|m| m.size))
    }

    /// When an object was last written, `None` if it does not exist.
    pub async fn modified(&self, path: &str) -> Result<Option<jiff::Timestamp>> {
        Ok(self.stat(path).await?.and_then(|m| m.modified))
    }

    /// Every object under `prefix` (recursively), as a stream in key order.
    pub async fn list_stream(&self, prefix: &str) -> Result<BoxStream<'static, Result<Entry>>> {
        Ok(self
            .backend
            .list(prefix, false)
            .await?
            .try_filter_map(|listed| {
                futures::future::ready(Ok(match listed {
                    Listed::Object(meta) => Some(Entry::from(meta)),
                    Listed::Folder(_) => None,
                }))
            })
            .boxed())
    }

    /// Every object under `prefix`, into memory, sorted: for small prefixes (manifests).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = self.list_stream(prefix).await?.try_collect().await?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// The objects and "folders" right below `prefix` (which ends with `/`), in key order.
    pub async fn list_level(&self, prefix: &str) -> Result<BoxStream<'static, Result<Listed>>> {
        self.backend.list(prefix, true).await
    }

    /// The "folders" right below `prefix`, as full prefixes.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        self.list_level(prefix)
            .await?
            .try_filter_map(|listed| {
                futures::future::ready(Ok(match listed {
                    Listed::Folder(dir) => Some(dir),
                    Listed::Object(_) => None,
                }))
            })
            .try_collect()
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.backend.delete(path).await
    }

    /// Deletes every key of a stream, `concurrency` at a time; the number deleted.
    pub async fn delete_all(
        &self,
        keys: BoxStream<'_, Result<String>>,
        concurrency: usize,
    ) -> Result<u64> {
        keys.map(|key| async move {
            let key = key?;
            self.delete(&key).await
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |n, ()| async move { Ok(n + 1) })
        .await
    }

    /// Starts a streamed upload.
    pub async fn upload(&self, path: &str, options: &UploadOptions) -> Result<Box<dyn Upload>> {
        self.backend.upload(path, options).await
    }

    /// Streams an object's bytes; a missing object is an error.
    pub async fn download(&self, path: &str) -> Result<ByteStream> {
        match self.backend.read(path).await? {
            Some((_, body)) => Ok(body),
            None => Err(Error::Storage {
                op: "downloading",
                path: self.display(path),
                kind: crate::error::StorageFailure::NotFound,
                message: "not found".into(),
            }),
        }
    }

    /// Every JSON record below `prefix` (`what` names them in the warning about one that
    /// cannot be read, which is skipped), in key order.
    pub async fn read_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in self.list(prefix).await? {
            if let Some(bytes) = self.read_opt(&entry.path).await? {
                match serde_json::from_slice::<T>(&bytes) {
                    Ok(record) => out.push(record),
                    Err(e) => {
                        tracing::warn!("unreadable {what} `{}`: {e}", self.display(&entry.path))
                    }
                }
            }
        }
        Ok(out)
    }

    /// Copies `from` of `source` to `to` here (see [`Backend::copy_from`]).
    pub async fn copy_from(
        &self,
        source: &Storage,
        from: &str,
        to: &str,
        options: &CopyOptions,
    ) -> Result<Option<u64>> {
        self.backend
            .copy_from(&source.backend, from, to, options)
            .await
    }

    /// Whether an object can be read now (archive tiers); `None` if it does not exist.
    pub async fn readiness(&self, path: &str) -> Result<Option<s3::Readiness>> {
        self.backend.readiness(path).await
    }

    /// Asks for a readable copy of an archived object for `days` days, served at `tier`.
    pub async fn request_restore(&self, path: &str, days: u32, tier: &str) -> Result<()> {
        self.backend.request_restore(path, days, tier).await
    }

    /// Moves an object to another storage class.
    pub async fn set_class(&self, path: &str, class: &str) -> Result<()> {
        self.backend.set_class(path, class).await
    }

    /// The bucket's lifecycle rules (XML), replaced first by `replace` when given.
    pub async fn lifecycle(&self, replace: Option<String>) -> Result<Option<String>> {
        self.backend.lifecycle(replace).await
    }
}

fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        let cwd =
            std::env::current_dir().map_err(|e| Error::io("finding the current folder", e))?;
        Ok(cwd.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_storage_behaves_like_a_bucket() {
        let storage = Storage::memory("t", &Env::default());
        assert!(storage.write_new("a/1", b"one".to_vec()).await.unwrap());
        assert!(!storage.write_new("a/1", b"other".to_vec()).await.unwrap());
        assert_eq!(storage.read_opt("a/1").await.unwrap().unwrap(), b"one");
        storage.write("a/b/2", b"two".to_vec()).await.unwrap();
        storage.write("c", b"three".to_vec()).await.unwrap();
        let all: Vec<String> = storage
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(all, ["a/1", "a/b/2", "c"]);
        assert_eq!(storage.list_dirs("a/").await.unwrap(), ["a/b/"]);
        let mut upload = storage
            .upload("big", &UploadOptions::parts(5, 1))
            .await
            .unwrap();
        upload.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert!(
            storage.stat("big").await.unwrap().is_none(),
            "visible before close"
        );
        upload.write(Bytes::from_static(b"world")).await.unwrap();
        upload.close().await.unwrap();
        assert_eq!(
            storage.read_opt("big").await.unwrap().unwrap(),
            b"hello world"
        );
        storage.delete("c").await.unwrap();
        assert!(!storage.exists("c").await.unwrap());
    }

    #[tokio::test]
    async fn a_dry_run_reads_and_writes_nothing() {
        let env = Env::default();
        let backend: Arc<dyn Backend> = Arc::new(memory::MemoryBackend::new("d"));
        let real = Storage::layered(backend.clone(), None, &env);
        real.write("kept", b"x".to_vec()).await.unwrap();
        let dry = Storage::layered(backend, None, &env.dry());
        dry.write("new", b"y".to_vec()).await.unwrap();
        dry.delete("kept").await.unwrap();
        let mut upload = dry.upload("up", &UploadOptions::parts(5, 1)).await.unwrap();
        upload.write(Bytes::from_static(b"zzz")).await.unwrap();
        upload.close().await.unwrap();
        assert_eq!(dry.read_opt("kept").await.unwrap().unwrap(), b"x");
        let all: Vec<String> = real
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(all, ["kept"]);
    }

    #[tokio::test]
    async fn a_stop_request_ends_an_operation_at_once_and_cleanup_still_runs() {
        #[derive(Debug)]
        struct Hangs(BackendInfo);
        #[async_trait::async_trait]
        impl Backend for Hangs {
            fn info(&self) -> &BackendInfo {
                &self.0
            }
            async fn stat(&self, _: &str) -> Result<Option<ObjectMeta>> {
                futures::future::pending().await
            }
            async fn read(&self, _: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
                futures::future::pending().await
            }
            async fn write(&self, _: &str, _: Bytes, _: &WriteOptions) -> Result<Written> {
                futures::future::pending().await
            }
            async fn upload(&self, _: &str, _: &UploadOptions) -> Result<Box<dyn Upload>> {
                futures::future::pending().await
            }
            async fn list(&self, _: &str, _: bool) -> Result<backend::ListStream> {
                futures::future::pending().await
            }
            async fn delete(&self, _: &str) -> Result<()> {
                Ok(())
            }
            async fn copy_from(
                &self,
                _: &Arc<dyn Backend>,
                _: &str,
                _: &str,
                _: &CopyOptions,
            ) -> Result<Option<u64>> {
                futures::future::pending().await
            }
            async fn s3(&self, _: s3::S3Call) -> Result<s3::S3Reply> {
                futures::future::pending().await
            }
        }
        let env = Env::default();
        let hangs = Arc::new(Hangs(BackendInfo {
            location: "hang://".into(),
            local: false,
            s3: None,
            dry_run: false,
        }));
        let storage = Storage::layered(hangs.clone(), Some(Duration::from_millis(200)), &env);
        let begun = std::time::Instant::now();
        let err = storage.stat("k").await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Storage {
                    kind: crate::error::StorageFailure::Timeout,
                    ..
                }
            ),
            "{err}"
        );
        assert!(begun.elapsed() < Duration::from_secs(2));
        let storage = Storage::layered(hangs, None, &env);
        let cancel = env.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let err = storage.read_opt("k").await.unwrap_err();
        assert!(matches!(err, Error::Interrupted(_)), "{err}");
        // What cleans up after a stop is not stopped.
        storage.without_cancel().delete("k").await.unwrap();
        assert!(storage.delete("k").await.is_err());
    }
}
