//! Storage: a local folder or an S3 bucket behind one small interface (built on OpenDAL).
//!
//! Everything lifeboat stores goes through [`Storage`]: whole small objects (manifests, markers),
//! streamed uploads in equal-size multipart parts (Cloudflare R2 rejects unequal ones), streamed
//! downloads, listing and deletion. Retries of transient failures are an OpenDAL layer, not
//! code in the callers. A storage class is chosen per upload; where none is configured no
//! storage-class header is sent at all, so servers that only know STANDARD keep working.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use opendal::{layers::RetryLayer, services, ErrorKind, Operator};

use crate::config::{BucketConfig, RepositoryConfig, RepositoryUrl, Secret};
use crate::error::{Error, Result};

/// Folder (inside a local repository) where uploads are written before they are renamed into
/// place, so that an unfinished upload is never seen at its final path.
pub const LOCAL_STAGING_DIR: &str = ".staging";

pub struct Storage {
    config: RepositoryConfig,
    location: String,
    default_op: Operator,
    by_class: Mutex<HashMap<String, Operator>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub size: u64,
}

impl Storage {
    /// Opens the storage of a repository. A local folder that does not exist is created only
    /// when `create` is set (by `init`); otherwise it is reported as not a repository.
    pub fn open(config: &RepositoryConfig, create: bool) -> Result<Storage> {
        if let RepositoryUrl::Local(path) = &config.url {
            if !create && !path.exists() {
                return Err(Error::NotARepository {
                    location: config.url.to_string(),
                });
            }
            if path.exists() && !path.is_dir() {
                return Err(Error::Config(format!(
                    "repository `{}` is a file, not a folder: point `repository.url` at a folder",
                    config.url
                )));
            }
        }
        let default_op = build_operator(config, None)?;
        Ok(Storage {
            config: config.clone(),
            location: config.url.to_string(),
            default_op,
            by_class: Mutex::new(HashMap::new()),
        })
    }

