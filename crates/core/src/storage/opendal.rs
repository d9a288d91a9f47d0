//! Local folders and S3 buckets, through OpenDAL, with lifeboat's own S3 requests
//! ([`super::s3::api`]) for what OpenDAL does not do.
//!
//! Whole objects go in one request, streamed uploads in equal-size multipart parts, reads by
//! ranges; where no storage class is configured no storage-class header is sent at all, so
//! servers that only know STANDARD keep working. Creating an object that must not exist yet
//! is atomic: a local file is written aside and hard-linked into place (which fails when the
//! name exists); on S3 the PUT carries `If-None-Match: *`, and the object is then checked by
//! its ETag, since a server may check that condition apart from the write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opendal::{services, ErrorKind, Operator};

use super::backend::{
    Backend, BackendInfo, ByteStream, CopyOptions, ListStream, Listed, ObjectMeta, S3Account,
    S3Call, S3Reply, Upload, UploadOptions, WriteOptions, Written,
};
use super::client::{Fetcher, Requests};
use super::parts::{LocalUpload, S3Upload};
use super::ranges::{fetch_ranges, read_ranges};
use super::retry::RetryPolicy;
use super::s3::api::{S3Api, MAX_SINGLE_COPY};
use crate::error::{Error, Result, StorageFailure};

/// Folder (inside a local repository) where files are written before they are renamed or
/// linked into place, so that an unfinished one is never seen at its final path.
pub const LOCAL_STAGING_DIR: &str = ".staging";
pub struct OpendalBackend {
    info: BackendInfo,
    op: Operator,
    local_root: Option<PathBuf>,
    s3: Option<S3Api>,
    /// Operators that upload with a storage class, by class (S3 only).
    by_class: Mutex<HashMap<String, Operator>>,
    /// How to build one.
    s3_build: Option<S3Build>,
}

#[derive(Clone)]
struct S3Build {
    account: S3Account,
    fetcher: Arc<Fetcher>,
    policy: RetryPolicy,
    keys: Arc<super::credentials::Keys>,
}

impl std::fmt::Debug for OpendalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpendalBackend")
            .field("location", &self.info.location)
            .finish_non_exhaustive()
    }
}

impl OpendalBackend {
    /// A folder on this machine (absolute path).
    pub fn local(root: &Path, location: String, policy: RetryPolicy) -> Result<OpendalBackend> {
        let staging = root.join(LOCAL_STAGING_DIR);
        let builder = services::Fs::default()
            .root(&root.display().to_string())
            .atomic_write_dir(&staging.display().to_string());
        let op = Operator::new(builder)
            .map_err(|e| Error::storage("opening", &location, e))?
            .layer(policy.opendal_layer())
            .finish();
        Ok(OpendalBackend {
            info: BackendInfo {
                location,
                local: true,
                s3: None,
                dry_run: false,
            },
            op,
            local_root: Some(root.to_path_buf()),
            s3: None,
            by_class: Mutex::new(HashMap::new()),
            s3_build: None,
        })
    }

    /// An S3 bucket (below its prefix); `default_class` for every upload without one.
    pub fn s3(
        account: S3Account,
        location: String,
        requests: Arc<Requests>,
        policy: RetryPolicy,
        default_class: Option<&str>,
    ) -> Result<OpendalBackend> {
        let client = super::client::client(&account.access.timeouts);
        let fetcher = Arc::new(Fetcher {
            client: client.clone(),
            requests: requests.clone(),
        });
        let keys =
            super::credentials::Keys::for_account(&account.access, &location, client.clone())?;
        let build = S3Build {
            account: account.clone(),
            fetcher,
            policy,
            keys: keys.clone(),
        };
        let op = build
            .operator(default_class)
            .map_err(|e| Error::storage("opening", &location, e))?;
        let s3 = S3Api::new(
            account.clone(),
            client,
            requests,
            policy,
            location.clone(),
            keys,
        );
        Ok(OpendalBackend {
            info: BackendInfo {
                location,
                local: false,
                s3: Some(account),
                dry_run: false,
            },
            op,
            local_root: None,
            s3: Some(s3),
            by_class: Mutex::new(HashMap::new()),
            s3_build: Some(build),
        })
    }

    fn display(&self, key: &str) -> String {
        format!("{}/{key}", self.info.location.trim_end_matches('/'))
    }

