//! A proxy on loopback in front of a real S3 server that misbehaves on demand, as networks
//! and storage endpoints do: it can accept a request and never answer, answer the headers and
//! stall the body, drip the body a few bytes at a time, break the connection midway, cut the
//! body short of its length, or answer an error status, for the requests that match a rule
//! (a method, a piece of the path, the first N of them). Rules change while a test runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::sync::oneshot;

/// What the proxy does to a request that matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Accepts the request and never answers.
    Hang,
    /// Answers this status with an S3 error document of this code (`SlowDown`, ...).
    Status(u16, &'static str),
    /// Answers the headers and the first `after` bytes of the body, then nothing more.
    StallBody { after: usize },
    /// Answers the body `bytes` at a time, `every` apart.
    Drip { bytes: usize, every: Duration },
    /// Answers the headers and the first `after` bytes, then breaks the connection.
    Reset { after: usize },
    /// Answers `keep` bytes of the body and ends it, short of its announced length.
    Truncate { keep: usize },
}

/// Which requests a fault applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Only this method (`GET`, `PUT`...).
    pub method: Option<&'static str>,
    /// Only paths that contain this.
    pub path_contains: Option<String>,
    /// Only the first so many matching requests; `None`: all of them.
    pub times: Option<u32>,
    pub fault: Fault,
}

impl Rule {
    /// `fault` for every request.
    pub fn all(fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            times: None,
            fault,
        }
    }

    pub fn method(mut self, method: &'static str) -> Rule {
        self.method = Some(method);
        self
    }

    pub fn path(mut self, contains: &str) -> Rule {
        self.path_contains = Some(contains.to_string());
        self
    }

    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &hyper::Method, path: &str) -> bool {
        self.method.is_none_or(|m| method.as_str() == m)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self.times != Some(0)
    }
}

type Rules = Arc<Mutex<Vec<Rule>>>;

/// The proxy; stopped when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: give this to lifeboat as the endpoint.
    pub endpoint: String,
    rules: Rules,
    faulted: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://host:port`), passing everything through until
    /// rules are set.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let local: SocketAddr = listener.local_addr().expect("proxy address");
        let rules: Rules = Arc::default();
        let faulted = Arc::new(AtomicU64::new(0));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = (rules.clone(), faulted.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("proxy client");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stop_rx => break,
                    };
                    let _ = socket.set_nodelay(true);
                    let (rules, faulted) = shared.clone();
                    let upstream = upstream.clone();
                    let client = client.clone();
                    let service = hyper::service::service_fn(move |req| {
                        proxy(
                            req,
                            client.clone(),
                            upstream.clone(),
                            rules.clone(),
                            faulted.clone(),
                        )
                    });
                    let conn = http
                        .serve_connection(TokioIo::new(socket), service)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        FaultProxy {
            endpoint: format!("http://{local}"),
            rules,
            faulted,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Replaces the rules (the first that matches a request applies).
    pub fn set(&self, rules: Vec<Rule>) {
        *self.rules.lock().expect("rules") = rules;
    }

    /// Passes everything through again.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Requests a fault was applied to so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The fault for a request, if a rule matches (counting it against the rule's `times`).
fn fault_for(rules: &Rules, method: &hyper::Method, path: &str) -> Option<Fault> {
    let mut rules = rules.lock().expect("rules");
    let rule = rules.iter_mut().find(|r| r.matches(method, path))?;
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

async fn proxy(
    req: hyper::Request<hyper::body::Incoming>,
    client: reqwest::Client,
    upstream: String,
    rules: Rules,
    faulted: Arc<AtomicU64>,
) -> Result<hyper::Response<Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let fault = fault_for(&rules, req.method(), &path);
    if fault.is_some() {
        faulted.fetch_add(1, Ordering::Relaxed);
    }
    match &fault {
        Some(Fault::Hang) => {
            // Never answered; the body is left unread.
            futures::future::pending::<()>().await;
        }
        Some(Fault::Status(status, code)) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
            );
            let response = hyper::Response::builder()
                .status(*status)
                .header("content-type", "application/xml")
                .body(full(Bytes::from(body)))
                .expect("a plain response");
            return Ok(response);
        }
        _ => {}
    }
    // Passed on as it came: its signature covers its host and headers.
    let (parts, body) = req.into_parts();
    let url = format!("{upstream}{path}");
    let mut forward = client.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    // Whole, with its length (S3 wants one on some requests); bodies here are small.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(hyper::Response::builder()
                .status(400)
                .body(full(Bytes::from_static(b"proxy: broken request body")))
                .expect("a plain response"))
        }
    };
    let answer = match forward.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            let response = hyper::Response::builder()
                .status(502)
                .body(full(Bytes::from(format!("proxy: {e}"))))
                .expect("a plain response");
            return Ok(response);
        }
    };
    let mut response = hyper::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let upstream_body = answer
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let body: futures::stream::BoxStream<'static, std::io::Result<Bytes>> = match fault {
        None | Some(Fault::Hang) | Some(Fault::Status(..)) => upstream_body.boxed(),
        Some(Fault::StallBody { after }) => first_bytes(upstream_body, after)
            .chain(futures::stream::pending())
            .boxed(),
        Some(Fault::Reset { after }) => first_bytes(upstream_body, after)
            .chain(futures::stream::once(async {
                Err(std::io::Error::other(
                    "connection broken by the fault proxy",
                ))
            }))
            .boxed(),
        Some(Fault::Truncate { keep }) => first_bytes(upstream_body, keep).boxed(),
        Some(Fault::Drip { bytes, every }) => upstream_body
            .flat_map(move |chunk| {
                let pieces: Vec<std::io::Result<Bytes>> = match chunk {
                    Ok(chunk) => chunk
                        .chunks(bytes.max(1))
                        .map(|p| Ok(Bytes::copy_from_slice(p)))
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(pieces)
            })
            .then(move |piece| async move {
                tokio::time::sleep(every).await;
                piece
            })
            .boxed(),
    };
    let body = BodyExt::boxed_unsync(StreamBody::new(body.map(|chunk| chunk.map(Frame::data))));
    Ok(response.body(body).expect("a proxied response"))
}

/// The first `n` bytes of a body.
fn first_bytes(
    body: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    n: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold((Box::pin(body), n), |(mut body, left)| async move {
        if left == 0 {
            return None;
        }
        match body.next().await? {
            Ok(mut chunk) => {
                chunk.truncate(left);
                let left = left - chunk.len();
                Some((Ok(chunk), (body, left)))
            }
            Err(e) => Some((Err(e), (body, 0))),
        }
    })
}
