//! Real parts for lifeboat's tests and benchmarks: an S3 server on loopback (s3s-fs, in
//! process, with SigV4 authentication) and re-exports of the engine's scratch PostgreSQL
//! cluster. No mocks: the tests talk to these over the network and the socket.
//!
//! s3s-fs checks `If-None-Match` and `If-Match` before it writes, apart from the write, so
//! two conditional PUTs of one key could both pass. AWS S3 and Cloudflare R2 decide them
//! atomically; so does this server, which runs conditional PUTs one at a time.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

pub mod faults;
mod link;
pub mod moto;

pub use faults::{Fault, FaultProxy, Rule};
pub use lifeboat_core::postgres::cluster::{ClusterOptions, ScratchCluster};
pub use lifeboat_core::process::tools::PgTools;
pub use link::LinkOptions;
pub use moto::MotoServer;

/// Requests the server refuses on purpose, to test how clients cope.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Requests on keys containing this always get `500 Internal Error`.
    pub broken: Option<String>,
    /// Requests on keys containing this get `503 Slow Down` the first time they are made.
    pub flaky: Option<String>,
}

/// How a server behaves besides serving: faults to inject and a log of requests.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub faults: Faults,
    /// Appends `MILLIS METHOD PATH?QUERY` per request to this file.
    pub log: Option<PathBuf>,
    /// Serves as through a link of this bandwidth and delay rather than loopback's.
    pub link: Option<LinkOptions>,
}

/// Wraps the S3 service with the faults and the request log.
#[derive(Clone)]
struct Wrapped {
    inner: s3s::service::S3Service,
    faults: Arc<Faults>,
    seen: Arc<Mutex<std::collections::HashSet<String>>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
    count: Arc<AtomicU64>,
    /// Held while a conditional PUT runs, so that its check and its write are one step.
    conditional: Arc<tokio::sync::Mutex<()>>,
    /// The link's delay before each request is served.
    latency: std::time::Duration,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Wrapped {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.count.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_string();
        if let Some(log) = &self.log {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            let line = format!(
                "{millis} {} {}\n",
                req.method(),
                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
            );
            let _ = log.lock().expect("log").write_all(line.as_bytes());
        }
        let fail = |status: u16| {
            let response = hyper::Response::builder()
                .status(status)
                .body(s3s::Body::empty())
                .expect("a plain response");
            Box::pin(async move { Ok(response) }) as Self::Future
        };
        if self
            .faults
            .broken
            .as_deref()
            .is_some_and(|b| path.contains(b))
        {
            return fail(500);
        }
        if let Some(flaky) = self.faults.flaky.as_deref() {
            let key = format!("{} {path}", req.method());
            if path.contains(flaky) && self.seen.lock().expect("seen").insert(key) {
                return fail(503);
            }
        }
        let inner = self.inner.clone();
        let conditional = (req.method() == hyper::Method::PUT
            && (req.headers().contains_key("if-none-match")
                || req.headers().contains_key("if-match")))
        .then(|| self.conditional.clone());
        let latency = self.latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let _one_at_a_time = match &conditional {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            hyper::service::Service::call(&inner, req).await
        })
    }
}

/// An S3 server on 127.0.0.1 storing into a folder; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    root: PathBuf,
    count: Arc<AtomicU64>,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server in a temporary folder with the given credentials.
    pub fn start(access_key: &str, secret_key: &str) -> S3Server {
        S3Server::start_with(access_key, secret_key, ServeOptions::default())
    }

    /// Starts a server in a temporary folder that injects `options.faults`.
    pub fn start_with(access_key: &str, secret_key: &str, options: ServeOptions) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-s3-")
            .tempdir()
            .expect("temporary folder for the S3 server");
        let root = dir.path().to_path_buf();
        let mut server = S3Server::serve(
            &root,
            "127.0.0.1:0".parse().unwrap(),
            access_key,
            secret_key,
            options,
        )
        .expect("S3 server starts");
        server._dir = Some(dir);
        server
    }

    /// Serves `root` on `addr` (port 0 picks one) until dropped.
    pub fn serve(
        root: &Path,
        addr: SocketAddr,
        access_key: &str,
        secret_key: &str,
        options: ServeOptions,
    ) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(root)?;
        let fs =
            s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let count = Arc::new(AtomicU64::new(0));
        let log = match &options.log {
            Some(path) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ))),
            None => None,
        };
        let service = Wrapped {
            inner: builder.build(),
            faults: Arc::new(options.faults),
            seen: Arc::default(),
            log,
            count: count.clone(),
            conditional: Arc::default(),
            latency: options.link.map(|l| l.latency).unwrap_or_default(),
        };
        let lanes = options.link.map(link::Lanes::new);
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("S3 server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stop_rx => break,
                    };
                    // As S3 endpoints do: a small answer written in two pieces (headers, then
                    // body) must not wait for the client's delayed ACK (40 ms).
                    let _ = socket.set_nodelay(true);
                    let socket = link::Throttled::new(socket, lanes.clone());
                    let conn = http
                        .serve_connection(TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        Ok(S3Server {
            endpoint: format!("http://{local}"),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            root: root.to_path_buf(),
            count,
            _dir: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Creates a bucket (a folder, for s3s-fs).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).expect("bucket folder");
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn operator(&self, bucket: &str) -> opendal::Operator {
        let builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&self.endpoint)
            .region("us-east-1")
            .access_key_id(&self.access_key)
            .secret_access_key(&self.secret_key)
            .disable_config_load()
            .disable_ec2_metadata();
        opendal::Operator::new(builder).expect("operator").finish()
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    /// Puts an object through the S3 API, with a content type and user metadata.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Vec<u8>,
        content_type: Option<&str>,
        metadata: &[(&str, &str)],
    ) {
        let op = self.operator(bucket);
        let meta: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Server::block_on(async {
            let mut write = op.write_with(key, data);
            if let Some(ct) = content_type {
                write = write.content_type(ct);
            }
            if !meta.is_empty() {
                write = write.user_metadata(meta);
            }
            write.await.expect("put object");
        });
    }

    /// An object's bytes, content type and user metadata, through the S3 API.
    pub fn get(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        let op = self.operator(bucket);
        S3Server::block_on(async {
            let meta = match op.stat(key).await {
                Ok(meta) => meta,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return None,
                Err(e) => panic!("stat {key}: {e}"),
            };
            let data = op.read(key).await.expect("read object").to_vec();
            Some(StoredObject {
                data,
                content_type: meta.content_type().map(str::to_string),
                metadata: meta.user_metadata().cloned().unwrap_or_default(),
            })
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let op = self.operator(bucket);
        S3Server::block_on(async { op.delete(key).await.expect("delete object") });
    }

    /// The folder behind the server: `<root>/<bucket>/<key>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every stored file under a bucket, as keys (sorted), leaving out s3s-fs's own files.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        files_under(&self.root.join(bucket))
            .into_iter()
            .filter(|key| !key.starts_with(".s3s") && !key.contains("/.s3s"))
            .collect()
    }
}

/// An object as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// Every file below `root`, as paths relative to it, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    files
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
