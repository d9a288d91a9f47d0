//! Storage that misbehaves: a fault-injecting proxy between lifeboat and a real S3 server
//! hangs, stalls, drips, breaks off, cuts short and refuses requests, and every command ends
//! within its timeouts, retries what may pass, and commits nothing it is not sure of.

use std::time::{Duration, Instant};

use lifeboat_testkit::{Fault, Rule};

use crate::support::{fake_segment, wait_until, Env, Repo, FAKE_SYSTEM_ID};

fn elapsed_below(begun: Instant, limit: u64, what: &str) {
    assert!(
        begun.elapsed() < Duration::from_secs(limit),
        "{what} took {:?}, more than {limit} s",
        begun.elapsed()
    );
}

#[test]
fn wal_push_and_fetch_end_within_their_timeout_and_retry_what_may_pass() {
    let mut env = Env::new(Repo::S3, false);
    let proxy = env.behind_proxy(2, 5);
    // Every fetch goes to storage: none is served from segments prefetched before a fault.
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!("{config}[wal]\nprefetch = 0\n"));
    let first = "000000010000000000000001";
    let second = "000000010000000000000002";
    let path = env.wal_file("a", first, &fake_segment(first, FAKE_SYSTEM_ID, 1));

    // An endpoint that accepts and never answers: PostgreSQL's archive_command must fail,
    // not hang (PostgreSQL retries it), within the timeout.
    proxy.set(vec![Rule::all(Fault::Hang)]);
    let begun = Instant::now();
    let out = env.lifeboat(&["wal-push", &path]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.error_line().contains("timed out") || out.error_line().contains("no answer"),
        "{}",
        out.stderr
    );
    elapsed_below(begun, 15, "wal-push against a hung endpoint");

    // Answers that say "try later" are tried again.
    proxy.set(vec![Rule::all(Fault::Status(503, "SlowDown")).times(2)]);
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(proxy.faulted() >= 2);
    let path2 = env.wal_file("b", second, &fake_segment(second, FAKE_SYSTEM_ID, 2));
    proxy.clear();
    assert_eq!(env.lifeboat(&["wal-push", &path2]).code, 0);

    // A body cut short, or broken off, is read again; the file comes whole.
    for fault in [
        Fault::Truncate { keep: 1000 },
        Fault::Reset { after: 50_000 },
    ] {
        proxy.set(vec![Rule::all(fault).method("GET").path("/wal/").times(1)]);
        let (out, data) = env.fetch_wal(first);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(data.unwrap() == fake_segment(first, FAKE_SYSTEM_ID, 1));
    }

    // A fetch from an endpoint that hangs, stalls or drips fails with 255 within the
    // timeout: recovery stops instead of ending there.
    for fault in [
        Fault::Hang,
        Fault::StallBody { after: 1000 },
        Fault::Drip {
            bytes: 100,
            every: Duration::from_millis(100),
        },
    ] {
        proxy.set(vec![Rule::all(fault.clone()).method("GET")]);
        let begun = Instant::now();
        let (out, data) = env.fetch_wal(second);
        assert_eq!(out.code, 255, "{fault:?}: {}", out.stderr);
        assert!(data.is_none(), "{fault:?}: a file was handed over");
        elapsed_below(begun, 20, &format!("wal-fetch against {fault:?}"));
    }
    proxy.clear();
    let (out, data) = env.fetch_wal(second);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(data.unwrap() == fake_segment(second, FAKE_SYSTEM_ID, 2));
}