    fn op_for_class(&self, class: Option<&str>) -> Result<Operator> {
        let (Some(class), Some(build)) = (class, &self.s3_build) else {
            return Ok(self.op.clone());
        };
        let mut cache = self.by_class.lock().expect("storage class cache poisoned");
        if let Some(op) = cache.get(class) {
            return Ok(op.clone());
        }
        let op = build
            .operator(Some(class))
            .map_err(|e| Error::storage("opening", &self.info.location, e))?;
        cache.insert(class.to_string(), op.clone());
        Ok(op)
    }

    /// Creates `key` on S3 unless it exists, then checks by ETag that what is there is ours.
    async fn create_s3(
        &self,
        op: &Operator,
        key: &str,
        data: Bytes,
        options: &WriteOptions,
    ) -> Result<Written> {
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&data))
        };
        let written = put(op, key, data, options, true).await;
        match written {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => return Ok(Written::Exists),
            Err(e) => {
                // A server may refuse an existing name before it has read the body, which the
                // client sees as a broken request: look at what is there.
                return match self.stat(key).await? {
                    Some(meta) if meta.etag.as_deref() == Some(md5.as_str()) => {
                        Ok(Written::Created)
                    }
                    Some(_) => Ok(Written::Exists),
                    None => Err(Error::storage("writing", &self.display(key), e)),
                };
            }
        }
        match self.stat(key).await? {
            Some(meta) if meta.etag.as_deref().is_some_and(|e| is_md5(e) && e != md5) => {
                tracing::warn!(path = %self.display(key), "another writer replaced an object just created: keeping theirs");
                Ok(Written::Exists)
            }
            Some(_) => Ok(Written::Created),
            None => Err(Error::Storage {
                op: "writing",
                path: self.display(key),
                kind: StorageFailure::Unavailable,
                message: "the object is not there after it was written".into(),
            }),
        }
    }
}

impl S3Build {
    fn operator(&self, class: Option<&str>) -> opendal::Result<Operator> {
        let a = &self.account.access;
        let mut builder = services::S3::default()
            .bucket(&self.account.bucket)
            .root(&format!("/{}", self.account.prefix))
            .region(a.signing_region())
            // One loader for OpenDAL's requests and lifeboat's own (`credentials`).
            .customized_credential_load(Box::new(super::credentials::ForOpendal(self.keys.clone())))
            .disable_config_load();
        if let Some(endpoint) = &a.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if !a.path_style {
            builder = builder.enable_virtual_host_style();
        }
        if let Some(class) = class {
            builder = builder.default_storage_class(class);
        }
        let client = opendal::raw::HttpClient::with(SharedFetcher(self.fetcher.clone()));
        Ok(Operator::new(builder)?
            .layer(opendal::layers::HttpClientLayer::new(client))
            .layer(self.policy.opendal_layer())
            .finish())
    }
}

/// The shared fetcher, as OpenDAL takes it.
struct SharedFetcher(Arc<Fetcher>);

impl opendal::raw::HttpFetch for SharedFetcher {
    async fn fetch(
        &self,
        req: http::Request<opendal::Buffer>,
    ) -> opendal::Result<http::Response<opendal::raw::HttpBody>> {
        opendal::raw::HttpFetch::fetch(self.0.as_ref(), req).await
    }
}

/// Writes a whole object with its content type and user metadata; with `if_not_exists`, only
/// if none is there.
async fn put(
    op: &Operator,
    key: &str,
    data: Bytes,
    options: &WriteOptions,
    if_not_exists: bool,
) -> opendal::Result<()> {
    let mut write = op.write_with(key, data).if_not_exists(if_not_exists);
    if let Some(content_type) = &options.content_type {
        write = write.content_type(content_type);
    }
    if !options.user_metadata.is_empty() {
        write = write.user_metadata(options.user_metadata.clone());
    }
    write.await.map(|_| ())
}

fn meta_of(key: &str, meta: &opendal::Metadata) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: meta.content_length(),
        etag: meta.etag().map(|e| e.trim_matches('"').to_string()),
        modified: meta.last_modified().map(|t| t.into_inner()),
        content_type: meta.content_type().map(str::to_string),
        user_metadata: meta
            .user_metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

