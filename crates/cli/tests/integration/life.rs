//! A database's whole life in one repository: a major upgrade (PostgreSQL 15 to 17 with
//! `pg_upgrade`) recorded as a new generation, each generation recovered with its own
//! programs and pruned whole; and two clusters archiving into one repository side by side.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use lifeboat_core::postgres::cluster::{ClusterOptions, ScratchCluster};
use lifeboat_core::process::tools::PgTools;

use crate::pitr::{
    archiving_cluster, archiving_env, recover_and_start, sql_at, switch_and_archive,
};
use crate::support::{tools, wait_until, Env, Repo, S3_SECRET};

fn open_to_server(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The moment now on `cluster`'s clock, as `--target-time` takes it.
fn moment(cluster: &ScratchCluster) -> String {
    cluster
        .psql(
            "yomira",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap()
        .trim()
        .to_string()
}

/// A socket folder the servers' user can use.
fn socket_folder(env: &Env, name: &str) -> std::path::PathBuf {
    let socket = env.dir.path().join(name);
    std::fs::create_dir(&socket).unwrap();
    open_to_server(&socket, 0o777);
    socket
}

fn rows(socket: &Path, port: u16) -> String {
    sql_at(
        socket,
        port,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.life",
    )
}

fn archiver_failures(cluster: &ScratchCluster) -> u64 {
    cluster
        .psql("yomira", "SELECT failed_count FROM pg_stat_archiver")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The archive command of cluster `db` through `env`'s configuration.
fn archive_command(env: &Env, db: &str) -> String {
    format!(
        "LB_TEST_S3_SECRET={S3_SECRET} {} --config {} -q wal-push --db {db} %p",
        env!("CARGO_BIN_EXE_lifeboat"),
        env.config.display()
    )
}

/// Runs `program` of `tools` as the servers' user, in `cwd`; panics with its output if it fails.
fn run_as_server(tools: &PgTools, program: &str, args: &[&str], cwd: &Path) {
    let mut cmd = std::process::Command::new(tools.path(program));
    cmd.args(args).current_dir(cwd);
    if let Some((uid, gid)) = lifeboat_core::postgres::cluster::unprivileged_user() {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{program}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs PostgreSQL 17's programs in $LIFEBOAT_PG17_BIN_DIR: scripts/test installs them and runs it"]
fn a_major_upgrade_is_a_new_generation_and_both_recover() {
    let bin17 = std::env::var("LIFEBOAT_PG17_BIN_DIR")
        .expect("$LIFEBOAT_PG17_BIN_DIR: PostgreSQL 17's programs (scripts/test installs them)");
    let tools17 = PgTools::locate(Some(&bin17));
    let mut env = archiving_env();
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!("{config}pitr = true\n"));
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());

    // Generation 1, PostgreSQL 15: a dump, a base backup, row 1 before the moment, row 2 after.
    assert_eq!(env.lifeboat(&["backup", "db"]).code, 0);
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base15 = out.last_line();
    env.sql(
        "yomira",
        "CREATE TABLE public.life (id int PRIMARY KEY, era text)",
    );
    env.sql("yomira", "INSERT INTO public.life VALUES (1, 'fifteen')");
    switch_and_archive(&socket, port);
    std::thread::sleep(Duration::from_millis(1200));
    let before = moment(&env.cluster);
    std::thread::sleep(Duration::from_millis(1200));
    env.sql("yomira", "INSERT INTO public.life VALUES (2, 'fifteen')");
    switch_and_archive(&socket, port);

    // pg_upgrade to 17 (the wheel's): a new system identifier, timelines from 1 again.
    let mut new = ScratchCluster::start(&tools17, &ClusterOptions::default()).unwrap();
    new.stop().unwrap();
    env.cluster.stop().unwrap();
    let old_bin = tools().path("postgres");
    let old_bin = old_bin.parent().unwrap().to_str().unwrap();
    let (p1, p2) = (
        lifeboat_core::postgres::cluster::free_port()
            .unwrap()
            .to_string(),
        lifeboat_core::postgres::cluster::free_port()
            .unwrap()
            .to_string(),
    );
    run_as_server(
        &tools17,
        "pg_upgrade",
        &[
            "-b",
            old_bin,
            "-B",
            &bin17,
            "-d",
            env.cluster.data_dir().to_str().unwrap(),
            "-D",
            new.data_dir().to_str().unwrap(),
            "-U",
            "lifeboat",
            "-s",
            new.socket_dir().to_str().unwrap(),
            "-p",
            &p1,
            "-P",
            &p2,
        ],
        new.root(),
    );
    // (pg_upgrade starts the old server too, which archives as it stops.)
    std::thread::sleep(Duration::from_millis(1200));
    let between = jiff::Timestamp::now().to_string();
    std::thread::sleep(Duration::from_millis(1200));
    {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(new.data_dir().join("postgresql.conf"))
            .unwrap();
        writeln!(
            conf,
            "\nwal_level = replica\narchive_mode = on\narchive_command = '{}'",
            archive_command(&env, "main")
        )
        .unwrap();
    }
    new.start_again().unwrap();
    let config = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.cluster.url("yomira"), &new.url("yomira"));
    env.write_config(&format!("{config}pg_bin_dir = \"{bin17}\"\n"));
    let sql17 = |sql: &str| new.psql("yomira", sql).unwrap();

    // Before `lifeboat upgrade`: the new cluster's segments are refused, naming the command,
    // and PostgreSQL keeps them.
    sql17("INSERT INTO public.life VALUES (3, 'seventeen')");
    sql17("SELECT pg_switch_wal()");
    wait_until(Duration::from_secs(60), "a refused push", || {
        archiver_failures(&new) > 0
    });
    let status = env.lifeboat(&["status"]);
    assert!(
        status.stdout.contains("lifeboat upgrade --db main"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );

    // A dry run records nothing.
    let out = env.lifeboat(&["upgrade", "--db", "main", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("generation 2 (PostgreSQL 17") && out.stdout.contains("dry run"),
        "{}",
        out.stdout
    );
    let out = env.lifeboat(&["upgrade", "--db", "main", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["generation"]["generation"], 2, "{report}");
    assert_eq!(report["generation"]["major"], 17, "{report}");
    assert_eq!(report["previous"]["major"], 15, "{report}");
    let base17 = report["base_backup"].as_str().unwrap().to_string();
    // Again: resumes, nothing new.
    let again = env.lifeboat(&["upgrade", "--db", "main", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["recorded"], false, "{again}");
    assert_eq!(again["existing_base_backup"], base17.as_str(), "{again}");

    // Archiving resumes: no push refused after the upgrade.
    let failures = archiver_failures(&new);
    sql17("INSERT INTO public.life VALUES (4, 'seventeen')");
    let (socket17, port17) = (new.socket_dir().to_path_buf(), new.port());
    switch_and_archive(&socket17, port17);
    std::thread::sleep(Duration::from_millis(1200));
    let after = moment(&new);
    std::thread::sleep(Duration::from_millis(1200));
    sql17("INSERT INTO public.life VALUES (5, 'seventeen')");
    switch_and_archive(&socket17, port17);
    assert_eq!(
        archiver_failures(&new),
        failures,
        "a push was refused after the upgrade"
    );
    let stored = env.stored_files();
    assert!(
        stored.iter().any(|k| k.contains("wal/clusters/main/2/")),
        "{stored:?}"
    );
    let list = env.lifeboat(&["list", "wal"]);
    assert!(
        list.stdout.contains("generation 1 (PostgreSQL 15")
            && list.stdout.contains("generation 2 (PostgreSQL 17"),
        "{}",
        list.stdout
    );

    // PITR on 17 to a moment after the upgrade: exact.
    let sock = socket_folder(&env, "sock-17");
    let (out, server) = recover_and_start(&env, "gen2", &sock, &["--target-time", &after]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rows(&sock, server.port), "1,2,3,4");
    assert!(
        sql_at(&sock, server.port, "SHOW server_version").starts_with("17."),
        "the recovered server is not 17"
    );
    drop(server);
    // PITR of generation 1 to a moment before the upgrade, with 15's programs: exact.
    let sock = socket_folder(&env, "sock-15");
    let (out, server) = recover_and_start(&env, "gen1", &sock, &["--target-time", &before]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rows(&sock, server.port), "1");
    assert!(sql_at(&sock, server.port, "SHOW server_version").starts_with("15."));
    drop(server);
    // Between the generations: refused, naming both.
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        env.dir.path().join("between").to_str().unwrap(),
        "--target-time",
        &between,
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("generation 1 (PostgreSQL 15")
            && line.contains("generation 2 (PostgreSQL 17"),
        "{line}"
    );
    assert!(!env.dir.path().join("between").join("PG_VERSION").exists());

    // Retention past the upgrade: the 15 generation goes whole, base backup and WAL.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30)).to_string();
    let plan = env.lifeboat(&["prune", "--dry-run", "--at", &later]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains("delete all"), "{}", plan.stdout);
    let out = env.lifeboat(&["prune", "--at", &later]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stored = env.stored_files();
    let first_generation: Vec<&String> = stored
        .iter()
        .filter(|k| {
            k.split_once("wal/")
                .is_some_and(|(_, rest)| !rest.contains('/') && rest.starts_with('0'))
        })
        .collect();
    assert!(first_generation.is_empty(), "{first_generation:?}");
    assert!(stored.iter().any(|k| k.contains("wal/clusters/main/2/")));
    let listed = env.lifeboat(&["list"]).stdout;
    assert!(
        !listed.contains(&base15) && listed.contains(&base17),
        "{listed}"
    );
    // And generation 2 still recovers.
    let sock = socket_folder(&env, "sock-17b");
    let (out, server) = recover_and_start(&env, "gen2b", &sock, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rows(&sock, server.port), "1,2,3,4,5");
}

/// pgbench on `cluster` for `seconds`, in the background.
fn pgbench(cluster: &ScratchCluster, args: &[&str]) -> std::process::Child {
    std::process::Command::new(tools().path("pgbench"))
        .args(args)
        .env("PGHOST", cluster.socket_dir())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "lifeboat")
        .env("PGDATABASE", "yomira")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Two clusters archive into one repository side by side, under pgbench: Debian's 15 and, where
/// `$LIFEBOAT_PG17_BIN_DIR` names PostgreSQL 17's programs (`scripts/test` runs it so), a 17.
#[test]
fn two_clusters_archive_into_one_repository() {
    let mut env = Env::with_cluster(Repo::S3, false, archiving_cluster());
    let bin17 = std::env::var("LIFEBOAT_PG17_BIN_DIR").ok();
    let other_tools = bin17
        .as_deref()
        .map_or_else(tools, |dir| PgTools::locate(Some(dir)));
    let other = ScratchCluster::start(&other_tools, &archiving_cluster()).unwrap();
    other.create_database("yomira").unwrap();
    open_to_server(env.dir.path(), 0o755);
    let config = std::fs::read_to_string(&env.config).unwrap();
    let bin_dir = bin17
        .as_deref()
        .map_or(String::new(), |dir| format!("pg_bin_dir = \"{dir}\"\n"));
    env.write_config(&format!(
        "{config}pitr = true\n[postgres.analytics]\nurl = \"{}\"\npitr = true\n{bin_dir}",
        other.url("yomira")
    ));
    open_to_server(&env.config, 0o644);
    for (cluster, db) in [(&env.cluster, "main"), (&other, "analytics")] {
        cluster
            .psql(
                "yomira",
                &format!(
                    "ALTER SYSTEM SET archive_command = '{}'",
                    archive_command(&env, db)
                ),
            )
            .unwrap();
        cluster.psql("yomira", "SELECT pg_reload_conf()").unwrap();
    }
    // An archive_command that does not say which cluster it is: refused, naming `--db`.
    let out = env.lifeboat(&["wal-push", "pg_wal/000000010000000000000001"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.error_line().contains("--db NAME"), "{}", out.stderr);

    // pgbench writes on both all along.
    let mut load = Vec::new();
    for cluster in [&env.cluster, &other] {
        assert!(pgbench(cluster, &["-i", "-q", "-s", "1"])
            .wait()
            .unwrap()
            .success());
        load.push(pgbench(cluster, &["-n", "-c", "2", "-T", "20"]));
    }
    let mut moments = Vec::new();
    for (cluster, db) in [(&env.cluster, "main"), (&other, "analytics")] {
        let out = env.lifeboat(&["backup", "base", "--db", db]);
        assert_eq!(out.code, 0, "{db}: {}", out.stderr);
        cluster
            .psql("yomira", "CREATE TABLE public.life (id int PRIMARY KEY)")
            .unwrap();
        cluster
            .psql("yomira", "INSERT INTO public.life VALUES (1)")
            .unwrap();
        switch_and_archive(cluster.socket_dir(), cluster.port());
        std::thread::sleep(Duration::from_millis(1200));
        moments.push(moment(cluster));
        std::thread::sleep(Duration::from_millis(1200));
        cluster
            .psql("yomira", "INSERT INTO public.life VALUES (2)")
            .unwrap();
        switch_and_archive(cluster.socket_dir(), cluster.port());
    }
    for mut child in load {
        let _ = child.wait();
    }
    for cluster in [&env.cluster, &other] {
        switch_and_archive(cluster.socket_dir(), cluster.port());
        assert_eq!(archiver_failures(cluster), 0, "a push was refused");
    }
    // Segment names repeat between the two; each is stored in its own archive.
    let stored = env.stored_files();
    assert!(
        stored
            .iter()
            .any(|k| k.contains("wal/clusters/main/1/000000010000"))
            && stored
                .iter()
                .any(|k| k.contains("wal/clusters/analytics/1/000000010000")),
        "{stored:?}"
    );
    let list = env.lifeboat(&["list", "wal", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let clusters: Vec<&str> = listed["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, ["analytics", "main"], "{listed}");
    // Each archive whole: one line of segments per timeline, no gap.
    for archive in listed["archives"].as_array().unwrap() {
        for timeline in archive["timelines"].as_array().unwrap() {
            assert_eq!(
                timeline["gaps"].as_array().map_or(0, Vec::len),
                0,
                "{archive}"
            );
        }
    }
    if bin17.is_some() {
        assert!(listed.to_string().contains("\"major\":17"), "{listed}");
    }
    let metrics = env.dir.path().join("lifeboat.prom");
    let status = env.lifeboat(&[
        "status",
        "--json",
        "--prometheus",
        metrics.to_str().unwrap(),
    ]);
    assert!(
        status.stdout.contains("\"analytics\"") && status.stdout.contains("\"main\""),
        "{}",
        status.stdout
    );
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    for name in ["main", "analytics"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("kind=\"wal\"") && l.contains(&format!("name=\"{name}\""))),
            "{metrics}"
        );
    }

    // Each recovers to its own moment, from its own archive.
    for (db, at) in [("main", &moments[0]), ("analytics", &moments[1])] {
        let sock = socket_folder(&env, &format!("sock-{db}"));
        let (out, server) = recover_and_start(
            &env,
            &format!("pitr-{db}"),
            &sock,
            &["--db", db, "--target-time", at],
        );
        assert_eq!(out.code, 0, "{db}: {}", out.stderr);
        assert_eq!(rows(&sock, server.port), "1", "{db}");
    }
    // Without `--db`: refused, naming both.
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        env.dir.path().join("which").to_str().unwrap(),
        "--latest",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("`analytics`, `main`"),
        "{}",
        out.stderr
    );
}

/// A repository written before clusters had records (its archive at `wal/`, `wal/cluster.json`,
/// no `clusters/`) is read as it is: listed, recovered, and archived into where it is; nothing
/// moves.
#[test]
fn a_repository_from_before_clusters_is_read_as_it_is() {
    let env = archiving_env();
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    env.sql("yomira", "CREATE TABLE public.life (id int PRIMARY KEY)");
    env.sql("yomira", "INSERT INTO public.life VALUES (1)");
    switch_and_archive(&socket, port);
    // As the release before clusters left it: no record.
    let record = env.repo_path("clusters/main.json");
    std::fs::remove_file(&record).unwrap();
    let before = env.stored_files();
    assert!(
        !before.iter().any(|k| k.contains("clusters/")),
        "{before:?}"
    );

    let list = env.lifeboat(&["list", "wal", "--json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let archive = &listed["archives"][0];
    assert_eq!(archive["cluster"], "main", "{listed}");
    assert_eq!(archive["generation"]["prefix"], "wal/", "{listed}");
    assert!(
        !archive["timelines"].as_array().unwrap().is_empty(),
        "{listed}"
    );

    let sock = socket_folder(&env, "sock-old");
    let (out, server) = recover_and_start(&env, "old", &sock, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rows(&sock, server.port), "1");
    drop(server);

    // Archiving goes on into `wal/`, and nothing that was there moved.
    env.sql("yomira", "INSERT INTO public.life VALUES (2)");
    let segment = switch_and_archive(&socket, port);
    let after = env.stored_files();
    assert!(
        after
            .iter()
            .any(|k| k.ends_with(&format!("wal/{segment}.zst.age"))),
        "{after:?}"
    );
    let moved: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    assert!(moved.is_empty(), "{moved:?}");
}
