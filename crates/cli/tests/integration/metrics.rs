//! Metrics as Prometheus reads them: the daemon's `/metrics` answers from memory at once, even
//! while storage hangs (marking the repository down and keeping the last status), and
//! `status --prometheus` writes node_exporter's textfile whole, also when the repository cannot
//! be read. Everything is read back with a Prometheus text parser.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lifeboat_testkit::{Fault, Rule};

use crate::automation::{get, nightly_daemon};
use crate::support::{run_of, wait_until, Env, Repo};

/// The samples of a scrape or a textfile (the HTTP head, if any, left out).
fn parse(text: &str) -> prometheus_parse::Scrape {
    let body = text.split_once("\r\n\r\n").map_or(text, |(_, body)| body);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("prometheus text parses")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
}

const DB: [(&str, &str); 2] = [("kind", "db"), ("name", "main")];

#[test]
fn the_daemon_answers_from_memory_while_storage_hangs() {
    let mut env = Env::new(Repo::S3, false);
    env.backup(&[]);
    let proxy = env.behind_proxy(2, 4);
    let address = nightly_daemon(&env, "status_interval_seconds = 2");
    let mut daemon = env
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scrape = || parse(&get(&address, "/metrics"));
    wait_until(Duration::from_secs(30), "a first collection", || {
        TcpListener::bind(&address).is_err()
            && value(&scrape(), "lifeboat_repository_up", &[]) == Some(1.0)
    });
    let first = scrape();
    let newest =
        value(&first, "lifeboat_last_success_timestamp_seconds", &DB).expect("the backup's time");
    assert!(value(&first, "lifeboat_build_info", &[]).is_some());

    // Storage hangs: every scrape still answers at once, from memory.
    proxy.set(vec![Rule::all(Fault::Hang)]);
    let begun = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut down = None;
    while begun.elapsed() < Duration::from_secs(150) {
        let asked = Instant::now();
        let s = scrape();
        slowest = slowest.max(asked.elapsed());
        if value(&s, "lifeboat_repository_up", &[]) == Some(0.0) {
            down = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let down = down.expect("the repository marked down while storage hangs");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );
    // The last good status stays, with its age.
    assert_eq!(
        value(&down, "lifeboat_last_success_timestamp_seconds", &DB),
        Some(newest)
    );
    assert!(value(&down, "lifeboat_status_age_seconds", &[]).unwrap() >= 2.0);
    assert!(proxy.faulted() >= 1);

    // Storage answers again: so does the repository.
    proxy.clear();
    wait_until(Duration::from_secs(60), "the repository up again", || {
        value(&scrape(), "lifeboat_repository_up", &[]) == Some(1.0)
    });
    let s = scrape();
    assert!(value(&s, "lifeboat_status_age_seconds", &[]).unwrap() < 30.0);
    assert!(value(&s, "lifeboat_storage_requests_total", &[("kind", "list")]).unwrap() >= 1.0);
    std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn status_writes_a_textfile_for_node_exporter() {
    let env = Env::new(Repo::Local, false);
    env.backup(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lifeboat.prom");
    let file_arg = file.to_str().unwrap();
    let out = env.lifeboat(&["status", "--prometheus", file_arg]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let s = parse(&text);
    assert_eq!(value(&s, "lifeboat_repository_up", &[]), Some(1.0));
    let age = value(&s, "lifeboat_backup_age_seconds", &DB).expect("an age");
    assert!((0.0..600.0).contains(&age), "{age}");
    assert_eq!(value(&s, "lifeboat_rpo_seconds", &DB), Some(25.0 * 3600.0));
    assert_eq!(value(&s, "lifeboat_objective_breached", &DB), Some(0.0));
    // Written whole, by rename: nothing else is left in the folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["lifeboat.prom"]);

    // A repository that cannot be read: the file says so, and the command fails.
    let config = std::fs::read_to_string(&env.config).unwrap();
    let broken = dir.path().join("broken.toml");
    let url = config
        .lines()
        .find(|l| l.starts_with("url = \"file://"))
        .unwrap();
    std::fs::write(
        &broken,
        config.replace(url, "url = \"file:///nonexistent/lifeboat-repository\""),
    )
    .unwrap();
    let out = run_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args([
                "--config",
                broken.to_str().unwrap(),
                "status",
                "--prometheus",
                file_arg,
            ])
            .envs(env.extra_env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .output()
            .unwrap(),
    );
    assert_ne!(out.code, 0, "{}", out.stderr);
    let s = parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(value(&s, "lifeboat_repository_up", &[]), Some(0.0));
    assert_eq!(value(&s, "lifeboat_backup_age_seconds", &DB), None);
}