/// Whether an ETag is an MD5 (a single-part upload's), which can be compared with content.
fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait::async_trait]
impl Backend for OpendalBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.op.stat(key).await {
            Ok(meta) if meta.is_dir() => Ok(None),
            Ok(meta) => Ok(Some(meta_of(key, &meta))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("checking", &self.display(key), e)),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        // On S3 the first range's answer says whether the object is there, and its size.
        if let Some(s3) = &self.s3 {
            return s3.get_object(key).await;
        }
        let meta = match self.op.stat(key).await {
            Ok(meta) => meta_of(key, &meta),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::storage("reading", &self.display(key), e)),
        };
        let display = self.display(key);
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| Error::storage("reading", &display, e))?;
        let stream = fetch_ranges(read_ranges(meta.size), move |range| {
            let (reader, display) = (reader.clone(), display.clone());
            async move {
                reader
                    .read(range)
                    .await
                    .map_err(|e| Error::storage("reading", &display, e))
            }
        });
        Ok(Some((meta, stream)))
    }

    async fn write(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<Written> {
        let display = self.display(key);
        if options.if_absent {
            if let Some(root) = &self.local_root {
                let target = root.join(key);
                let staging = root.join(LOCAL_STAGING_DIR);
                return tokio::task::spawn_blocking(move || {
                    super::local::create_new_file(&staging, &target, &data)
                })
                .await
                .map_err(|e| Error::thread("file", e))?
                .map(|created| {
                    if created {
                        Written::Created
                    } else {
                        Written::Exists
                    }
                })
                .map_err(|e| Error::io(format!("creating `{display}`"), e));
            }
            let op = self.op_for_class(options.storage_class.as_deref())?;
            return self.create_s3(&op, key, data, options).await;
        }
        let op = self.op_for_class(options.storage_class.as_deref())?;
        put(&op, key, data, options, false)
            .await
            .map_err(|e| Error::storage("writing", &display, e))?;
        Ok(Written::Created)
    }

    async fn upload(&self, key: &str, options: &UploadOptions) -> Result<Box<dyn Upload>> {
        // Not OpenDAL's writers: they keep every finished part until they close (see parts.rs).
        let display = self.display(key);
        if let Some(root) = &self.local_root {
            let upload =
                LocalUpload::start(root.join(LOCAL_STAGING_DIR), root.join(key), display).await?;
            return Ok(Box::new(upload));
        }
        let s3 = self.s3.clone().ok_or_else(|| {
            Error::Internal(format!("`{display}` is neither a folder nor an S3 bucket"))
        })?;
        Ok(Box::new(S3Upload::new(s3, key, display, options.clone())))
    }

    async fn list(&self, prefix: &str, delimiter: bool) -> Result<ListStream> {
        let display = self.display(prefix);
        let lister = match self.op.lister_with(prefix).recursive(!delimiter).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(futures::stream::empty().boxed())
            }
            Err(e) => return Err(Error::storage("listing", &display, e)),
        };
        let prefix = prefix.to_string();
        Ok(lister
            .map_err(move |e| Error::storage("listing", &display, e))
            .try_filter_map(move |entry| {
                let path = entry.path();
                let listed = if path == prefix {
                    None
                } else if entry.metadata().is_dir() {
                    delimiter.then(|| Listed::Folder(path.to_string()))
                } else {
                    Some(Listed::Object(meta_of(path, entry.metadata())))
                };
                futures::future::ready(Ok(listed))
            })
            .boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("deleting", &self.display(key), e)),
        }
    }

    async fn copy_from(
        &self,
        source: &Arc<dyn Backend>,
        from: &str,
        to: &str,
        options: &CopyOptions,
    ) -> Result<Option<u64>> {
        if let (Some(s3), Some(ours), Some(theirs)) = (&self.s3, &self.info.s3, &source.info().s3) {
            if ours.access.same_account(&theirs.access) && options.size <= MAX_SINGLE_COPY {
                return match s3.copy_object(theirs, from, to, options, false).await {
                    Ok(()) => Ok(Some(options.size)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                };
            }
        }
        super::copy::stream_copy(self, source.as_ref(), from, to, options).await
    }

    async fn s3(&self, call: S3Call) -> Result<S3Reply> {
        match (&self.s3, &self.info.s3) {
            (Some(api), Some(account)) => api.call(account, call).await,
            _ => super::backend::plain(self, call).await,
        }
    }
}