/// With the storage timeouts at their defaults (60 s without a byte, 300 s a request), an
/// endpoint that accepts and never answers would hold PostgreSQL's archiver for minutes:
/// `wal-push` and `wal-fetch` have their own deadline for the whole command, retries included
/// (`[wal] push_timeout_secs`, `fetch_timeout_secs`), and nothing is stored.
#[test]
fn wal_push_and_fetch_end_within_their_own_deadline_whatever_the_storage_timeouts() {
    let mut env = Env::new(Repo::S3, false);
    let proxy = env.behind_proxy(60, 300);
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!(
        "{config}[wal]\nprefetch = 0\npush_timeout_secs = 3\nfetch_timeout_secs = 3\n"
    ));
    let name = "000000010000000000000001";
    let path = env.wal_file("a", name, &fake_segment(name, FAKE_SYSTEM_ID, 1));
    proxy.set(vec![Rule::all(Fault::Hang)]);
    let begun = Instant::now();
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("`wal-push` did not happen within 3 s")
            && out.error_line().contains("push_timeout_secs"),
        "{}",
        out.stderr
    );
    elapsed_below(begun, 15, "wal-push against a hung endpoint");
    let begun = Instant::now();
    let (out, data) = env.fetch_wal(name);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(data.is_none());
    elapsed_below(begun, 15, "wal-fetch against a hung endpoint");
    proxy.clear();
    assert!(
        !env.stored_files().iter().any(|f| f.contains(name)),
        "a push stopped at its deadline stored the segment"
    );
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_backup_whose_upload_stalls_fails_cleanly_and_the_next_one_succeeds() {
    let mut env = Env::new(Repo::S3, false);
    let hook = crate::automation::Receiver::start();
    let proxy = env.behind_proxy(2, 5);
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!(
        "{config}[jobs.dump]\nsteps = [\"backup db\"]\n[notify]\nwebhook = \"{}/hook\"\n",
        hook.url
    ));
    let kept = env.backup(&[]);
    let files_before = env.stored_files();

    proxy.set(vec![Rule::all(Fault::Hang).method("PUT").path("/data/db/")]);
    let begun = Instant::now();
    let out = env.lifeboat(&["run", "dump"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("backup db main: failed"),
        "{}",
        out.stderr
    );
    elapsed_below(begun, 30, "a backup against a stalled upload");
    env.assert_only_backup(&kept, &files_before, "the failed backup");
    let notified = hook.requests();
    let report = &notified.last().expect("the failure is notified").1;
    assert!(report.contains("\"ok\":false"), "{report}");

    proxy.clear();
    let out = env.lifeboat(&["run", "dump"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.len(), 2);
}

#[test]
fn a_stop_request_ends_a_hung_command_at_once() {
    // Long timeouts: only the stop request can end these. Encrypted: a stop while the
    // decryption reads its header once passed for a damaged backup.
    let mut env = Env::new(Repo::S3, true);
    let proxy = env.behind_proxy(120, 300);
    let before = env.backup(&[]);
    env.new_database("stopped");
    let into = env.cluster.url("stopped");
    // A download stopped before its first byte is a stop, not a damaged backup.
    let stalled_download = || {
        Rule::all(Fault::StallBody { after: 0 })
            .method("GET")
            .path("/data/db/")
    };
    for (args, fault) in [
        (vec!["list"], Rule::all(Fault::Hang)),
        (vec!["backup", "db"], Rule::all(Fault::Hang).method("PUT")),
    ]
    .into_iter()
    .chain((0..3).flat_map(|_| {
        [
            (
                vec!["restore", "db", before.as_str(), "--into", into.as_str()],
                stalled_download(),
            ),
            (vec!["verify", before.as_str()], stalled_download()),
        ]
    })) {
        proxy.set(vec![fault]);
        let faulted = proxy.faulted();
        let child = env.start(&args);
        wait_until(Duration::from_secs(30), "a hung request", || {
            proxy.faulted() > faulted
        });
        std::thread::sleep(Duration::from_millis(300));
        let begun = Instant::now();
        let out = crate::support::terminate(child);
        assert_eq!(out.code, 130, "{args:?}: {}", out.stderr);
        elapsed_below(begun, 12, &format!("{args:?} after SIGTERM"));
    }
    proxy.clear();
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.len(), 1, "an interrupted backup was committed");
    assert_eq!(listed[0]["id"], before.as_str());
    // The stopped verification recorded nothing against the backup.
    let status = env.lifeboat(&["status", "--json"]);
    assert!(!status.stdout.contains("damaged"), "{}", status.stdout);
}

