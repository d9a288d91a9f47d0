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

pub use super::s3::call::{Deletion, Held, Readiness, S3Call, S3Reply};
use crate::config::{LockMode, S3Access};
use crate::error::{Error, Result};

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

    /// The S3 extras ([`S3Call`]): a backend that is no S3 bucket answers as a plain store
    /// does ([`plain`]); a layer forwards the call, changing only what it must.
    async fn s3(&self, call: S3Call) -> Result<S3Reply> {
        plain(self, call).await
    }
}

/// How a store that is no S3 bucket answers the S3 extras: one storage class, every object
/// readable, no holds (setting one is refused), a deletion deletes the one version there is,
/// nothing hidden, and no lifecycle rules (refused: `prune` keeps such a store tidy).
pub async fn plain<B: Backend + ?Sized>(backend: &B, call: S3Call) -> Result<S3Reply> {
    let location = backend.info().location.trim_end_matches('/').to_string();
    Ok(match call {
        S3Call::SetClass { .. } | S3Call::RequestRestore { .. } => S3Reply::Done,
        S3Call::Lifecycle { .. } => {
            return Err(Error::Usage(format!(
                "lifecycle rules are for S3 repositories; `{location}` is a local folder (prune keeps it tidy)"
            )))
        }
        S3Call::Readiness { key } => {
            S3Reply::Readiness(backend.stat(&key).await?.map(|_| Readiness::Readable))
        }
        S3Call::HoldEnabled => S3Reply::Enabled(false),
        S3Call::Hold { .. } => S3Reply::Hold(None),
        S3Call::SetHold { key, .. } => {
            return Err(Error::Config(format!(
                "`{location}/{key}` cannot be locked: Object Lock needs an S3 bucket"
            )))
        }
        S3Call::DeleteVersions { key } => {
            backend.delete(&key).await?;
            S3Reply::Deletion(Deletion::Deleted)
        }
        S3Call::Hidden { .. } => S3Reply::Keys(Vec::new()),
    })
}

/// The S3 extras, one typed method per [`S3Call`].
impl dyn Backend {
    async fn ask(&self, call: S3Call) -> Result<S3Reply> {
        self.s3(call).await
    }

    /// Moves an object to another storage class (on S3, a copy onto itself).
    pub async fn set_class(&self, key: &str, class: &str) -> Result<()> {
        let call = S3Call::SetClass {
            key: key.into(),
            class: class.into(),
        };
        match self.ask(call).await? {
            S3Reply::Done => Ok(()),
            other => Err(mismatch("set_class", &other)),
        }
    }

    /// The bucket's lifecycle configuration (XML), replaced first by `replace` when given;
    /// `None` when it has none.
    pub async fn lifecycle(&self, replace: Option<String>) -> Result<Option<String>> {
        match self.ask(S3Call::Lifecycle { replace }).await? {
            S3Reply::Lifecycle(xml) => Ok(xml),
            other => Err(mismatch("lifecycle", &other)),
        }
    }

    /// Whether an object can be read now (archive tiers); `None` if it does not exist.
    pub async fn readiness(&self, key: &str) -> Result<Option<Readiness>> {
        match self.ask(S3Call::Readiness { key: key.into() }).await? {
            S3Reply::Readiness(r) => Ok(r),
            other => Err(mismatch("readiness", &other)),
        }
    }

    /// Asks for a readable copy of an archived object for `days` days, served at `tier`.
    pub async fn request_restore(&self, key: &str, days: u32, tier: &str) -> Result<()> {
        let call = S3Call::RequestRestore {
            key: key.into(),
            days,
            tier: tier.into(),
        };
        match self.ask(call).await? {
            S3Reply::Done => Ok(()),
            other => Err(mismatch("request_restore", &other)),
        }
    }

    /// Whether the bucket has S3 Object Lock enabled (nothing else has it).
    pub async fn hold_enabled(&self) -> Result<bool> {
        match self.ask(S3Call::HoldEnabled).await? {
            S3Reply::Enabled(on) => Ok(on),
            other => Err(mismatch("hold_enabled", &other)),
        }
    }

    /// An object's hold; `None` when it has none.
    pub async fn hold(&self, key: &str) -> Result<Option<Held>> {
        match self.ask(S3Call::Hold { key: key.into() }).await? {
            S3Reply::Hold(held) => Ok(held),
            other => Err(mismatch("hold", &other)),
        }
    }

    /// Holds an object until `until`.
    pub async fn set_hold(&self, key: &str, mode: LockMode, until: Timestamp) -> Result<()> {
        let call = S3Call::SetHold {
            key: key.into(),
            mode,
            until,
        };
        match self.ask(call).await? {
            S3Reply::Done => Ok(()),
            other => Err(mismatch("set_hold", &other)),
        }
    }

    /// Deletes an object for good: where versions are kept, every version of it; a held
    /// version stops it (what is left is as it was) and is reported.
    pub async fn delete_versions(&self, key: &str) -> Result<Deletion> {
        match self.ask(S3Call::DeleteVersions { key: key.into() }).await? {
            S3Reply::Deletion(d) => Ok(d),
            other => Err(mismatch("delete_versions", &other)),
        }
    }

    /// Keys below `prefix` hidden behind a delete marker (their versions kept); with `show`,
    /// the markers are removed.
    pub async fn hidden(&self, prefix: &str, show: bool) -> Result<Vec<String>> {
        let call = S3Call::Hidden {
            prefix: prefix.into(),
            show,
        };
        match self.ask(call).await? {
            S3Reply::Keys(keys) => Ok(keys),
            other => Err(mismatch("hidden", &other)),
        }
    }
}

fn mismatch(asked: &str, reply: &S3Reply) -> Error {
    Error::Internal(format!(
        "the S3 call `{asked}` was answered with `{reply:?}`"
    ))
}
