//! The storage trait: what the repository and the object backup ask of a place that keeps
//! objects, as one small interface with an implementation per kind of place
//! ([`super::opendal`] for local folders and S3, [`super::memory`] for unit tests) and
//! behaviour added by wrapping one in another ([`super::layers`]), never by conditions
//! inside a backend.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use jiff::Timestamp;

pub use super::object_lock::{Deletion, Retention};
use crate::config::{LockMode, S3Access};
use crate::error::Result;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;
/// A stream of listed objects (and folders, with a delimiter), in key order.
pub type ListStream = BoxStream<'static, Result<Listed>>;

/// What is known of a stored object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Without quotes. S3 gives the MD5 of a single-part upload.
    pub etag: Option<String>,
    pub modified: Option<Timestamp>,
    pub content_type: Option<String>,
    /// `x-amz-meta-*` (names without the prefix).
    pub user_metadata: BTreeMap<String, String>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Object(ObjectMeta),
    /// A "folder" (a common prefix, ending with `/`), in a listing with a delimiter.
    Folder(String),
}

/// How a whole object is written.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Create only: when an object is there, leave it and say so.
    pub if_absent: bool,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
}

/// How a streamed upload is written: in parts of exactly `part_size` bytes but the last (as
/// Cloudflare R2 requires), `concurrency` at a time.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub part_size: usize,
    pub concurrency: usize,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
}

impl UploadOptions {
    pub fn parts(part_size: usize, concurrency: usize) -> UploadOptions {
        UploadOptions {
            part_size,
            concurrency,
            storage_class: None,
            content_type: None,
            user_metadata: BTreeMap::new(),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    /// `if_absent`, and an object was there (or another writer's got there first): nothing
    /// was changed.
    Exists,
}

/// A copy of one object into another.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The source's size, as listed (a copy made by the server of a larger object than S3's
    /// single-copy limit is streamed instead).
    pub size: u64,
    /// The source's ETag as listed: the server copies only that version.
    pub etag: Option<String>,
    pub storage_class: Option<String>,
    /// Part size when the bytes stream through this machine.
    pub part_size: usize,
}

/// Where an S3 bucket is and how to reach it: a server-side copy needs both ends to share
/// one account ([`S3Access::same_account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Account {
    pub bucket: String,
    /// Below which keys live (no leading or trailing `/`).
    pub prefix: String,
    pub access: S3Access,
}

impl S3Account {
    /// The full key of `key`, below the prefix.
    pub fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

/// What a backend is, for messages and for what can be asked of it.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// Its URL (`file:///...`, `s3://bucket/prefix`, `memory://name`).
    pub location: String,
    /// A folder on this machine.
    pub local: bool,
    /// An S3 bucket: server-side copies, storage classes and lifecycle rules.
    pub s3: Option<S3Account>,
    /// Writes are shown, not made (`--dry-run`).
    pub dry_run: bool,
}

/// A streamed upload: parts are sent as they fill; nothing is visible at the key until
/// [`Upload::close`], and [`Upload::abort`] leaves nothing behind.
#[async_trait::async_trait]
pub trait Upload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    async fn close(&mut self) -> Result<()>;
    async fn abort(&mut self) -> Result<()>;
}

/// A place that keeps objects.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    fn info(&self) -> &BackendInfo;

    /// What is known of an object; `None` if it does not exist.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// An object's bytes, streamed, and its metadata (content type and user metadata where
    /// the backend keeps them, from the same requests); `None` if it does not exist.
    async fn read(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>>;

    /// Writes a whole (small) object.
    async fn write(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<Written>;

    /// Starts a streamed upload.
    async fn upload(&self, key: &str, options: &UploadOptions) -> Result<Box<dyn Upload>>;

    /// Every object below `prefix`, in key order; with `delimiter`, only those right below
    /// it and the folders there.
    async fn list(&self, prefix: &str, delimiter: bool) -> Result<ListStream>;

    /// Deletes an object; one that does not exist is no error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Copies `from` of `source` to `to` here, with its content type and user metadata; the
    /// bytes copied. The server copies when both ends share an account; otherwise the bytes
    /// stream through this machine. A source that has gone is `Ok(None)`.
    async fn copy_from(
        &self,
        source: &Arc<dyn Backend>,
        from: &str,
        to: &str,
        options: &CopyOptions,
    ) -> Result<Option<u64>>;

    /// Moves an object to another storage class (on S3, a copy onto itself).
    async fn set_class(&self, key: &str, class: &str) -> Result<()>;

    /// The bucket's lifecycle configuration (XML), replaced first by `replace` when given;
    /// `None` when it has none.
    async fn lifecycle(&self, replace: Option<String>) -> Result<Option<String>>;

    /// Whether an object can be read now (archive tiers); `None` if it does not exist. Where
    /// there are no archive tiers, every object is readable.
    async fn readiness(&self, key: &str) -> Result<Option<super::tiers::Readiness>> {
        Ok(self
            .stat(key)
            .await?
            .map(|_| super::tiers::Readiness::Readable))
    }

    /// Asks for a readable copy of an archived object for `days` days, served at `tier`.
    async fn request_restore(&self, _key: &str, _days: u32, _tier: &str) -> Result<()> {
        Ok(())
    }

    /// Whether the bucket has S3 Object Lock enabled (nothing else has it).
    async fn lock_enabled(&self) -> Result<bool> {
        Ok(false)
    }

    /// An object's lock; `None` when it has none.
    async fn retention(&self, _key: &str) -> Result<Option<Retention>> {
        Ok(None)
    }

    /// Locks an object until `until`.
    async fn set_retention(&self, key: &str, _mode: LockMode, _until: Timestamp) -> Result<()> {
        Err(crate::error::Error::Config(format!(
            "`{}/{key}` cannot be locked: Object Lock needs an S3 bucket",
            self.info().location.trim_end_matches('/')
        )))
    }

    /// Deletes an object for good: where versions are kept, every version of it; a locked
    /// version stops it (what is left is as it was) and is reported.
    async fn delete_versions(&self, key: &str) -> Result<Deletion> {
        self.delete(key).await.map(|()| Deletion::Deleted)
    }

    /// Keys below `prefix` hidden behind a delete marker (their versions kept); with `show`,
    /// the markers are removed.
    async fn hidden(&self, _prefix: &str, _show: bool) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
