//! Metrics read back with a Prometheus text parser: values, labels, units, escapes.

use super::*;

fn scrape(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("prometheus text parses")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("{name}{labels:?} missing"));
    match sample.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn run(job: &str) -> JobRun {
    JobRun {
        job: job.into(),
        started: "2026-11-24T02:00:00Z".parse().unwrap(),
        ok: true,
        seconds: 61.5,
        runs: 3,
        failures: 1,
        stored_bytes: 4096,
    }
}

#[test]
fn metrics_parse_with_their_labels_and_units() {
    let mut a = AssetStatus::new("db", "main");
    a.last_good = Some("2026-11-24T02:00:00Z".parse().unwrap());
    a.size_bytes = Some(1234);
    a.age_seconds = Some(36_000.5);
    a.ok = false;
    let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
    let snapshot = Snapshot::collected(vec![a], at);
    let requests = RequestCounts {
        list: 2,
        put: 5,
        ..Default::default()
    };
    let text = render(&Render {
        snapshot: &snapshot,
        runs: &[run("daily")],
        requests: Some(&requests),
        now: at + jiff::SignedDuration::from_secs(90),
    });
    let s = scrape(&text);
    let db = [("kind", "db"), ("name", "main")];
    assert_eq!(
        value(&s, "lifeboat_last_success_timestamp_seconds", &db),
        1795485600.0
    );
    assert_eq!(value(&s, "lifeboat_backup_age_seconds", &db), 36_000.5);
    assert_eq!(value(&s, "lifeboat_last_backup_size_bytes", &db), 1234.0);
    assert_eq!(value(&s, "lifeboat_objective_breached", &db), 1.0);
    assert_eq!(value(&s, "lifeboat_repository_up", &[]), 1.0);
    assert_eq!(value(&s, "lifeboat_status_age_seconds", &[]), 90.0);
    let daily = [("job_name", "daily")];
    assert_eq!(
        value(&s, "lifeboat_job_last_run_duration_seconds", &daily),
        61.5
    );
    assert_eq!(value(&s, "lifeboat_job_runs_total", &daily), 3.0);
    assert_eq!(value(&s, "lifeboat_job_failures_total", &daily), 1.0);
    assert_eq!(value(&s, "lifeboat_stored_bytes_total", &daily), 4096.0);
    assert_eq!(
        value(&s, "lifeboat_storage_requests_total", &[("kind", "put")]),
        5.0
    );
    assert_eq!(
        value(&s, "lifeboat_build_info", &[("version", BUILD.version)]),
        1.0
    );
    assert!(
        text.contains("# TYPE lifeboat_job_runs counter\n"),
        "{text}"
    );
    // No label is called `job`: Prometheus would rename it `exported_job`.
    assert!(s.samples.iter().all(|x| x.labels.get("job").is_none()));
}

#[test]
fn a_failed_collection_keeps_the_last_assets_and_says_so() {
    let mut a = AssetStatus::new("objects", "media");
    a.size_bytes = Some(7);
    let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
    let mut snapshot = Snapshot::collected(vec![a], at);
    snapshot.failed("storage unreachable".into());
    let text = render(&Render {
        snapshot: &snapshot,
        runs: &[],
        requests: None,
        now: at + jiff::SignedDuration::from_secs(600),
    });
    let s = scrape(&text);
    assert_eq!(value(&s, "lifeboat_repository_up", &[]), 0.0);
    assert_eq!(value(&s, "lifeboat_status_age_seconds", &[]), 600.0);
    let media = [("kind", "objects"), ("name", "media")];
    assert_eq!(value(&s, "lifeboat_last_backup_size_bytes", &media), 7.0);
    // Never collected: up 0, and no age to show.
    let never = render(&Render {
        snapshot: &Snapshot::default(),
        runs: &[],
        requests: None,
        now: at,
    });
    let s = scrape(&never);
    assert_eq!(value(&s, "lifeboat_repository_up", &[]), 0.0);
    assert!(!never.contains("lifeboat_status_age_seconds"));
}

#[test]
fn quotes_and_backslashes_in_names_parse_back() {
    let mut a = AssetStatus::new("objects", "we\"ird\\name");
    a.size_bytes = Some(7);
    let mut r = run("night\"ly\\run");
    r.ok = false;
    let snapshot = Snapshot::collected(vec![a], "2026-11-24T12:00:00Z".parse().unwrap());
    let text = render(&Render {
        snapshot: &snapshot,
        runs: &[r],
        requests: None,
        now: "2026-11-24T12:00:00Z".parse().unwrap(),
    });
    let s = scrape(&text);
    // The parser hands label values over as written, escapes and all.
    let unescaped = |v: Option<&str>| {
        let mut out = String::new();
        let mut chars = v.expect("the label is there").chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => panic!("a dangling backslash"),
                },
                (c, false) => out.push(c),
            }
        }
        out
    };
    let size = s
        .samples
        .iter()
        .find(|x| x.metric == "lifeboat_last_backup_size_bytes")
        .unwrap();
    assert_eq!(unescaped(size.labels.get("name")), "we\"ird\\name");
    let ok = s
        .samples
        .iter()
        .find(|x| x.metric == "lifeboat_job_last_run_ok")
        .unwrap();
    assert_eq!(unescaped(ok.labels.get("job_name")), "night\"ly\\run");
    assert!(matches!(ok.value, prometheus_parse::Value::Gauge(v) if v == 0.0));
}