    /// The repository's URL, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn is_local(&self) -> bool {
        matches!(self.config.url, RepositoryUrl::Local(_))
    }

    fn op_for_class(&self, class: Option<&str>) -> Result<Operator> {
        let Some(class) = class else {
            return Ok(self.default_op.clone());
        };
        if self.is_local() {
            return Ok(self.default_op.clone());
        }
        let mut cache = self.by_class.lock().expect("storage class cache poisoned");
        if let Some(op) = cache.get(class) {
            return Ok(op.clone());
        }
        let op = build_operator(&self.config, Some(class))?;
        cache.insert(class.to_string(), op.clone());
        Ok(op)
    }

    /// Reads a whole (small) object; `None` if it does not exist.
    pub async fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.default_op.read(path).await {
            Ok(buf) => Ok(Some(buf.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("reading", &self.display(path), e)),
        }
    }

    /// Writes a whole (small) object, replacing any previous one.
    pub async fn write(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.default_op
            .write(path, data)
            .await
            .map(|_| ())
            .map_err(|e| Error::storage("writing", &self.display(path), e))
    }

    /// Writes a whole object only if none exists at `path`: `true` when this call created it
    /// with `data`, `false` when one was there (or another writer's got there first).
    ///
    /// Atomic on every backend: a local file is written aside and hard-linked into place,
    /// which fails when the name exists; on S3 the PUT carries `If-None-Match: *`. Since a
    /// server may check that condition apart from the write (s3s-fs does), the object is then
    /// checked by hash (its ETag, the MD5 of a single-part upload): another writer's content
    /// under the name means this call did not create it.
    pub async fn write_new(&self, path: &str, data: Vec<u8>) -> Result<bool> {
        if let RepositoryUrl::Local(root) = &self.config.url {
            let root = absolute(root)?;
            let target = root.join(path);
            let staging = root.join(LOCAL_STAGING_DIR);
            let display = self.display(path);
            return tokio::task::spawn_blocking(move || create_new_file(&staging, &target, &data))
                .await
                .map_err(|e| Error::invalid(format!("file thread failed: {e}")))?
                .map_err(|e| Error::io(format!("creating `{display}`"), e));
        }
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&data))
        };
        match self
            .default_op
            .write_with(path, data)
            .if_not_exists(true)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => return Ok(false),
            Err(e) => {
                // A server may refuse an existing name before it has read the body, which the
                // client sees as a broken request: look at what is there.
                return match self.etag(path).await? {
                    Some(etag) => Ok(etag == md5),
                    None => Err(Error::storage("writing", &self.display(path), e)),
                };
            }
        }
        match self.etag(path).await? {
            Some(etag) if is_md5(&etag) && etag != md5 => {
                tracing::warn!(path = %self.display(path), "another writer replaced an object just created: keeping theirs");
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Err(Error::Storage {
                op: "writing",
                path: self.display(path),
                message: "the object is not there after it was written".into(),
                retryable: true,
            }),
        }
    }

    /// The ETag of an object (quotes removed), `None` if it does not exist.
    async fn etag(&self, path: &str) -> Result<Option<String>> {
        match self.default_op.stat(path).await {
            Ok(meta) => Ok(Some(
                meta.etag()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("checking", &self.display(path), e)),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        self.default_op
            .exists(path)
            .await
            .map_err(|e| Error::storage("checking", &self.display(path), e))
    }

    /// Size of an object, `None` if it does not exist.
    pub async fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.default_op.stat(path).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("checking", &self.display(path), e)),
        }
    }

    /// When an object was last written, `None` if it does not exist.
    pub async fn modified(&self, path: &str) -> Result<Option<jiff::Timestamp>> {
        match self.default_op.stat(path).await {
            Ok(meta) => Ok(meta.last_modified().map(|t| t.into_inner())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("checking", &self.display(path), e)),
        }
    }

    /// Lists every object under `prefix` (recursively), as a stream, in the order the storage
    /// gives (lexicographic on S3).
    pub async fn list_stream(
        &self,
        prefix: &str,
    ) -> Result<impl Stream<Item = Result<Entry>> + Send + Unpin + use<>> {
        let display = self.display(prefix);
        let lister = match self.default_op.lister_with(prefix).recursive(true).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(Error::storage("listing", &display, e)),
        };
        Ok(lister
            .try_filter(|entry| futures::future::ready(!entry.metadata().is_dir()))
            .map(move |item| {
                item.map(|entry| Entry {
                    size: entry.metadata().content_length(),
                    path: entry.path().to_string(),
                })
                .map_err(|e| Error::storage("listing", &display, e))
            })
            .boxed())
    }

    /// Lists every object under `prefix` into memory: for small prefixes (manifests).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = self.list_stream(prefix).await?.try_collect().await?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.default_op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("deleting", &self.display(path), e)),
        }
    }

    /// Starts a streamed upload. Every part but the last is exactly `part_size` bytes.
    pub async fn upload(
        &self,
        path: &str,
        class: Option<&str>,
        part_size: usize,
        concurrency: usize,
    ) -> Result<opendal::Writer> {
        let op = self.op_for_class(class)?;
        op.writer_with(path)
            .chunk(part_size)
            .concurrent(concurrency)
            .await
            .map_err(|e| Error::storage("uploading", &self.display(path), e))
    }

    /// Streams an object's bytes.
    pub async fn download(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + Unpin + use<>> {
        let display = self.display(path);
        let reader = self
            .default_op
            .reader_with(path)
            .chunk(8 << 20)
            .concurrent(4)
            .await
            .map_err(|e| Error::storage("downloading", &display, e))?;
        let stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| Error::storage("downloading", &display, e))?;
        Ok(stream
            .map(move |chunk| {
                chunk.map_err(|e| Error::Storage {
                    op: "downloading",
                    path: display.clone(),
                    retryable: true,
                    message: crate::error::one_line(&e.to_string().to_lowercase()),
                })
            })
            .boxed())
    }

    /// How a path is named in messages: the repository URL and the key.
    pub fn display(&self, path: &str) -> String {
        format!("{}/{}", self.location.trim_end_matches('/'), path)
    }
}

