//! The S3 requests OpenDAL does not make: server-side copies (into another key, or onto itself
//! to change the storage class), bucket lifecycle rules, and GETs whose response headers are
//! wanted (an object copied through this machine keeps its content type and user metadata).
//!
//! Every request is signed in one place ([`S3Api::send`]), sent by the shared client (its
//! timeouts, its request counts), retried by the one policy, and its error read with an XML
//! parser. Reads go by ranges of a bounded size, each fetched whole before it is handed on,
//! so a range that breaks off or comes short is simply asked again.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use super::call::{S3Call, S3Reply};
use crate::error::{one_line, Error, Result, StorageFailure};
use crate::storage::backend::{ByteStream, CopyOptions, ObjectMeta, S3Account};
use crate::storage::client::Requests;
use crate::storage::ranges::{fetch_ranges, read_ranges, FIRST_READ};
use crate::storage::retry::{status_is_retryable, RetryPolicy};
use http::HeaderName;

/// S3's limit for a copy in one request.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;

#[derive(Debug, Clone)]
pub struct S3Api {
    account: S3Account,
    client: reqwest::Client,
    requests: Arc<Requests>,
    policy: RetryPolicy,
    /// `s3://bucket/prefix`, for messages.
    location: String,
    keys: Arc<crate::storage::credentials::Keys>,
}

/// An S3 error document (`<Error><Code>..</Code><Message>..</Message></Error>`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorXml {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

pub(crate) fn error_code(body: &str) -> Option<(String, Option<String>)> {
    quick_xml::de::from_str::<ErrorXml>(body)
        .ok()
        .map(|e| (e.code, e.message))
}

/// Percent-encodes a key for an S3 path, keeping `/`.
pub(crate) fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

impl S3Api {
    pub fn new(
        account: S3Account,
        client: reqwest::Client,
        requests: Arc<Requests>,
        policy: RetryPolicy,
        location: String,
        keys: Arc<crate::storage::credentials::Keys>,
    ) -> S3Api {
        S3Api {
            account,
            client,
            requests,
            policy,
            location,
            keys,
        }
    }

    /// Where this account's keys come from.
    pub fn key_source(&self) -> &crate::storage::credentials::KeySource {
        self.keys.source()
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.account.bucket
    }

    /// A key below the prefix, as the bucket names it.
    pub(crate) fn full_key(&self, key: &str) -> String {
        self.account.full_key(key)
    }

