//! Point-in-time recovery on a real cluster archiving through `lifeboat wal-push`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_testkit::ClusterOptions;

use crate::support::{tools, wait_until, Env, Repo, Run};

fn open_to_server(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs SQL on a server reached through `socket` and `port`.
pub fn sql_at(socket: &Path, port: u16, sql: &str) -> String {
    let out = std::process::Command::new(tools().path("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGHOST", socket)
        .env("PGPORT", port.to_string())
        .env("PGUSER", "lifeboat")
        .env("PGDATABASE", "yomira")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A recovered server: its data folder and port; stopped when dropped.
pub struct Server {
    pgdata: PathBuf,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new(tools().path("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-D"])
            .arg(&self.pgdata);
        if let Some((uid, gid)) = lifeboat_core::postgres::cluster::unprivileged_user() {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.output();
    }
}

/// `restore pitr ARGS --start` into the new folder `name`, the server on a free port and
/// `socket`.
pub fn recover_and_start(env: &Env, name: &str, socket: &Path, args: &[&str]) -> (Run, Server) {
    let server = Server {
        pgdata: env.dir.path().join(name),
        port: free_port(),
    };
    let port = server.port.to_string();
    let mut all = vec![
        "restore",
        "pitr",
        "--pgdata",
        server.pgdata.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--start", "--port", &port, "--socket-dir"]);
    all.push(socket.to_str().unwrap());
    (env.lifeboat(&all), server)
}

/// `restore pitr ARGS` into folder `name` of the test's folder, without starting it.
fn restore_into(env: &Env, name: &str, args: &[&str]) -> (Run, PathBuf) {
    let pgdata = env.dir.path().join(name);
    let mut all = vec!["restore", "pitr", "--pgdata", pgdata.to_str().unwrap()];
    all.extend_from_slice(args);
    (env.lifeboat(&all), pgdata)
}

/// `status` with the archive's database marked `pitr = true`: breached (exit 4).
fn breached_status(env: &Env) -> Run {
    let config = std::fs::read_to_string(&env.config).unwrap();
    if !config.ends_with("pitr = true\n") {
        std::fs::write(&env.config, format!("{config}pitr = true\n")).unwrap();
    }
    let out = env.lifeboat(&["status"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    out
}

/// Flips a byte in the middle of `file`; returns what it held.
pub fn damage(file: &Path) -> Vec<u8> {
    let intact = std::fs::read(file).unwrap();
    let mut bytes = intact.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(file, bytes).unwrap();
    intact
}

/// Switches to a new segment and waits until the archive has the one switched from, whose
/// name it returns.
pub fn switch_and_archive(socket: &Path, port: u16) -> String {
    let segment = sql_at(socket, port, "SELECT pg_walfile_name(pg_switch_wal())");
    wait_until(Duration::from_secs(60), "the WAL archive", || {
        sql_at(
            socket,
            port,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        ) >= segment
    });
    segment
}

/// A cluster that archives, with `archive_command` set later ([`archive_through_lifeboat`]).
pub fn archiving_cluster() -> ClusterOptions {
    ClusterOptions {
        settings: vec![
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            "archive_command = 'false'".into(),
        ],
        ..ClusterOptions::default()
    }
}

/// Makes `env`'s cluster archive through `lifeboat wal-push` with `env`'s configuration;
/// `environment` (`NAME=value `) goes before the command, as the server's environment lacks
/// the test's.
pub fn archive_through_lifeboat(env: &Env, environment: &str) {
    // The server (another user when the tests run as root) reads the config and the key.
    open_to_server(env.dir.path(), 0o755);
    open_to_server(&env.config, 0o644);
    if let Some(identity) = &env.identity {
        open_to_server(identity, 0o644);
    }
    let command = format!(
        "{environment}{} --config {} -q wal-push %p",
        env!("CARGO_BIN_EXE_lifeboat"),
        env.config.display()
    );
    env.sql(
        "yomira",
        &format!("ALTER SYSTEM SET archive_command = '{command}'"),
    );
    env.sql("yomira", "SELECT pg_reload_conf()");
}

/// An environment whose cluster archives its WAL to the repository through `lifeboat wal-push`.
pub fn archiving_env() -> Env {
    let env = Env::with_cluster(Repo::S3, true, archiving_cluster());
    // The S3 secret goes with the command.
    archive_through_lifeboat(
        &env,
        &format!("LB_TEST_S3_SECRET={} ", crate::support::S3_SECRET),
    );
    env
}

#[test]
fn recovery_to_a_moment_and_across_timelines() {
    let env = archiving_env();
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());

    // Before any base backup: refused, with the reason.
    let early = env.dir.path().join("early");
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        early.to_str().unwrap(),
        "--latest",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("has no base backup"),
        "{}",
        out.stderr
    );

    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base_id = out.last_line();

    env.sql("yomira", "CREATE TABLE public.events (id int PRIMARY KEY)");
    env.sql("yomira", "INSERT INTO public.events VALUES (1)");
    // Row 1 in a segment of its own, on the path of every recovery below.
    let row1_segment = switch_and_archive(&socket, port);
    std::thread::sleep(Duration::from_millis(1200));
    let target = env.sql(
        "yomira",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1200));
    env.sql("yomira", "INSERT INTO public.events VALUES (2)");
    switch_and_archive(&socket, port);

    // The base backup verifies: unpacked into a throwaway folder, recovered to its end with the
    // archived WAL, started, checked, and removed.
    let out = env.lifeboat(&["verify", &base_id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(verified["kind"], "base");
    assert_eq!(verified["passed"], true, "{verified}");
    assert_eq!(verified["rto_seconds"], 900);
    assert_eq!(verified["checks"][0]["name"], "recovery");
    assert_eq!(verified["checks"][1]["name"], "critical table core.comic");
    assert_eq!(verified["checks"][1]["detail"], "200 rows");
    // Stored in chunks, each behind a description that zstd skips: `tar --list` still reads
    // the decoded stream as one archive.
    let out = env.lifeboat(&["verify", &base_id, "--quick", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let quick: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // (passing means tar found `global/pg_control` and `PG_VERSION` in it)
    assert_eq!(quick["passed"], true, "{quick}");

    let list = env.lifeboat(&["list", "wal"]);
    assert!(
        list.stdout.contains("timeline 1:") && !list.stdout.contains("gap"),
        "{}",
        list.stdout
    );

    // A target before the base backup is refused with the window.
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        early.to_str().unwrap(),
        "--target-time",
        "2020-01-01T00:00:00Z",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("recoverable window is"),
        "{}",
        out.stderr
    );
    // A data folder that is not empty is refused.
    std::fs::create_dir_all(&early).unwrap();
    std::fs::write(early.join("PG_VERSION"), "15").unwrap();
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        early.to_str().unwrap(),
        "--latest",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.error_line().contains("is not empty"), "{}", out.stderr);

    // A data folder that cannot be read as one.
    let not_a_dir = env.dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        not_a_dir.to_str().unwrap(),
        "--latest",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("cannot read data folder"),
        "{}",
        out.stderr
    );

    // Recovery to the moment between the two commits.
    let sock2 = env.dir.path().join("sock2");
    std::fs::create_dir(&sock2).unwrap();
    open_to_server(&sock2, 0o777);
    let (out, server2) = recover_and_start(
        &env,
        "pitr",
        &sock2,
        &["--target-time", &target, "--promote-as-primary", "--json"],
    );
    let port2 = server2.port;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["base_backup"], base_id.as_str());
    assert!(report["recovery_seconds"].as_f64().is_some());
    assert_eq!(
        sql_at(
            &sock2,
            port2,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM events"
        ),
        "1"
    );
    assert_eq!(
        sql_at(&sock2, port2, "SELECT count(*) FROM core.comic"),
        "200"
    );

    // Promoted as the new primary, the server archives its new timeline; a second recovery
    // follows it.
    assert_eq!(
        sql_at(
            &sock2,
            port2,
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
        ),
        "00000002"
    );
    assert_eq!(report["timeline"], 2, "{report}");
    sql_at(&sock2, port2, "INSERT INTO events VALUES (3)");
    let row3_segment = switch_and_archive(&sock2, port2);
    let list = env.lifeboat(&["list", "wal"]);
    assert!(list.stdout.contains("timeline 2:"), "{}", list.stdout);

    let (out, server3) = recover_and_start(&env, "pitr3", &sock2, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &sock2,
            server3.port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM events"
        ),
        "1,3"
    );

    // The original server's timeline is still there to recover, past the point where
    // timeline 2 branched off: rows 1 and 2, not 3.
    let (out, server_tl1) = recover_and_start(
        &env,
        "pitr-tl1",
        &sock2,
        &["--latest", "--target-timeline", "1"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &sock2,
            server_tl1.port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM events"
        ),
        "1,2"
    );
    let (out, _) = restore_into(&env, "pitr-tl7", &["--latest", "--target-timeline", "7"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("leads to timeline 7"),
        "{}",
        out.stderr
    );

    // The windows are shown in time: each timeline's moments, from the base backup on.
    let list = env.lifeboat(&["list", "wal", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let report = &report["archives"][0];
    let timelines = report["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 2, "{report}");
    assert_eq!(timelines[1]["parent"][0], 1, "{report}");
    for timeline in timelines {
        let windows = timeline["recoverable"].as_array().unwrap();
        assert_eq!(windows.len(), 1, "{report}");
        assert_eq!(windows[0]["base_backup"], base_id.as_str());
    }
    let text = env.lifeboat(&["list", "wal"]).stdout;
    assert!(
        text.contains(&format!("(from base backup {base_id})")) && text.contains("recoverable: "),
        "{text}"
    );

    // A damaged segment stops recovery: PostgreSQL reads a failed `restore_command` as the
    // end of the archive, so a `--latest` recovery would otherwise be promoted without row 3.
    let row3_file = env.archived_file(&row3_segment);
    let intact = damage(&row3_file);
    let (out, server5) = recover_and_start(&env, "pitr5", &sock2, &["--latest", "--no-archive"]);
    // Damage exits 3, said once (the fetch's own `error: ` is not repeated inside).
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(!out.error_line().contains(": error: "), "{}", out.stderr);
    assert!(
        out.error_line()
            .contains(&format!("could not restore file \"{row3_segment}\""))
            && out
                .error_line()
                .contains(&format!("`{row3_segment}` is damaged")),
        "{}",
        out.stderr
    );
    assert!(
        !server5.pgdata.join("postmaster.pid").exists(),
        "a server recovered short of the archive's end is running"
    );
    std::fs::write(&row3_file, intact).unwrap();

    // A missing segment: recovery is refused before anything is restored, `list wal` shows
    // the gap, and `status` reports it as a breach.
    let row1_file = env.archived_file(&row1_segment);
    let row1_bytes = std::fs::read(&row1_file).unwrap();
    std::fs::remove_file(&row1_file).unwrap();
    let (out, pgdata6) = restore_into(&env, "pitr6", &["--latest"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains(&format!(
            "WAL segment `{row1_segment}` is missing from the archive"
        )),
        "{}",
        out.stderr
    );
    assert!(!pgdata6.exists());
    let list = env.lifeboat(&["list", "wal"]);
    assert!(
        list.stdout
            .contains(&format!("gap: {row1_segment} .. {row1_segment} missing")),
        "{}",
        list.stdout
    );
    let out = breached_status(&env);
    assert!(
        out.stdout.contains(&format!(
            "gap in the WAL archive on timeline 1: {row1_segment} .. {row1_segment} missing"
        )),
        "{}",
        out.stdout
    );

    std::fs::write(&row1_file, row1_bytes).unwrap();

    // A damaged base backup is refused (exit 3), and the folder it began to fill is removed.
    let key = env
        .stored_files()
        .into_iter()
        .find(|k| k.contains("data/base/") && k.contains(".tar."))
        .expect("a stored base backup");
    let key = key.strip_prefix("lifeboat/").unwrap_or(&key).to_string();
    damage(&env.repo_path(&key));
    let (out, pgdata4) = restore_into(&env, "pitr4", &["--latest"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(!pgdata4.exists(), "a partial data folder is left behind");
}

#[test]
fn a_recovery_that_stops_short_of_the_archive_fails() {
    let env = archiving_env();
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base_id = out.last_line();
    env.sql("yomira", "CREATE TABLE public.events (id int PRIMARY KEY)");
    let mut segments = Vec::new();
    for row in 1..=3 {
        env.sql(
            "yomira",
            &format!("INSERT INTO public.events VALUES ({row})"),
        );
        segments.push(switch_and_archive(&socket, port));
    }

    // Segment 2 is archived with a damaged record but a sound first page (a disk that
    // corrupted it in pg_wal before it was pushed): its header passes every check, and
    // PostgreSQL takes the bad record for the end of the WAL. It would promote there, without
    // rows 2 and 3, while the archive goes on to segment 3.
    let damaged = env.dir.path().join("damaged").join(&segments[1]);
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    let out = env.lifeboat(&["wal-fetch", &segments[1], damaged.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut bytes = std::fs::read(&damaged).unwrap();
    for byte in &mut bytes[48..64] {
        *byte ^= 0x5A;
    }
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::remove_file(env.archived_file(&segments[1])).unwrap();
    let out = env.lifeboat(&["wal-push", damaged.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A position past the archive is refused with the window, like a time past it.
    let (out, pgdata) = restore_into(&env, "far", &["--target-lsn", "FF/0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("`FF/0` is after the newest archived WAL")
            && out.error_line().contains("recoverable window is"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists());

    let sock = env.dir.path().join("sock-short");
    std::fs::create_dir(&sock).unwrap();
    open_to_server(&sock, 0o777);
    let (out, server) = recover_and_start(&env, "short", &sock, &["--latest"]);
    assert_eq!(
        out.code, 3,
        "a recovery short of the archive succeeded: {}",
        out.stderr
    );
    let line = out.error_line();
    assert!(
        line.contains(&format!(
            "WAL file `{}` is damaged: recovery stopped at",
            segments[1]
        )) && line.contains(&format!(
            "short of the archive's end, segment `{}`",
            segments[2]
        )) && line.contains("invalid resource manager ID"),
        "{line}"
    );
    assert!(
        !server.pgdata.join("postmaster.pid").exists(),
        "a server recovered short of the archive is left running"
    );

    // A base backup of a server that is none of the cluster's generations is refused before
    // it starts.
    let recorded = env.repo_path("clusters/main.json");
    let intact = std::fs::read(&recorded).unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&intact).unwrap();
    record["generations"][0]["system_identifier"] = "42".into();
    std::fs::write(&recorded, serde_json::to_vec(&record).unwrap()).unwrap();
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("system identifier 42")
            && out.error_line().contains("`lifeboat upgrade --db main`"),
        "{}",
        out.stderr
    );
    std::fs::write(&recorded, intact).unwrap();

    // The weekly verification of the base backup replays to the end of the archive too.
    let out = env.lifeboat(&["verify", &base_id, "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(verified["passed"], false, "{verified}");
    assert_eq!(verified["quick"], false, "{verified}");
}

/// A practice recovery (`restore pitr --start`, no other flag) writes nothing into the archive,
/// so a later `--latest` recovers everything. A recovery promoted as the primary while the
/// production server goes on archiving forks a timeline that stops; `--latest` still follows
/// the production line (the timeline archived last, not the highest number), says so, and
/// `list wal` and `status` show the fork; a target that the timeline followed does not hold
/// is refused before anything is unpacked.
#[test]
fn a_practice_recovery_changes_nothing_and_latest_follows_the_production_line() {
    let env = archiving_env();
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    env.sql(
        "yomira",
        "CREATE TABLE public.commits (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    );
    let batch = || {
        env.sql(
            "yomira",
            "INSERT INTO public.commits (at) SELECT clock_timestamp() FROM generate_series(1, 100)",
        );
        switch_and_archive(&socket, port);
    };
    let now = || {
        env.sql(
            "yomira",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
    };
    let count = |sock: &Path, port: u16| sql_at(sock, port, "SELECT count(*) FROM public.commits");
    batch();
    std::thread::sleep(Duration::from_millis(1200));
    let middle = now();
    std::thread::sleep(Duration::from_millis(1200));
    batch();
    let sock2 = env.dir.path().join("sock2");
    std::fs::create_dir(&sock2).unwrap();
    open_to_server(&sock2, 0o777);

    // The practice: recovered, promoted, written to and switched; the archive is untouched.
    let archive_before = env.stored_files();
    let (out, practice) = recover_and_start(
        &env,
        "practice",
        &sock2,
        &["--target-time", &middle, "--json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["archives"], false, "{report}");
    assert!(out.stderr.contains("archiving is off"), "{}", out.stderr);
    assert_eq!(count(&sock2, practice.port), "100");
    sql_at(
        &sock2,
        practice.port,
        "INSERT INTO public.commits (at) VALUES (now())",
    );
    sql_at(&sock2, practice.port, "SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(2));
    drop(practice);
    assert_eq!(
        env.stored_files(),
        archive_before,
        "a practice recovery changed the archive"
    );
    // A restore point before the third batch.
    let out = env.lifeboat(&["mark", "before-batch-3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.lifeboat(&["mark", "before-batch-3"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("already recorded"),
        "{}",
        out.stderr
    );
    batch();
    let list = env.lifeboat(&["list", "wal"]);
    assert!(
        list.stdout.contains("restore point `before-batch-3`"),
        "{}",
        list.stdout
    );
    let (out, marked) =
        recover_and_start(&env, "marked", &sock2, &["--target-name", "before-batch-3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&sock2, marked.port), "200");
    drop(marked);
    let (out, latest) = recover_and_start(&env, "latest", &sock2, &["--latest", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&sock2, latest.port), "300");
    drop(latest);
    // The fastest recovery: to the base backup's end, before the table was made.
    let (out, immediate) = recover_and_start(&env, "immediate", &sock2, &["--target-immediate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &sock2,
            immediate.port,
            "SELECT count(*) FROM pg_class WHERE relname = 'commits'"
        ),
        "0"
    );
    assert_eq!(
        sql_at(&sock2, immediate.port, "SELECT count(*) FROM core.comic"),
        "200"
    );
    drop(immediate);

    // Promoted as the primary beside production, which goes on: a fork.
    let (out, primary) = recover_and_start(
        &env,
        "primary",
        &sock2,
        &["--target-time", &middle, "--promote-as-primary", "--json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["archives"], true, "{report}");
    assert_eq!(report["timeline"], 2, "{report}");
    assert!(
        out.stderr.contains("forked timeline 2 off timeline 1"),
        "{}",
        out.stderr
    );
    sql_at(
        &sock2,
        primary.port,
        "INSERT INTO public.commits (at) VALUES (now())",
    );
    switch_and_archive(&sock2, primary.port);
    drop(primary);
    std::thread::sleep(Duration::from_millis(1200));
    let late = now();
    // (the S3 server keeps times to the second)
    std::thread::sleep(Duration::from_millis(1500));
    batch();

    let (out, after) = recover_and_start(&env, "after-fork", &sock2, &["--latest", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(count(&sock2, after.port), "400", "{report}");
    assert_eq!(report["timeline_followed"], 1, "{report}");
    assert!(
        out.stderr.contains("timeline 2 branched off and stopped")
            && out
                .stderr
                .contains("following timeline 1, the production line"),
        "{}",
        out.stderr
    );
    drop(after);

    let list = env.lifeboat(&["list", "wal"]);
    assert!(
        list.stdout
            .contains("fork: timeline 2 branched off timeline 1 at")
            && list.stdout.contains("timeline 2 stopped"),
        "{}",
        list.stdout
    );
    let out = breached_status(&env);
    assert!(
        out.stdout.contains("timeline 2 branched off timeline 1 at"),
        "{}",
        out.stdout
    );

    // Timeline 2 ended before `late`: following it there is refused before anything is
    // unpacked, naming the timeline that holds it. (`late` typed as an operator in Jakarta
    // would, without an offset, in the configured zone.)
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("[daemon]\ntime_zone = \"Asia/Jakarta\"\n{config}"),
    )
    .unwrap();
    let jakarta = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
    let late_there = late
        .parse::<jiff::Timestamp>()
        .unwrap()
        .to_zoned(jakarta)
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let (out, pgdata) = restore_into(
        &env,
        "on-the-fork",
        &["--target-time", &late_there, "--target-timeline", "2"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("`{late_there}` is taken in Asia/Jakarta"))
            && out.error_line().contains(&format!(
                "target `{}`",
                late.parse::<jiff::Timestamp>().unwrap()
            )),
        "{}",
        out.stderr
    );
    assert!(
        out.error_line()
            .contains("after the newest archived WAL of timeline 2")
            && out
                .error_line()
                .contains("`--target-timeline 1` follows it"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists());
}

/// Rewrites `field` of backup `id`'s manifest in the repository.
fn claim(env: &Env, id: &str, field: &str, value: &str) {
    let path = env.repo_path(&format!("manifests/{id}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest[field] = value.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn a_backup_newer_than_the_programs_is_refused_naming_the_version_it_needs() {
    let env = archiving_env();
    // A base backup of a server of another major version: its data folder is read only by
    // that version's server programs. Refused before anything is unpacked.
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base = out.last_line();
    claim(&env, &base, "server_version", "99.1");
    let (out, pgdata) = restore_into(&env, "recovered", &["--latest"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!("base backup `{base}`"))
            && line.contains("needs PostgreSQL 99's `postgres`")
            && line.contains("apt-get install postgresql-99")
            && line.contains("pg_bin_dir"),
        "{}",
        out.stderr
    );
    assert!(
        !pgdata.exists() || std::fs::read_dir(&pgdata).unwrap().next().is_none(),
        "nothing is unpacked"
    );
    // A dump made by a newer pg_dump than this pg_restore: refused before the target is touched.
    let dump = env.backup(&[]);
    claim(&env, &dump, "client_version", "99.1");
    env.new_database("target");
    let out = env.restore(&dump, "target", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("needs PostgreSQL 99 or newer's `pg_restore`")
            && line.contains("apt-get install postgresql-client-99"),
        "{}",
        out.stderr
    );
    assert_eq!(env.table_count("target"), 0, "the target is as it was");
}