/// Four retries of a failed request, backing off from 200 ms to 8 s with jitter.
fn retry_layer() -> RetryLayer {
    RetryLayer::new()
        .with_max_times(4)
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(8))
        .with_jitter()
}

fn build_operator(config: &RepositoryConfig, class: Option<&str>) -> Result<Operator> {
    let retry = retry_layer();
    let op = match &config.url {
        RepositoryUrl::Local(path) => {
            let root = absolute(path)?;
            let staging = root.join(LOCAL_STAGING_DIR);
            let builder = services::Fs::default()
                .root(&root.display().to_string())
                .atomic_write_dir(&staging.display().to_string());
            Operator::new(builder)
                .map_err(|e| Error::storage("opening", &config.url.to_string(), e))?
                .layer(retry)
                .finish()
        }
        RepositoryUrl::S3 { bucket, prefix } => s3_operator(
            &S3Access {
                bucket,
                prefix,
                endpoint: config.endpoint.as_deref(),
                region: config.region.as_deref(),
                access_key_id: config.access_key_id.as_ref(),
                secret_access_key: config.secret_access_key.as_ref(),
                path_style: config.path_style,
            },
            class,
        )
        .map_err(|e| Error::storage("opening", &config.url.to_string(), e))?,
    };
    Ok(op)
}

/// Where and how to reach one S3 bucket.
pub struct S3Access<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub access_key_id: Option<&'a Secret>,
    pub secret_access_key: Option<&'a Secret>,
    pub path_style: bool,
}

impl<'a> S3Access<'a> {
    pub fn of_bucket(config: &'a BucketConfig) -> S3Access<'a> {
        S3Access {
            bucket: &config.url.bucket,
            prefix: &config.url.prefix,
            endpoint: config.endpoint.as_deref(),
            region: config.region.as_deref(),
            access_key_id: config.access_key_id.as_ref(),
            secret_access_key: config.secret_access_key.as_ref(),
            path_style: config.path_style,
        }
    }

    /// The region to sign with: the configured one, else `auto` behind a custom endpoint (R2).
    pub fn region(&self) -> &str {
        match (self.region, self.endpoint) {
            (Some(region), _) => region,
            (None, Some(_)) => "auto",
            (None, None) => "us-east-1",
        }
    }
}

/// An OpenDAL operator on an S3 bucket (below its prefix), retrying transient failures.
pub fn s3_operator(access: &S3Access<'_>, class: Option<&str>) -> opendal::Result<Operator> {
    let mut builder = services::S3::default()
        .bucket(access.bucket)
        .root(&format!("/{}", access.prefix))
        .disable_ec2_metadata()
        .region(access.region());
    if let Some(endpoint) = access.endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (access.access_key_id, access.secret_access_key) {
        builder = builder
            .access_key_id(id.expose())
            .secret_access_key(secret.expose())
            .disable_config_load();
    }
    if !access.path_style {
        builder = builder.enable_virtual_host_style();
    }
    if let Some(class) = class {
        builder = builder.default_storage_class(class);
    }
    Ok(Operator::new(builder)?.layer(retry_layer()).finish())
}

/// Whether an ETag is an MD5 (a single-part upload's), which can be compared with content.
fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Creates `target` with `data` unless it exists: written and synced in `staging`, then
/// hard-linked into place, which fails atomically when the name is taken.
fn create_new_file(
    staging: &std::path::Path,
    target: &std::path::Path,
    data: &[u8],
) -> std::io::Result<bool> {
    use std::io::Write;
    let parent = target.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(staging)?;
    std::fs::create_dir_all(parent)?;
    let mut staged = tempfile::Builder::new()
        .prefix(".new-")
        .tempfile_in(staging)?;
    staged.write_all(data)?;
    staged.as_file().sync_all()?;
    match std::fs::hard_link(staged.path(), target) {
        Ok(()) => {
            // The new name is durable once its folder is.
            std::fs::File::open(parent)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
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
