//! The daily job, the run lock, notifications, the daemon and status, end to end: a run with a
//! failing step that still backs up the bucket and tells a local webhook; two runs at once; a
//! stale lock; a daemon stopped in the middle of a backup; status on a fresh, a healthy and a
//! stale repository.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_testkit::Faults;
use serde_json::Value;

use crate::objects::Buckets;
use crate::support::{run_of, wait_until, Env, Repo, TableLock};

/// An HTTP receiver on loopback that answers 200 and keeps `(path, body)` of every request.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let keep = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                keep.lock()
                    .unwrap()
                    .push((path, String::from_utf8_lossy(&body).into_owned()));
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { url, got }
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

#[test]
fn a_failing_step_does_not_stop_the_others_and_is_notified() {
    let b = Buckets::new(Faults::default());
    b.put("cover.jpg", b"a cover");
    let hook = Receiver::start();
    let mut config = std::fs::read_to_string(&b.config).unwrap();
    config.push_str(&format!(
        "[postgres.main]\nurl = \"postgresql://nobody@127.0.0.1:1/yomira\"\n\
         [notify]\nwebhook = \"{0}/hook/secret-token\"\nslack_webhook = \"{0}/slack/secret-token\"\n\
         healthcheck = \"{0}/ping/secret-token\"\n",
        hook.url
    ));
    std::fs::write(&b.config, config).unwrap();
    assert_eq!(b.lifeboat(&["init"]).code, 0);

    let out = b.lifeboat(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("job `daily`: 1 of 3 steps failed: backup db main"),
        "{}",
        out.stderr
    );
    // The bucket was backed up all the same.
    let runs = b.json(&["list", "objects"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);

    let got = hook.requests();
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/ping/secret-token/start",
            "/ping/secret-token/fail",
            "/slack/secret-token",
            "/hook/secret-token"
        ]
    );
    let slack: Value = serde_json::from_str(&got[2].1).unwrap();
    assert!(slack["text"]
        .as_str()
        .unwrap()
        .contains("1 of 3 steps FAILED"));
    let report: Value = serde_json::from_str(&got[3].1).unwrap();
    assert_eq!(report["ok"], false);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step"], "backup db main");
    assert_eq!(steps[0]["ok"], false);
    assert_eq!(steps[1]["step"], "backup objects media");
    assert_eq!(steps[1]["ok"], true);
    assert_eq!(steps[2]["step"], "prune");
    // The webhook URLs carry tokens: never logged.
    assert!(!out.stderr.contains("secret-token"), "{}", out.stderr);
}

fn append(env: &Env, text: &str) {
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(text);
    std::fs::write(&env.config, config).unwrap();
}

#[test]
fn one_run_at_a_time_and_a_stale_lock_is_taken_over() {
    let env = Env::new(Repo::Local, false);
    append(&env, "[jobs.dump]\nsteps = [\"backup db\"]\n");
    let lock_path = env.repo_path("locks/run.json");

    // A run blocked in its backup holds the lock; a second run says who holds it.
    let lock = TableLock::hold(&env, "core.comic");
    let first = env.start(&["run", "dump"]);
    wait_until(Duration::from_secs(30), "the run lock", || {
        lock_path.exists()
    });
    // A job that cannot start because another run holds the lock: exit 5, like a command.
    let second = env.lifeboat(&["run", "dump"]);
    assert_eq!(second.code, 5, "{}", second.stderr);
    let line = second.error_line();
    assert!(
        line.contains("is busy: job `dump` on") && line.contains(&format!("(pid {})", first.id())),
        "{line}"
    );
    drop(lock);
    let first = run_of(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(!lock_path.exists(), "the lock stays after the run");

    // A lock whose holder died an hour ago is taken over.
    let stale = serde_json::json!({
        "id": "dead", "job": "daily", "host": "gone", "pid": 1,
        "started": "2026-01-01T00:00:00Z", "heartbeat": "2026-01-01T00:00:00Z"
    });
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    std::fs::write(&lock_path, stale.to_string()).unwrap();
    let out = env.lifeboat(&["run", "dump"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("taking over the run lock of `daily` on `gone`"),
        "{}",
        out.stderr
    );
    assert!(!lock_path.exists());
}

pub fn get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// Configures a `nightly` job (a dump at 2 a.m.) and the daemon's `[daemon]` section with
/// `settings` and a free loopback address to listen on; that address.
pub fn nightly_daemon(env: &Env, settings: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    append(
        env,
        &format!(
            "[jobs.nightly]\nsteps = [\"backup db\"]\nschedule = \"0 2 * * *\"\n\
             [daemon]\nlisten = \"{address}\"\n{settings}\n"
        ),
    );
    address
}

#[test]
fn the_daemon_stops_cleanly_in_the_middle_of_a_backup() {
    let env = Env::new(Repo::Local, false);
    let address = nightly_daemon(&env, "time_zone = \"Asia/Jakarta\"");
    let lock = TableLock::hold(&env, "core.comic");
    let daemon = env.start(&["daemon", "--run-at-start"]);
    let lock_path = env.repo_path("locks/run.json");
    wait_until(Duration::from_secs(30), "the nightly run", || {
        lock_path.exists()
    });
    assert_eq!(get(&address, "/healthz").lines().last(), Some("ok"));
    // The status is collected as the daemon starts, beside the run.
    wait_until(Duration::from_secs(30), "the status in /metrics", || {
        get(&address, "/metrics")
            .contains("lifeboat_objective_breached{kind=\"db\",name=\"main\"} 1")
    });
    std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let out = run_of(daemon.wait_with_output().unwrap());
    drop(lock);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("stopped"), "{}", out.stderr);
    assert!(!lock_path.exists(), "lock left by the stopped daemon");
    // Nothing half-done was committed or left.
    let list = env.lifeboat(&["list", "--json"]);
    assert_eq!(list.stdout.trim(), "[]");
    assert!(
        env.stored_files().iter().all(|f| !f.starts_with("data/")),
        "{:?}",
        env.stored_files()
    );
}

#[test]
fn status_exits_non_zero_on_a_fresh_and_a_stale_repository() {
    let env = Env::new(Repo::Local, false);
    let fresh = env.lifeboat(&["status"]);
    assert_eq!(fresh.code, 4, "{}", fresh.stderr);
    assert!(
        fresh.stdout.contains("no full dump yet"),
        "{}",
        fresh.stdout
    );
    assert!(fresh.error_line().contains("breached for db main"));

    let id = env.backup(&[]);
    let healthy = env.lifeboat(&["status", "--json"]);
    assert_eq!(healthy.code, 0, "{}", healthy.stderr);
    let assets: Value = serde_json::from_str(&healthy.stdout).unwrap();
    assert_eq!(assets[0]["kind"], "db");
    assert_eq!(assets[0]["name"], "main");
    assert_eq!(assets[0]["ok"], true);
    assert!(assets[0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("never verified"));

    // The same backup, as if taken two days ago.
    let path = env.repo_path(&format!("manifests/{id}.json"));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48)).to_string();
    manifest["started_at"] = old.clone().into();
    manifest["finished_at"] = old.into();
    std::fs::write(&path, manifest.to_string()).unwrap();
    let stale = env.lifeboat(&["status"]);
    assert_eq!(stale.code, 4);
    assert!(
        stale
            .stdout
            .contains("newest full dump is 48h00 old, more than the 25h00 objective"),
        "{}",
        stale.stdout
    );
}