#[test]
fn a_stalled_source_object_is_retried_reported_and_the_rest_copied() {
    let b = crate::objects::Buckets::new(Default::default());
    for (key, size) in [("a.jpg", 3000), ("stuck.jpg", 200_000), ("z.jpg", 5000)] {
        b.put(key, &vec![7u8; size]);
    }
    let proxy = lifeboat_testkit::FaultProxy::start(&b.source.endpoint);
    let config = std::fs::read_to_string(&b.config).unwrap();
    let config = config.replace(
        &format!("endpoint = \"{}\"", b.source.endpoint),
        &format!("endpoint = \"{}\"", proxy.endpoint),
    );
    std::fs::write(
        &b.config,
        format!("{config}[objects.media.source.timeouts]\nio_secs = 2\nrequest_secs = 4\n"),
    )
    .unwrap();
    proxy.set(vec![Rule::all(Fault::StallBody { after: 100 })
        .method("GET")
        .path("stuck.jpg")]);
    let begun = Instant::now();
    let out = b.lifeboat(&["backup", "objects", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    elapsed_below(begun, 120, "an object backup with a stalled object");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["summary"]["copied"], 2, "{report}");
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    assert_eq!(report["failures"][0]["key"], "stuck.jpg", "{report}");
    // Retried: more than one stalled request for it.
    assert!(proxy.faulted() >= 2, "{}", proxy.faulted());
    // The next run copies it.
    proxy.clear();
    let out = b.lifeboat(&["backup", "objects", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["summary"]["copied"], 1, "{report}");
}

#[test]
fn an_archiving_cluster_rides_out_a_storage_outage() {
    use crate::pitr::{sql_at, switch_and_archive};
    let mut env = crate::pitr::archiving_env();
    let proxy = env.behind_proxy(2, 5);
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql("yomira", "CREATE TABLE public.outage (id int)");
    let first = switch_and_archive(&socket, port);

    // The storage hangs: every push fails within its timeout, so PostgreSQL keeps the
    // segments and tries again, instead of its archiver hanging.
    proxy.set(vec![Rule::all(Fault::Hang)]);
    let failed = |socket: &std::path::Path| -> i64 {
        sql_at(socket, port, "SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap()
    };
    let failed_before = failed(&socket);
    let outage = Instant::now();
    let mut written = Vec::new();
    for row in 0..4 {
        env.sql(
            "yomira",
            &format!("INSERT INTO public.outage VALUES ({row})"),
        );
        written.push(sql_at(
            &socket,
            port,
            "SELECT pg_walfile_name(pg_switch_wal())",
        ));
        std::thread::sleep(Duration::from_secs(2));
    }
    wait_until(Duration::from_secs(60), "failed archive attempts", || {
        failed(&socket) > failed_before
    });
    while outage.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.clear();

    // Back: every segment is archived, in order, once.
    env.sql("yomira", "INSERT INTO public.outage VALUES (99)");
    let last = sql_at(&socket, port, "SELECT pg_walfile_name(pg_switch_wal())");
    wait_until(Duration::from_secs(180), "the archive to catch up", || {
        sql_at(
            &socket,
            port,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        ) >= last
    });
    let stored = env.stored_files();
    for name in written.iter().chain([&first, &last]) {
        let copies = stored
            .iter()
            .filter(|k| k.contains(&format!("wal/{name}.")))
            .count();
        assert_eq!(copies, 1, "`{name}` is archived {copies} times: {stored:?}");
    }
    let list = env.lifeboat(&["list", "wal", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let timeline = &report["archives"][0]["timelines"][0];
    assert_eq!(timeline["gaps"], serde_json::json!([]), "{report}");
    assert!(
        timeline["last"].as_str().unwrap() >= last.as_str(),
        "{report}"
    );
}

/// Storage refused (expired keys) for long enough that the WAL waiting in `pg_wal` passes
/// `[wal] queue_max_mib`: `wal-push` lets PostgreSQL drop the oldest segments instead of
/// filling its disk, the server keeps running, the gap is journalled, recorded in the
/// repository once the storage answers, notified and breaches `status`; after a new base
/// backup, a recovery to the latest moment is exact, and one into the gap is refused.
#[test]
fn past_the_queue_limit_segments_are_dropped_and_the_server_runs_on() {
    use crate::pitr::{recover_and_start, sql_at, switch_and_archive};
    let mut env = crate::pitr::archiving_env();
    let proxy = env.behind_proxy(2, 5);
    let hook = crate::automation::Receiver::start();
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!(
        "[wal]\nqueue_max_mib = 40\npush_timeout_secs = 10\n[notify]\nwebhook = \"{}/hook\"\n{config}",
        hook.url
    ));
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql("yomira", "CREATE TABLE public.outage (id int)");
    switch_and_archive(&socket, port);
    let archived = || {
        sql_at(
            &socket,
            port,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )
    };
    let ready = || -> u64 {
        sql_at(
            &socket,
            port,
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .parse()
        .unwrap()
    };

    proxy.set(vec![Rule::all(Fault::Status(403, "AccessDenied"))]);
    let mut written = Vec::new();
    let begun = Instant::now();
    // Writes go on; the first segment of the outage is dropped once the queue passes 40 MiB.
    while written
        .first()
        .is_none_or(|first: &String| archived() < *first)
    {
        assert!(
            begun.elapsed() < Duration::from_secs(120),
            "no segment was dropped: {} ready",
            ready()
        );
        env.sql(
            "yomira",
            &format!("INSERT INTO public.outage VALUES ({})", written.len()),
        );
        written.push(sql_at(
            &socket,
            port,
            "SELECT pg_walfile_name(pg_switch_wal())",
        ));
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(ready() <= 3, "{} segments wait, past the limit", ready());
    assert_eq!(sql_at(&socket, port, "SELECT 1"), "1", "the server stopped");
    assert!(
        !env.stored_files().iter().any(|f| f.contains(&written[0])),
        "the storage refused everything, yet `{}` is stored",
        written[0]
    );
    let alerts = hook.requests();
    assert!(
        alerts.iter().any(
            |(_, body)| body.contains("point-in-time recovery is broken")
                && body.contains(&written[0])
        ),
        "{alerts:?}"
    );

    // doctor says archiving fails, with the server's own count.
    let finding = |name: &str| {
        let out = env.lifeboat(&["doctor", "--json"]);
        let findings: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
        let found = findings
            .into_iter()
            .find(|f| f["check"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {}", out.stdout));
        (out.code, found)
    };
    let config = std::fs::read_to_string(&env.config).unwrap();
    let config = config.replace("[postgres.main]\n", "[postgres.main]\npitr = true\n");
    std::fs::write(&env.config, config).unwrap();
    let (code, archiving) = finding("archiving main");
    assert_ne!(code, 0);
    assert_eq!(archiving["ok"], false, "{archiving}");
    let failures: i64 = sql_at(&socket, port, "SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert!(
        archiving["detail"]
            .as_str()
            .unwrap()
            .contains("archive_command is failing"),
        "{archiving}"
    );
    assert!(failures > 0);

    // Back: the next push records the journalled gaps in the repository.
    proxy.clear();
    switch_and_archive(&socket, port);
    assert!(
        env.stored_files()
            .iter()
            .any(|f| f.contains(&format!("wal/dropped/{}.json", written[0]))),
        "{:?}",
        env.stored_files()
    );
    // doctor proves archiving again: a segment switched, archived and read back.
    let (_, archiving) = finding("archiving main");
    assert_eq!(archiving["ok"], true, "{archiving}");
    assert!(
        archiving["detail"]
            .as_str()
            .unwrap()
            .contains("archived in"),
        "{archiving}"
    );
    let out = env.lifeboat(&["status"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "wal-push let PostgreSQL drop `{}` unarchived",
            written[0]
        )),
        "{}",
        out.stdout
    );

    // A base backup after the gap, then more writes: the latest moment recovers exactly.
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    env.sql("yomira", "INSERT INTO public.outage VALUES (1000)");
    switch_and_archive(&socket, port);
    let expected = env.sql(
        "yomira",
        "SELECT count(*) || ' ' || sum(id) FROM public.outage",
    );
    let sock2 = env.dir.path().join("sock2");
    std::fs::create_dir(&sock2).unwrap();
    std::fs::set_permissions(&sock2, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (out, server) = recover_and_start(&env, "after-outage", &sock2, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &sock2,
            server.port,
            "SELECT count(*) || ' ' || sum(id) FROM public.outage"
        ),
        expected
    );
    let out = env.lifeboat(&["status"]);
    assert!(
        out.stdout.contains("recoverable again from base backup"),
        "{}",
        out.stdout
    );
}