    /// A bucket's key as the repository names it (below the prefix).
    pub(crate) fn relative_key(&self, full: &str) -> String {
        let prefix = &self.account.prefix;
        if prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(prefix.as_str())
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    pub(crate) fn display(&self, key: &str) -> String {
        format!("{}/{key}", self.location.trim_end_matches('/'))
    }

    /// A URL of the bucket: the endpoint with the bucket as the path's first part, or in the
    /// host name.
    pub(crate) fn url(&self, path_and_query: &str) -> Result<reqwest::Url> {
        let bucket = &self.account.bucket;
        let access = &self.account.access;
        let text = match (&access.endpoint, access.path_style) {
            (Some(endpoint), true) => {
                format!(
                    "{}/{bucket}{path_and_query}",
                    endpoint.trim_end_matches('/')
                )
            }
            (Some(endpoint), false) => {
                let (scheme, host) = endpoint
                    .trim_end_matches('/')
                    .split_once("://")
                    .unwrap_or(("https", endpoint));
                format!("{scheme}://{bucket}.{host}{path_and_query}")
            }
            (None, _) => format!(
                "https://s3.{}.amazonaws.com/{bucket}{path_and_query}",
                access.signing_region()
            ),
        };
        text.parse().map_err(|e| {
            Error::Config(format!(
                "cannot make a request URL for `{}`: {e}",
                self.location
            ))
        })
    }

    pub(crate) fn object_url(&self, key: &str) -> Result<reqwest::Url> {
        self.url(&format!("/{}", encode_key(&self.account.full_key(key))))
    }

    /// An object's response headers (of `version`, else the current one), by a HEAD;
    /// `None` if it does not exist. `op` names the request in errors.
    pub(crate) async fn head(
        &self,
        key: &str,
        version: Option<&str>,
        op: &'static str,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let display = self.display(key);
        let mut url = self.object_url(key)?;
        if let Some(version) = version {
            url.set_query(Some(&format!("versionId={}", encode_query(version))));
        }
        let request = Request {
            op,
            display: &display,
            method: reqwest::Method::HEAD,
            url,
            headers: &[],
            body: None,
        };
        match self.send(&request).await {
            Ok(response) => Ok(Some(
                response
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect(),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends an XML body (a configuration, a restore or retention request) with the
    /// Content-MD5 S3 asks for on such requests.
    pub(crate) async fn send_xml(
        &self,
        op: &'static str,
        display: &str,
        method: reqwest::Method,
        url: reqwest::Url,
        body: String,
    ) -> Result<reqwest::Response> {
        use base64::Engine;
        use md5::Digest;
        let headers = [
            (name("content-type"), "application/xml".to_string()),
            (
                name("content-md5"),
                base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes())),
            ),
        ];
        self.send(&Request {
            op,
            display,
            method,
            url,
            headers: &headers,
            body: Some(Bytes::from(body)),
        })
        .await
    }

    /// Sends a request, retrying what may pass (signed anew for each try).
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<reqwest::Response> {
        self.policy
            .run(&format!("{} `{}`", request.op, request.display), |_| {
                self.send_once(request)
            })
            .await
    }

    /// Sends one signed request; a failure status is an error of its kind, with S3's code.
    async fn send_once(&self, r: &Request<'_>) -> Result<reqwest::Response> {
        let failed = |kind: StorageFailure, message: String| Error::Storage {
            op: r.op,
            path: r.display.to_string(),
            kind,
            message,
        };
        let mut request = reqwest::Request::new(r.method.clone(), r.url.clone());
        for (name, value) in r.headers {
            let value = value
                .parse()
                .map_err(|_| failed(StorageFailure::Refused, format!("bad header `{name}`")))?;
            request.headers_mut().insert(name.clone(), value);
        }
        match &r.body {
            Some(body) => {
                request
                    .headers_mut()
                    .insert(reqwest::header::CONTENT_LENGTH, body.len().into());
                *request.body_mut() = Some(body.clone().into());
            }
            None if request.method() == reqwest::Method::PUT => {
                request
                    .headers_mut()
                    .insert(reqwest::header::CONTENT_LENGTH, 0.into());
            }
            None => {}
        }
        let credential = self.keys.get().await?;
        reqsign::AwsV4Signer::new("s3", self.account.access.signing_region())
            .sign(&mut request, &credential)
            .map_err(|e| {
                failed(
                    StorageFailure::Refused,
                    format!("cannot sign the request: {e}"),
                )
            })?;
        if let Ok(uri) = request.url().as_str().parse::<http::Uri>() {
            self.requests
                .count(request.method(), &uri, request.headers());
        }
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| sent_failure(&e, r.op, r.display))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let (code, detail) = error_code(&body).unwrap_or_default();
        let kind = match status.as_u16() {
            404 => StorageFailure::NotFound,
            403 => StorageFailure::Denied,
            409 | 412 => StorageFailure::Conflict,
            s if status_is_retryable(s) => StorageFailure::Unavailable,
            _ => StorageFailure::Refused,
        };
        let message = match kind {
            StorageFailure::NotFound => "not found".to_string(),
            StorageFailure::Denied => format!("permission denied (check the credentials) {code}"),
            _ if status.as_u16() == 501 => {
                format!("the server does not support this request (501 {code})")
            }
            _ => format!(
                "status {} {code}{}",
                status.as_u16(),
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
        };
        Err(failed(kind, message.trim().to_string()))
    }

    /// An object by [`read_ranges`], several at a time ([`fetch_ranges`]), the first of which gives
    /// its headers (one request for a small object); later ranges must come from the same
    /// version (`If-Match`). `None` if it does not exist.
    pub async fn get_object(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        let display = self.display(key);
        let url = self.object_url(key)?;
        let first_range = [(name("range"), format!("bytes=0-{}", FIRST_READ - 1))];
        let first = self
            .policy
            .run(&format!("reading `{display}`"), |_| async {
                let ranged = Request::get(&display, url.clone(), &first_range);
                let response = match self.send_once(&ranged).await {
                    // An empty object has no byte 0.
                    Err(Error::Storage { message, .. }) if message.contains("InvalidRange") => {
                        self.send_once(&Request::get(&display, url.clone(), &[]))
                            .await?
                    }
                    other => other?,
                };
                let head = response_meta(key, &response);
                let bytes = body_of(response, &display).await?;
                Ok((head, bytes))
            })
            .await;
        let ((meta, partial), first_bytes) = match first {
            Ok(first) => first,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let got = first_bytes.len() as u64;
        let size = meta.size;
        if !partial || got >= size {
            return Ok(Some((
                meta,
                futures::stream::iter([Ok(first_bytes)]).boxed(),
            )));
        }
        let rest = Arc::new(RangedRest {
            api: self.clone(),
            url,
            display,
            etag: meta.etag.clone(),
        });
        // After what the first request got (all of the first range, unless a server cut it).
        let ranges = read_ranges(size)
            .skip_while(move |r| r.end <= got)
            .map(move |r| r.start.max(got)..r.end);
        let first = futures::stream::iter([Ok(first_bytes)]);
        let stream = first
            .chain(fetch_ranges(ranges, move |range| {
                let rest = Arc::clone(&rest);
                async move { rest.fetch(range).await.map(std::iter::once) }
            }))
            .boxed();
        Ok(Some((meta, stream)))
    }

    /// Copies `from` of `source` (an account this one shares) to `to` here, by the server;
    /// with `copy_metadata`, onto itself (to change its storage class).
    pub async fn copy_object(
        &self,
        source: &S3Account,
        from: &str,
        to: &str,
        options: &CopyOptions,
        copy_metadata: bool,
    ) -> Result<()> {
        let copy_source = format!("/{}/{}", source.bucket, encode_key(&source.full_key(from)));
        let mut headers = vec![(name("x-amz-copy-source"), copy_source)];
        if let Some(etag) = &options.etag {
            headers.push((name("x-amz-copy-source-if-match"), format!("\"{etag}\"")));
        }
        if let Some(class) = &options.storage_class {
            headers.push((name("x-amz-storage-class"), class.clone()));
        }
        if copy_metadata {
            headers.push((name("x-amz-metadata-directive"), "COPY".to_string()));
        }
        let display = format!("{} to {}", self.display(from), self.display(to));
        let response = self
            .send(&Request {
                op: "copying",
                display: &display,
                method: reqwest::Method::PUT,
                url: self.object_url(to)?,
                headers: &headers,
                body: None,
            })
            .await?;
        // S3 can answer 200 and still report an error in the body.
        let body = response.text().await.unwrap_or_default();
        if let Some((code, detail)) = error_code(&body) {
            return Err(Error::Storage {
                op: "copying",
                path: display,
                kind: StorageFailure::Unavailable,
                message: format!(
                    "{code}{}",
                    detail.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            });
        }
        Ok(())
    }

    /// The bucket's lifecycle configuration, replaced first by `replace` when given.
    pub async fn lifecycle(&self, replace: Option<String>) -> Result<Option<String>> {
        let display = format!("s3://{}?lifecycle", self.account.bucket);
        let url = self.url("?lifecycle")?;
        if let Some(xml) = replace {
            self.send_xml("writing", &display, reqwest::Method::PUT, url.clone(), xml)
                .await?;
        }
        match self.send(&Request::get(&display, url, &[])).await {
            Ok(response) => Ok(Some(response.text().await.unwrap_or_default())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One request to send.
impl S3Api {
    /// Answers one of the S3 extras for the bucket of `account`.
    pub async fn call(&self, account: &S3Account, call: S3Call) -> Result<S3Reply> {
        Ok(match call {
            S3Call::SetClass { key, class } => {
                let options = CopyOptions {
                    size: 0,
                    etag: None,
                    storage_class: Some(class),
                    part_size: 0,
                };
                self.copy_object(account, &key, &key, &options, true)
                    .await?;
                S3Reply::Done
            }
            S3Call::Lifecycle { replace } => S3Reply::Lifecycle(self.lifecycle(replace).await?),
            S3Call::Readiness { key } => S3Reply::Readiness(self.readiness(&key).await?),
            S3Call::RequestRestore { key, days, tier } => {
                self.request_restore(&key, days, &tier).await?;
                S3Reply::Done
            }
            S3Call::HoldEnabled => S3Reply::Enabled(self.lock_enabled().await?),
            S3Call::Hold { key } => S3Reply::Hold(self.retention(&key, None).await?),
            S3Call::SetHold { key, mode, until } => {
                self.set_retention(&key, mode, until).await?;
                S3Reply::Done
            }
            S3Call::DeleteVersions { key } => S3Reply::Deletion(self.delete_versions(&key).await?),
            S3Call::Hidden { prefix, show } => S3Reply::Keys(self.hidden(&prefix, show).await?),
        })
    }
}

pub(crate) struct Request<'a> {
    pub op: &'static str,
    pub display: &'a str,
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: &'a [(HeaderName, String)],
    pub body: Option<Bytes>,
}

/// A header name known to be valid.
pub(crate) fn name(text: &'static str) -> HeaderName {
    HeaderName::from_static(text)
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl<'a> Request<'a> {
    fn get(display: &'a str, url: reqwest::Url, headers: &'a [(HeaderName, String)]) -> Self {
        Request {
            op: "reading",
            display,
            method: reqwest::Method::GET,
            url,
            headers,
            body: None,
        }
    }
}

/// The ranges of an object after the first.
struct RangedRest {
    api: S3Api,
    url: reqwest::Url,
    display: String,
    etag: Option<String>,
}

impl RangedRest {
    /// A range, whole: a range that breaks off or comes short is asked again.
    async fn fetch(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        let mut headers = vec![(
            name("range"),
            format!("bytes={}-{}", range.start, range.end - 1),
        )];
        if let Some(etag) = &self.etag {
            headers.push((name("if-match"), format!("\"{etag}\"")));
        }
        let wanted = range.end - range.start;
        self.api
            .policy
            .run(&format!("reading `{}`", self.display), |_| async {
                let request = Request::get(&self.display, self.url.clone(), &headers);
                let response = self.api.send_once(&request).await?;
                let bytes = body_of(response, &self.display).await?;
                if bytes.len() as u64 != wanted {
                    return Err(Error::Storage {
                        op: "reading",
                        path: self.display.clone(),
                        kind: StorageFailure::Unavailable,
                        message: format!("got {} bytes of a {wanted}-byte range", bytes.len()),
                    });
                }
                Ok(bytes)
            })
            .await
    }
}

/// The error of a request that got no answer, or broke off.
fn sent_failure(e: &reqwest::Error, op: &'static str, display: &str) -> Error {
    let timeout = e.is_timeout();
    Error::Storage {
        op,
        path: display.to_string(),
        kind: if timeout {
            StorageFailure::Timeout
        } else {
            StorageFailure::Unavailable
        },
        message: if timeout {
            "timed out: see `[repository.timeouts]`".to_string()
        } else {
            one_line(&chain(e))
        },
    }
}

/// What a GET's headers say of the object (its size is the whole object's), and whether
/// the answer is one range of it.
fn response_meta(key: &str, response: &reqwest::Response) -> (ObjectMeta, bool) {
    let headers = response.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let partial = response.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let size = if partial {
        header("content-range")
            .and_then(|r| r.rsplit_once('/').and_then(|(_, total)| total.parse().ok()))
    } else {
        header("content-length").and_then(|v| v.parse().ok())
    }
    .unwrap_or(0);
    let meta = ObjectMeta {
        key: key.to_string(),
        size,
        etag: header("etag").map(|e| e.trim_matches('"').to_string()),
        modified: header("last-modified")
            .and_then(|t| jiff::fmt::rfc2822::parse(&t).ok())
            .map(|z| z.timestamp()),
        content_type: header("content-type"),
        user_metadata: headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect::<BTreeMap<_, _>>(),
    };
    (meta, partial)
}

/// A response's whole body; one that breaks off or comes short of its length is an error
/// worth trying again.
async fn body_of(response: reqwest::Response, display: &str) -> Result<Bytes> {
    let expected = response.content_length();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| sent_failure(&e, "reading", display))?;
    match expected {
        Some(n) if n != bytes.len() as u64 => Err(Error::Storage {
            op: "reading",
            path: display.to_string(),
            kind: StorageFailure::Unavailable,
            message: format!("got {} bytes of {n}", bytes.len()),
        }),
        _ => Ok(bytes),
    }
}

/// An error and its causes, as one line of text.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_and_errors_read() {
        assert_eq!(encode_key("a b/ç+x.jpg"), "a%20b/%C3%A7%2Bx.jpg");
        assert_eq!(
            error_code("<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone</Message><Key>k</Key></Error>"),
            Some(("NoSuchKey".into(), Some("gone".into())))
        );
        assert_eq!(
            error_code("<CopyObjectResult><ETag>x</ETag></CopyObjectResult>"),
            None
        );
    }
}
