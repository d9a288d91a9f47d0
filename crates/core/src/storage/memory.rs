//! Objects kept in memory: the backend of unit tests of the pipeline, prune and the object
//! backup, which then run without a server or a folder. Creating an object that must not
//! exist is atomic (one lock), listings are in key order, ETags are MD5s, as on S3.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use super::backend::{
    Backend, BackendInfo, ByteStream, CopyOptions, ListStream, Listed, ObjectMeta, S3Call, S3Reply,
    Upload, UploadOptions, WriteOptions, Written,
};
use crate::error::{Error, Result, StorageFailure};

type Objects = Arc<Mutex<BTreeMap<String, (ObjectMeta, Bytes)>>>;

#[derive(Debug)]
pub struct MemoryBackend {
    info: BackendInfo,
    objects: Objects,
    lifecycle: Mutex<Option<String>>,
    /// A store whose conditional create is a check and then a write (s3s-fs): once a create
    /// of this key succeeds, a competitor's write that passed the same check lands on it.
    competing_create: Mutex<Option<(String, Bytes)>>,
}

impl MemoryBackend {
    pub fn new(name: &str) -> MemoryBackend {
        MemoryBackend {
            info: BackendInfo {
                location: format!("memory://{name}"),
                local: false,
                s3: None,
                dry_run: false,
            },
            objects: Arc::default(),
            lifecycle: Mutex::new(None),
            competing_create: Mutex::new(None),
        }
    }

    /// The next create of `key` is reported done, then replaced by `theirs` (see
    /// `competing_create`).
    pub fn replace_after_create(&self, key: &str, theirs: Vec<u8>) {
        *self.competing_create.lock().expect("poisoned") = Some((key.to_string(), theirs.into()));
    }
}

fn insert(
    objects: &Objects,
    key: &str,
    data: Bytes,
    content_type: Option<String>,
    user: BTreeMap<String, String>,
) {
    let mut objects = objects.lock().expect("objects poisoned");
    put(&mut objects, key, data, content_type, user);
}

fn put(
    objects: &mut BTreeMap<String, (ObjectMeta, Bytes)>,
    key: &str,
    data: Bytes,
    content_type: Option<String>,
    user: BTreeMap<String, String>,
) {
    use md5::Digest;
    let meta = ObjectMeta {
        key: key.to_string(),
        size: data.len() as u64,
        etag: Some(hex::encode(md5::Md5::digest(&data))),
        modified: Some(jiff::Timestamp::now()),
        content_type,
        user_metadata: user,
    };
    objects.insert(key.to_string(), (meta, data));
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self
            .objects
            .lock()
            .expect("objects poisoned")
            .get(key)
            .map(|(meta, _)| meta.clone()))
    }

    async fn read(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        let found = self
            .objects
            .lock()
            .expect("objects poisoned")
            .get(key)
            .cloned();
        Ok(found.map(|(meta, data)| {
            // In pieces, as a server would send them.
            let pieces: Vec<Result<Bytes>> = data
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            (meta, futures::stream::iter(pieces).boxed())
        }))
    }

    async fn write(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<Written> {
        let mut objects = self.objects.lock().expect("objects poisoned");
        if options.if_absent && objects.contains_key(key) {
            return Ok(Written::Exists);
        }
        put(
            &mut objects,
            key,
            data,
            options.content_type.clone(),
            options.user_metadata.clone(),
        );
        let mut competing = self.competing_create.lock().expect("poisoned");
        if options.if_absent && competing.as_ref().is_some_and(|(k, _)| k == key) {
            let (_, theirs) = competing.take().expect("checked above");
            put(&mut objects, key, theirs, None, BTreeMap::new());
        }
        Ok(Written::Created)
    }

    async fn upload(&self, key: &str, options: &UploadOptions) -> Result<Box<dyn Upload>> {
        Ok(Box::new(MemoryUpload {
            objects: self.objects.clone(),
            key: key.to_string(),
            data: Some(BytesMut::new()),
            content_type: options.content_type.clone(),
            user_metadata: options.user_metadata.clone(),
        }))
    }

    async fn list(&self, prefix: &str, delimiter: bool) -> Result<ListStream> {
        let objects = self.objects.lock().expect("objects poisoned");
        let mut out: Vec<Result<Listed>> = Vec::new();
        let mut last_folder: Option<String> = None;
        for (key, (meta, _)) in objects.range(prefix.to_string()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            match rest.find('/') {
                Some(slash) if delimiter => {
                    let folder = format!("{prefix}{}", &rest[..=slash]);
                    if last_folder.as_deref() != Some(folder.as_str()) {
                        out.push(Ok(Listed::Folder(folder.clone())));
                        last_folder = Some(folder);
                    }
                }
                _ => out.push(Ok(Listed::Object(meta.clone()))),
            }
        }
        Ok(futures::stream::iter(out).boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().expect("objects poisoned").remove(key);
        Ok(())
    }

    async fn copy_from(
        &self,
        source: &Arc<dyn Backend>,
        from: &str,
        to: &str,
        _options: &CopyOptions,
    ) -> Result<Option<u64>> {
        let Some((meta, body)) = source.read(from).await? else {
            return Ok(None);
        };
        let parts: Vec<Bytes> = body.try_collect().await?;
        let data: Bytes = parts.concat().into();
        let size = data.len() as u64;
        insert(
            &self.objects,
            to,
            data,
            meta.content_type,
            meta.user_metadata,
        );
        Ok(Some(size))
    }

    /// Keeps lifecycle rules (for the tests that set them); the rest as a plain store.
    async fn s3(&self, call: S3Call) -> Result<S3Reply> {
        match call {
            S3Call::Lifecycle { replace } => {
                let mut rules = self.lifecycle.lock().expect("rules poisoned");
                if let Some(xml) = replace {
                    *rules = Some(xml);
                }
                Ok(S3Reply::Lifecycle(rules.clone()))
            }
            S3Call::SetClass { .. } => Ok(S3Reply::Done),
            other => super::backend::plain(self, other).await,
        }
    }
}

struct MemoryUpload {
    objects: Objects,
    key: String,
    data: Option<BytesMut>,
    content_type: Option<String>,
    user_metadata: BTreeMap<String, String>,
}

#[async_trait::async_trait]
impl Upload for MemoryUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        match &mut self.data {
            Some(data) => {
                data.extend_from_slice(&chunk);
                Ok(())
            }
            None => Err(Error::Storage {
                op: "uploading",
                path: self.key.clone(),
                kind: StorageFailure::Refused,
                message: "the upload is over".into(),
            }),
        }
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(data) = self.data.take() {
            insert(
                &self.objects,
                &self.key,
                data.freeze(),
                self.content_type.take(),
                std::mem::take(&mut self.user_metadata),
            );
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        self.data = None;
        Ok(())
    }
}
