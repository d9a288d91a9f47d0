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

use crate::config::Timeouts;

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
    /// A longer-lived count that every request also adds to (the daemon's, since it started).
    within: Option<Arc<Requests>>,
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
    /// A count whose requests also add to `total`.
    pub fn within(total: Arc<Requests>) -> Requests {
        Requests {
            within: Some(total),
            ..Requests::default()
        }
    }

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
        if let Some(total) = &self.within {
            total.count(method, uri, headers);
        }
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
}
