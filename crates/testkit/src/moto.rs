//! A second S3 server, for what s3s-fs ignores: `moto` in server mode (Python, from PyPI:
//! `pip install "moto[server]"`), which keeps storage classes, refuses to read an object in
//! GLACIER until it is restored, and serves restore requests (at once). Started as a child
//! process on a free loopback port, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MotoServer {
    pub endpoint: String,
    child: Child,
}

impl MotoServer {
    /// Starts `moto_server`; panics with how to install it when it is missing.
    pub fn start() -> MotoServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): install it with `pip install \"moto[server]\"` (scripts/test does)")
            });
        let server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let begun = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                begun.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Runs Python with boto3 (which moto brings) against this server: `code` sees `s3`.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='moto', \
             aws_secret_access_key='moto-secret', region_name='us-east-1')\n{code}\n",
            self.endpoint
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "python against moto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!("s3.create_bucket(Bucket='{bucket}')"));
    }

    /// A bucket with Object Lock enabled (and so versions kept).
    pub fn create_locked_bucket(&self, bucket: &str) {
        self.python(&format!(
            "s3.create_bucket(Bucket='{bucket}', ObjectLockEnabledForBucket=True)"
        ));
    }

    /// An object's lock, as `MODE UNTIL` (RFC 3339), or `none`.
    pub fn lock(&self, bucket: &str, key: &str) -> String {
        self.python(&format!(
            "h = s3.head_object(Bucket='{bucket}', Key='{key}')\n\
             print(h['ObjectLockMode'] + ' ' + h['ObjectLockRetainUntilDate'].strftime('%Y-%m-%dT%H:%M:%SZ') if 'ObjectLockMode' in h else 'none')"
        ))
    }

    /// Every version of `key` (delete markers as `marker:ID`), newest first.
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let out = self.python(&format!(
            "r = s3.list_object_versions(Bucket='{bucket}', Prefix='{key}')\n\
             entries = [(v['LastModified'], v['VersionId']) for v in r.get('Versions', []) if v['Key'] == '{key}']\n\
             entries += [(m['LastModified'], 'marker:' + m['VersionId']) for m in r.get('DeleteMarkers', []) if m['Key'] == '{key}']\n\
             print(' '.join(v for _, v in sorted(entries, reverse=True)))"
        ));
        out.split_whitespace().map(str::to_string).collect()
    }

    /// The storage class of an object, as the server keeps it (`STANDARD` when unset).
    pub fn storage_class(&self, bucket: &str, key: &str) -> String {
        self.python(&format!(
            "print(s3.head_object(Bucket='{bucket}', Key='{key}').get('StorageClass', 'STANDARD'))"
        ))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
