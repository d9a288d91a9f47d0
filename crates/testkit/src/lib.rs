//! Real parts for lifeboat's tests and benchmarks: an S3 server on loopback (s3s-fs, in
//! process, with SigV4 authentication) and re-exports of the engine's scratch PostgreSQL
//! cluster. No mocks: the tests talk to these over the network and the socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

pub use lifeboat_core::postgres::cluster::{ClusterOptions, ScratchCluster};
pub use lifeboat_core::postgres::tools::PgTools;

/// An S3 server on 127.0.0.1 storing into a folder; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server in a temporary folder with the given credentials.
    pub fn start(access_key: &str, secret_key: &str) -> S3Server {
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
    ) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(root)?;
        let fs =
            s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let service = builder.build();
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
            _dir: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Creates a bucket (a folder, for s3s-fs).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).expect("bucket folder");
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
