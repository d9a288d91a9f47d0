//! The one HTTP client every S3 request goes through, OpenDAL's and lifeboat's own: where its
//! timeouts are set, and where requests are counted by kind.
//!
//! Timeouts, as `[repository] timeouts` (and each bucket's) configure them:
//! - `connect`: reaching the endpoint (TCP and TLS);
//! - `io`: the most time without a byte, from the request sent to the last byte of the answer
//!   (pgBackRest's `io-timeout`): an endpoint that accepts and never answers, or stops midway;
//! - `request`: the most one request may take in all, which a server dripping its answer a
//!   byte at a time cannot stretch. Every request is bounded in size (reads are ranged, uploads
//!   go in parts), so this bounds everything.
//!
//! Retries of a failed request come on top, with a deadline of their own per operation
//! ([`super::layers`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long storage requests may take (`[repository.timeouts]`, `[objects.NAME.*.timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Seconds to reach the endpoint.
    pub connect_secs: u64,
    /// Seconds without a byte received before a request fails.
    pub io_secs: u64,
    /// Seconds one request may take in all; also the most one operation may take with its
    /// retries.
    pub request_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_secs: 10,
            io_secs: 60,
            request_secs: 300,
        }
    }
}

impl Timeouts {
    pub fn request(&self) -> Duration {
        Duration::from_secs(self.request_secs)
    }

    pub fn check(&self, key: &str) -> std::result::Result<(), String> {
        if self.connect_secs == 0 || self.io_secs == 0 || self.request_secs == 0 {
            return Err(format!("`{key}` timeouts must be at least 1 second"));
        }
        if self.io_secs > self.request_secs {
            return Err(format!(
                "`{key}.io_secs` ({}) is longer than `request_secs` ({}): a request could never wait that long",
                self.io_secs, self.request_secs
            ));
        }
        Ok(())
    }
}

/// Requests sent, by kind, counted as they are sent.
#[derive(Debug, Default)]
pub struct Requests {
    list: AtomicU64,
    head: AtomicU64,
    get: AtomicU64,
    put: AtomicU64,
    copy: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
}

/// Requests sent, by kind, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub list: u64,
    pub head: u64,
    pub get: u64,
    pub put: u64,
    pub copy: u64,
    pub delete: u64,
    #[serde(default)]
    pub other: u64,
    pub total: u64,
}

impl Requests {
    /// Counts one request by what it is: a listing, a HEAD, a GET, a server-side copy, an
    /// upload (a PUT or a multipart POST), a deletion, or another (lifecycle rules).
    pub fn count(&self, method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) {
        let query = uri.query().unwrap_or("");
        let counter = match *method {
            http::Method::GET if query.contains("list-type") || query.contains("delimiter") => {
                &self.list
            }
            http::Method::GET if query.contains("lifecycle") => &self.other,
            http::Method::GET => &self.get,
            http::Method::HEAD => &self.head,
            http::Method::PUT if headers.contains_key("x-amz-copy-source") => &self.copy,
            http::Method::PUT if query.contains("lifecycle") => &self.other,
            http::Method::PUT | http::Method::POST => &self.put,
            http::Method::DELETE => &self.delete,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> RequestCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counts = RequestCounts {
            list: load(&self.list),
            head: load(&self.head),
            get: load(&self.get),
            put: load(&self.put),
            copy: load(&self.copy),
            delete: load(&self.delete),
            other: load(&self.other),
            total: 0,
        };
        counts.total = counts.list
            + counts.head
            + counts.get
            + counts.put
            + counts.copy
            + counts.delete
            + counts.other;
        counts
    }
}

/// The client, with the timeouts.
pub fn client(timeouts: &Timeouts) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(timeouts.connect_secs))
        .read_timeout(Duration::from_secs(timeouts.io_secs))
        .timeout(timeouts.request())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client with rustls builds")
}

/// OpenDAL's requests, counted, then sent with [`client`].
pub struct Fetcher {
    pub client: reqwest::Client,
    pub requests: Arc<Requests>,
}

impl opendal::raw::HttpFetch for Fetcher {
    async fn fetch(
        &self,
        req: http::Request<opendal::Buffer>,
    ) -> opendal::Result<http::Response<opendal::raw::HttpBody>> {
        self.requests.count(req.method(), req.uri(), req.headers());
        opendal::raw::HttpFetch::fetch(&self.client, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind() {
        let requests = Requests::default();
        let count = |method: http::Method, uri: &str, copy: bool| {
            let mut headers = http::HeaderMap::new();
            if copy {
                headers.insert("x-amz-copy-source", "/b/k".parse().unwrap());
            }
            requests.count(&method, &uri.parse().unwrap(), &headers);
        };
        count(http::Method::GET, "http://h/b?list-type=2&prefix=x", false);
        count(http::Method::GET, "http://h/b/k", false);
        count(http::Method::HEAD, "http://h/b/k", false);
        count(
            http::Method::PUT,
            "http://h/b/k?partNumber=1&uploadId=u",
            false,
        );
        count(http::Method::POST, "http://h/b/k?uploads", false);
        count(http::Method::PUT, "http://h/b/k", true);
        count(http::Method::DELETE, "http://h/b/k", false);
        count(http::Method::PUT, "http://h/b?lifecycle", false);
        let counts = requests.counts();
        assert_eq!(
            (
                counts.list,
                counts.get,
                counts.head,
                counts.put,
                counts.copy,
                counts.delete,
                counts.other
            ),
            (1, 1, 1, 2, 1, 1, 1)
        );
        assert_eq!(counts.total, 8);
    }

    #[test]
    fn timeouts_are_checked() {
        assert!(Timeouts::default().check("t").is_ok());
        let bad = Timeouts {
            io_secs: 600,
            ..Timeouts::default()
        };
        assert!(bad.check("t").unwrap_err().contains("longer than"));
    }
}
