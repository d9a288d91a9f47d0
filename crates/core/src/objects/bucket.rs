//! One S3 bucket (below a prefix) as the object backup sees it: listings with size, ETag and
//! time; small files; copies of objects from another bucket with their content type and user
//! metadata, streamed in equal-size parts or made by the server when both buckets share an
//! account; deletions in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};

use super::index::Listed;
use crate::config::BucketConfig;
use crate::error::{Error, Result};
use crate::storage::{s3_operator, S3Access};

pub use reqwest::Method;

/// Requests sent, by kind, for the summary of a run.
#[derive(Debug, Default)]
pub struct Requests {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub copy: AtomicU64,
    pub delete: AtomicU64,
}

/// Requests sent, by kind, as reported.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub list: u64,
    pub head: u64,
    pub get: u64,
    pub put: u64,
    pub copy: u64,
    pub delete: u64,
    pub total: u64,
}

impl Requests {
    pub fn counts(&self) -> RequestCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            list: load(&self.list),
            head: load(&self.head),
            get: load(&self.get),
            put: load(&self.put),
            copy: load(&self.copy),
            delete: load(&self.delete),
            total: self.total(),
        }
    }

    pub fn total(&self) -> u64 {
        [
            &self.list,
            &self.head,
            &self.get,
            &self.put,
            &self.copy,
            &self.delete,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct Bucket {
    pub config: BucketConfig,
    op: Operator,
    http: reqwest::Client,
    pub requests: Arc<Requests>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("url", &self.config.url.to_string())
            .finish_non_exhaustive()
    }
}

impl Bucket {
    pub fn open(config: &BucketConfig, requests: Arc<Requests>) -> Result<Bucket> {
        let op = s3_operator(
            &S3Access::of_bucket(config),
            config.storage_class.as_deref(),
        )
        .map_err(|e| Error::storage("opening", &config.url.to_string(), e))?;
        Ok(Bucket {
            config: config.clone(),
            op,
            http: reqwest::Client::new(),
            requests,
        })
    }

    pub(crate) fn operator(&self) -> &Operator {
        &self.op
    }

    /// How a key is named in messages.
    pub fn display(&self, key: &str) -> String {
        format!(
            "{}/{key}",
            self.config.url.to_string().trim_end_matches('/')
        )
    }

    /// Every object under `prefix`, in key order, with what the listing says about it.
    pub async fn list(&self, prefix: &str) -> Result<BoxStream<'static, Result<Listed>>> {
        let display = self.display(prefix);
        Requests::add(&self.requests.list, 1);
        let lister = match self.op.lister_with(prefix).recursive(true).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(Error::storage("listing", &display, e)),
        };
        let requests = self.requests.clone();
        let mut seen = 0u64;
        Ok(lister
            .try_filter(|entry| futures::future::ready(!entry.metadata().is_dir()))
            .map(move |item| {
                seen += 1;
                if seen.is_multiple_of(1000) {
                    Requests::add(&requests.list, 1);
                }
                item.map(|entry| {
                    let meta = entry.metadata();
                    Listed {
                        key: entry.path().to_string(),
                        size: meta.content_length(),
                        etag: meta.etag().map(|e| e.trim_matches('"').to_string()),
                        modified: meta.last_modified().map(|t| t.into_inner()),
                    }
                })
                .map_err(|e| Error::storage("listing", &display, e))
            })
            .boxed())
    }

    /// The "folders" right below `prefix` (which ends with `/`), as full prefixes.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let display = self.display(prefix);
        Requests::add(&self.requests.list, 1);
        let lister = match self.op.lister(prefix).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage("listing", &display, e)),
        };
        lister
            .try_filter(|entry| futures::future::ready(entry.metadata().is_dir()))
            .map_ok(|entry| entry.path().to_string())
            .try_filter(|path| futures::future::ready(path != prefix))
            .try_collect()
            .await
            .map_err(|e| Error::storage("listing", &display, e))
    }

    pub async fn read_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Requests::add(&self.requests.get, 1);
        match self.op.read(key).await {
            Ok(buf) => Ok(Some(buf.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage("reading", &self.display(key), e)),
        }
    }

    /// Streams an object's bytes.
    pub async fn read_stream(&self, key: &str) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        let display = self.display(key);
        Requests::add(&self.requests.get, 1);
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| Error::storage("reading", &display, e))?;
        let stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| Error::storage("reading", &display, e))?;
        Ok(stream
            .map_err(move |e| Error::Storage {
                op: "reading",
                path: display.clone(),
                retryable: true,
                message: crate::error::one_line(&e.to_string().to_lowercase()),
            })
            .boxed())
    }

    pub async fn write(&self, key: &str, data: Vec<u8>) -> Result<()> {
        Requests::add(&self.requests.put, 1);
        self.op
            .write(key, data)
            .await
            .map(|_| ())
            .map_err(|e| Error::storage("writing", &self.display(key), e))
    }

    /// Starts a streamed upload in parts of `part_size` bytes.
    pub async fn writer(&self, key: &str, part_size: usize) -> Result<opendal::Writer> {
        Requests::add(&self.requests.put, 1);
        self.op
            .writer_with(key)
            .chunk(part_size)
            .await
            .map_err(|e| Error::storage("writing", &self.display(key), e))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        Requests::add(&self.requests.delete, 1);
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage("deleting", &self.display(key), e)),
        }
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

    /// Copies `from_key` of `from` to `to_key` here, with its content type and user metadata;
    /// the number of bytes copied. The server copies when both buckets share an account;
    /// otherwise one GET streams into the upload (its headers carry the metadata, so no HEAD).
    pub async fn copy_from(
        &self,
        from: &Bucket,
        from_key: &str,
        to_key: &str,
        part_size: usize,
    ) -> Result<u64> {
        if self.config.shares_account_with(&from.config) {
            return self.server_copy(from, from_key, to_key).await;
        }
        self.stream_copy(from, from_key, to_key, part_size).await
    }

    /// A copy through this machine: one GET streamed into the upload.
    async fn stream_copy(
        &self,
        from: &Bucket,
        from_key: &str,
        to_key: &str,
        part_size: usize,
    ) -> Result<u64> {
        let source = from.display(from_key);
        let target = self.display(to_key);
        Requests::add(&from.requests.get, 1);
        let mut response = from
            .signed(reqwest::Method::GET, from_key, Vec::new())
            .await?;
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let user: HashMap<String, String> = headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        let mut writing = self.op.writer_with(to_key).chunk(part_size);
        if let Some(content_type) = header("content-type") {
            writing = writing.content_type(&content_type);
        }
        if !user.is_empty() {
            writing = writing.user_metadata(user);
        }
        Requests::add(&self.requests.put, size.div_ceil(part_size as u64).max(1));
        let mut writer = writing
            .await
            .map_err(|e| Error::storage("writing", &target, e))?;
        let copied = async {
            let mut copied = 0u64;
            loop {
                let chunk = response.chunk().await.map_err(|e| Error::Storage {
                    op: "reading",
                    path: source.clone(),
                    retryable: true,
                    message: crate::error::one_line(&e.to_string()),
                })?;
                let Some(chunk) = chunk else { break };
                copied += chunk.len() as u64;
                writer
                    .write(chunk)
                    .await
                    .map_err(|e| Error::storage("writing", &target, e))?;
            }
            if copied != size {
                return Err(Error::Storage {
                    op: "reading",
                    path: source.clone(),
                    retryable: true,
                    message: format!("got {copied} bytes of {size}"),
                });
            }
            writer
                .close()
                .await
                .map_err(|e| Error::storage("writing", &target, e))?;
            Ok(copied)
        }
        .await;
        if copied.is_err() {
            let _ = writer.abort().await;
        }
        copied
    }

    /// A server-side copy (S3 CopyObject) from a bucket of the same account: no bytes through
    /// this machine. Objects over 5 GiB need a multipart copy: those are streamed instead.
    async fn server_copy(&self, from: &Bucket, from_key: &str, to_key: &str) -> Result<u64> {
        let source = from.display(from_key);
        let target = self.display(to_key);
        Requests::add(&from.requests.head, 1);
        let meta = from
            .op
            .stat(from_key)
            .await
            .map_err(|e| Error::storage("reading", &source, e))?;
        let size = meta.content_length();
        if size > 5 << 30 {
            return self.stream_copy(from, from_key, to_key, 64 << 20).await;
        }
        let copy_source = format!(
            "/{}/{}",
            from.config.url.bucket,
            encode_key(&join(&from.config.url.prefix, from_key))
        );
        let mut headers = vec![("x-amz-copy-source", copy_source)];
        if let Some(etag) = meta.etag() {
            headers.push(("x-amz-copy-source-if-match", etag.to_string()));
        }
        if let Some(class) = &self.config.storage_class {
            headers.push(("x-amz-storage-class", class.clone()));
        }
        Requests::add(&self.requests.copy, 1);
        let response = self.signed(reqwest::Method::PUT, to_key, headers).await?;
        // S3 can answer 200 and still report an error in the body.
        let body = response.text().await.unwrap_or_default();
        if body.contains("<Error>") {
            return Err(Error::Storage {
                op: "copying",
                path: format!("{source} to {target}"),
                message: xml_value(&body, "Code").unwrap_or_else(|| "failed".into()),
                retryable: true,
            });
        }
        Ok(size)
    }

    /// Moves an object to another storage class: a server-side copy onto itself.
    pub async fn change_class(&self, key: &str, class: &str) -> Result<()> {
        let copy_source = format!(
            "/{}/{}",
            self.config.url.bucket,
            encode_key(&join(&self.config.url.prefix, key))
        );
        Requests::add(&self.requests.copy, 1);
        let response = self
            .signed(
                reqwest::Method::PUT,
                key,
                vec![
                    ("x-amz-copy-source", copy_source),
                    ("x-amz-storage-class", class.to_string()),
                    ("x-amz-metadata-directive", "COPY".to_string()),
                ],
            )
            .await?;
        let body = response.text().await.unwrap_or_default();
        if body.contains("<Error>") {
            return Err(Error::Storage {
                op: "changing the storage class of",
                path: self.display(key),
                message: xml_value(&body, "Code").unwrap_or_else(|| "failed".into()),
                retryable: true,
            });
        }
        Ok(())
    }

    /// The URL of an object of this bucket.
    fn object_url(&self, key: &str) -> Result<reqwest::Url> {
        let path = encode_key(&join(&self.config.url.prefix, key));
        let bucket = &self.config.url.bucket;
        let text = match (&self.config.endpoint, self.config.path_style) {
            (Some(endpoint), true) => format!("{}/{bucket}/{path}", endpoint.trim_end_matches('/')),
            (Some(endpoint), false) => {
                let (scheme, host) = endpoint
                    .trim_end_matches('/')
                    .split_once("://")
                    .unwrap_or(("https", endpoint));
                format!("{scheme}://{bucket}.{host}/{path}")
            }
            (None, _) => format!(
                "https://s3.{}.amazonaws.com/{bucket}/{path}",
                S3Access::of_bucket(&self.config).region()
            ),
        };
        text.parse()
            .map_err(|e| Error::invalid(format!("bad object url for `{}`: {e}", self.display(key))))
    }

    /// Sends one signed request for an object, retrying server errors and lost connections
    /// with backoff; a 404 is reported as `not found`.
    async fn signed(
        &self,
        method: reqwest::Method,
        key: &str,
        headers: Vec<(&'static str, String)>,
    ) -> Result<reqwest::Response> {
        let url = self.object_url(key)?;
        self.send_signed(method, url, &self.display(key), headers, None)
            .await
    }

    /// A bucket-level request (`?lifecycle`): the bucket's URL with `query`.
    pub async fn bucket_request(
        &self,
        method: reqwest::Method,
        query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let bucket = &self.config.url.bucket;
        let text = match (&self.config.endpoint, self.config.path_style) {
            (Some(endpoint), true) => {
                format!("{}/{bucket}?{query}", endpoint.trim_end_matches('/'))
            }
            (Some(endpoint), false) => {
                let (scheme, host) = endpoint
                    .trim_end_matches('/')
                    .split_once("://")
                    .unwrap_or(("https", endpoint));
                format!("{scheme}://{bucket}.{host}/?{query}")
            }
            (None, _) => format!(
                "https://s3.{}.amazonaws.com/{bucket}?{query}",
                S3Access::of_bucket(&self.config).region()
            ),
        };
        let url = text
            .parse()
            .map_err(|e| Error::invalid(format!("bad bucket url `{text}`: {e}")))?;
        let mut headers = Vec::new();
        if let Some(body) = &body {
            use base64::Engine;
            use md5::Digest;
            let digest = md5::Md5::digest(body);
            headers.push((
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(digest),
            ));
        }
        let display = format!("s3://{bucket}?{query}");
        self.send_signed(method, url, &display, headers, body).await
    }

    async fn send_signed(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        display: &str,
        headers: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let op = if method == reqwest::Method::GET {
            "reading"
        } else {
            "writing"
        };
        let failed = |message: String, retryable: bool| Error::Storage {
            op,
            path: display.to_string(),
            message,
            retryable,
        };
        let mut request = reqwest::Request::new(method, url);
        for (name, value) in headers {
            let value = value
                .parse()
                .map_err(|_| failed(format!("bad header `{name}`"), false))?;
            request.headers_mut().insert(name, value);
        }
        if let Some(body) = body {
            request
                .headers_mut()
                .insert(reqwest::header::CONTENT_LENGTH, body.len().into());
            *request.body_mut() = Some(body.into());
        } else if request.method() == reqwest::Method::PUT {
            request
                .headers_mut()
                .insert(reqwest::header::CONTENT_LENGTH, 0.into());
        }
        let credential = reqsign::AwsCredential {
            access_key_id: self
                .config
                .access_key_id
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            secret_access_key: self
                .config
                .secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            session_token: None,
            expires_in: None,
        };
        let signer = reqsign::AwsV4Signer::new("s3", S3Access::of_bucket(&self.config).region());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut signed = request
                .try_clone()
                .expect("a request without a body clones");
            signer
                .sign(&mut signed, &credential)
                .map_err(|e| failed(format!("cannot sign the request: {e}"), false))?;
            let (message, retryable) = match self.http.execute(signed).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let code = xml_value(&body, "Code").unwrap_or_default();
                    if status == reqwest::StatusCode::NOT_FOUND {
                        return Err(failed("not found".into(), false));
                    }
                    let message = match status.as_u16() {
                        403 => format!("permission denied (check the credentials) {code}"),
                        501 => format!("the server does not support this request (501 {code})"),
                        _ => format!("status {} {code}", status.as_u16()),
                    };
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    (message.trim().to_string(), retryable)
                }
                Err(e) => (crate::error::one_line(&e.to_string()), true),
            };
            if !retryable || attempt >= 5 {
                return Err(failed(message, retryable));
            }
            let backoff = 200u64 << attempt.min(5);
            tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{}/{key}", prefix.trim_end_matches('/'))
    }
}

/// Percent-encodes a key for an S3 path, keeping `/`.
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

fn xml_value(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_paths() {
        assert_eq!(encode_key("a b/ç+x.jpg"), "a%20b/%C3%A7%2Bx.jpg");
        assert_eq!(join("", "k"), "k");
        assert_eq!(join("media/", "k"), "media/k");
        assert_eq!(
            xml_value("<Error><Code>NoSuchKey</Code></Error>", "Code").as_deref(),
            Some("NoSuchKey")
        );
    }
}