#[test]
fn doctor_says_what_to_fix() {
    let env = Env::new(Repo::Local, false);
    let out = env.lifeboat(&["doctor"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("write, read and delete work"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("client tools new enough"),
        "{}",
        out.stdout
    );
    append(&env, "pitr = true\n[notify]\nwebhook = \"not a url\"\n");
    let out = env.lifeboat(&["doctor"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("`pitr = true` but the server does not archive to lifeboat"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("`notify.webhook` is not an http(s) URL"),
        "{}",
        out.stdout
    );
    assert!(out
        .error_line()
        .contains("doctor found problems with: database main, notify webhook"));
}

/// A throwaway redis-server on loopback with a password; stopped when dropped.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start(dir: &std::path::Path) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--requirepass", "redis-secret-value", "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        wait_until(Duration::from_secs(10), "redis", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redis_is_checked_and_snapshotted_only_when_asked() {
    let env = Env::new(Repo::Local, false);
    let redis = Redis::start(env.dir.path());
    let url = format!("redis://:redis-secret-value@127.0.0.1:{}", redis.1);
    append(&env, &format!("[redis]\nurl = \"{url}\"\n"));
    let out = env.lifeboat(&["backup", "redis"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("ephemeral by design"),
        "{}",
        out.stderr
    );

    env.backup(&[]);
    let status = env.lifeboat(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    let assets: Value = serde_json::from_str(&status.stdout).unwrap();
    let redis_status = &assets[1];
    assert_eq!(redis_status["kind"], "redis");
    assert!(
        redis_status["notes"].to_string().contains("answers PING"),
        "{redis_status}"
    );

    let config = std::fs::read_to_string(&env.config).unwrap() + "backup = true\n";
    std::fs::write(&env.config, config).unwrap();
    let out = env.lifeboat(&["backup", "redis", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let verified = env.lifeboat(&["verify", &id, "--json"]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.contains("entries readable"),
        "{}",
        verified.stdout
    );
    for text in [&out.stdout, &out.stderr, &verified.stderr, &status.stdout] {
        assert!(!text.contains("redis-secret-value"));
    }

    drop(redis);
    let down = env.lifeboat(&["status"]);
    assert_eq!(down.code, 4, "{}", down.stdout);
    assert!(
        down.error_line().contains("breached for redis"),
        "{}",
        down.stderr
    );
}

/// `status` asks an archiving database's server how its archiving goes; a server that accepts
/// the connection and never answers holds it at most 10 s, and says so (the daemon's metrics
/// go through the same).
#[test]
fn status_is_not_held_by_a_server_that_never_answers() {
    let env = Env::new(Repo::Local, false);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accepts, reads nothing, answers nothing, until the test ends.
        let streams: Vec<_> = silent.incoming().take(3).flatten().collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(streams);
    });
    let config = std::fs::read_to_string(&env.config).unwrap();
    let (head, _) = config.split_once("[postgres.main]").unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{head}[postgres.main]\nurl = \"postgresql://lifeboat@127.0.0.1:{port}/yomira?sslmode=disable\"\npitr = true\n"
        ),
    )
    .unwrap();
    let begun = std::time::Instant::now();
    let out = env.lifeboat(&["status", "--json"]);
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "status took {:?}",
        begun.elapsed()
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    let assets: Value = serde_json::from_str(&out.stdout).unwrap();
    let wal = assets
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "wal")
        .unwrap();
    assert!(
        wal["notes"].to_string().contains("no answer within 10 s"),
        "{wal}"
    );
    drop(held);
}
