//! The lost server: a database whose objects belong to an application role and are granted to
//! a read-only one is restored onto a server just made by initdb, roles and database included.

use std::process::Command;
use std::time::Duration;

use lifeboat_testkit::{ClusterOptions, ScratchCluster};

use crate::support::{pipelined, tools, wait_until, Env, Repo};

/// Ownership, privileges, memberships, role attributes and database settings, as the catalogs
/// say them, for comparing two servers.
const CATALOG: &str = "\
    SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '-') \
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
      WHERE n.nspname IN ('app', 'core') \
    UNION ALL SELECT 'schema ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '-') \
      FROM pg_namespace WHERE nspname IN ('app', 'core') \
    UNION ALL SELECT 'member ' || r.rolname || ' in ' || g.rolname \
      FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
      WHERE r.rolname LIKE 'yomira%' \
    UNION ALL SELECT 'role ' || rolname || ' login=' || rolcanlogin || ' ' || coalesce(rolconfig::text, '-') \
      FROM pg_roles WHERE rolname LIKE 'yomira%' \
    UNION ALL SELECT 'db ' || pg_get_userbyid(d.datdba) || ' ' || pg_encoding_to_char(d.encoding) || ' ' || \
      coalesce((SELECT setconfig::text FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0), '-') \
      FROM pg_database d WHERE datname = 'yomira' \
    ORDER BY 1";

/// Logs in to `db` as the application role over TCP with `password`; who it is and its
/// `search_path`.
fn log_in(cluster: &ScratchCluster, db: &str, password: &str) -> String {
    let out = Command::new(tools().path("psql"))
        .args([
            "-XAtc",
            "SELECT current_user || ' ' || current_setting('search_path')",
        ])
        .arg(format!(
            "postgresql://yomira_app@127.0.0.1:{}/{db}",
            cluster.port()
        ))
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn catalog(cluster: &ScratchCluster) -> String {
    cluster.psql("yomira", CATALOG).expect("the catalog query")
}

#[test]
fn a_database_is_restored_onto_an_empty_server_with_its_roles() {
    let env = Env::new(Repo::Local, true);
    env.sql(
        "postgres",
        "CREATE ROLE yomira_app LOGIN PASSWORD 'app-old-pw'; CREATE ROLE yomira_read NOLOGIN; \
         GRANT yomira_read TO yomira_app; ALTER ROLE yomira_app SET work_mem = '8MB'; \
         ALTER DATABASE yomira OWNER TO yomira_app; \
         ALTER DATABASE yomira SET search_path = app, public; \
         ALTER DATABASE yomira SET statement_timeout = '7s'",
    );
    env.sql(
        "yomira",
        "CREATE SCHEMA app AUTHORIZATION yomira_app; \
         CREATE TABLE app.series (id int PRIMARY KEY, title text); \
         ALTER TABLE app.series OWNER TO yomira_app; \
         GRANT USAGE ON SCHEMA app TO yomira_read; GRANT SELECT ON app.series TO yomira_read; \
         INSERT INTO app.series VALUES (1, 'One'), (2, 'Two'); \
         GRANT SELECT ON ALL TABLES IN SCHEMA core TO yomira_read",
    );
    let before = catalog(&env.cluster);
    assert!(
        before.contains("member yomira_app in yomira_read"),
        "{before}"
    );
    let id = env.backup(&[]);

    // A server just made: none of the roles, no database.
    let fresh = ScratchCluster::start(
        &tools(),
        &ClusterOptions {
            tcp_password: Some("fresh-superuser-pw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    // Without the roles, the restore cannot give the objects their owners.
    fresh.create_database("plain").unwrap();
    let refused = env.lifeboat(&["restore", "db", &id, "--into", &fresh.url("plain")]);
    assert_ne!(refused.code, 0, "{}", refused.stderr);

    let restored = env.lifeboat(&[
        "restore",
        "db",
        &id,
        "--into",
        &fresh.url("yomira"),
        "--create",
        "--globals",
        "--json",
    ]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let report: serde_json::Value = serde_json::from_str(&restored.stdout).unwrap();
    let created = report["roles"]["created"].to_string();
    assert!(
        created.contains("yomira_app") && created.contains("yomira_read"),
        "{report}"
    );
    // The server's own superuser exists already: kept as it is.
    assert!(
        report["roles"]["kept"].to_string().contains("lifeboat"),
        "{report}"
    );
    assert_eq!(report["created"], true);
    assert!(
        restored.stderr.contains("created database `yomira`"),
        "{}",
        restored.stderr
    );

    // Ownership, grants, memberships, role settings and database settings as they were.
    assert_eq!(catalog(&fresh), before);
    assert_eq!(
        fresh
            .psql(
                "yomira",
                "SELECT string_agg(title, ',' ORDER BY id) FROM app.series"
            )
            .unwrap()
            .trim(),
        "One,Two"
    );
    // The application logs in with its old password.
    assert_eq!(
        log_in(&fresh, "yomira", "app-old-pw"),
        "yomira_app app, public"
    );

    // Roles that exist are left alone: a second server where the application's password
    // has changed keeps it.
    fresh
        .psql("postgres", "ALTER ROLE yomira_app PASSWORD 'app-new-pw'")
        .unwrap();
    fresh.create_database("again").unwrap();
    let again = env.lifeboat(&[
        "restore",
        "db",
        &id,
        "--into",
        &fresh.url("again"),
        "--globals",
        "--json",
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        report["roles"]["created"],
        serde_json::json!([]),
        "{report}"
    );
    assert!(
        report["roles"]["kept"].to_string().contains("yomira_app"),
        "{report}"
    );
    assert!(log_in(&fresh, "again", "app-new-pw").starts_with("yomira_app "));
}

/// The databases of the cluster whose name starts with `prefix`.
fn databases(env: &Env, prefix: &str) -> String {
    env.sql(
        "postgres",
        &format!(
            "SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database \
             WHERE datname LIKE '{prefix}%'"
        ),
    )
}

/// `restore db ID --into URL` and `args`.
fn restore_args<'a>(id: &'a str, url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["restore", "db", id, "--into", url][..], args].concat()
}

/// lifeboat's sessions in databases whose name starts with `prefix`.
fn sessions(env: &Env, prefix: &str) -> String {
    env.sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '{prefix}%' \
             AND application_name = 'lifeboat'"
        ),
    )
}

/// `--create` makes the database appear under its name only once it is whole: a restore that
/// is stopped, killed or finds its archive damaged leaves no database (in particular not a
/// half-loaded one from the parallel `--spool` path, which commits table by table), the next
/// run drops what a killed one left, and two restores of one name never both run.
#[test]
fn a_created_database_appears_only_when_whole() {
    let env = Env::new(Repo::Local, false);
    // A table that loads slowly while lifeboat's role says so.
    env.add_slow_table(1000, 0.01);
    let id = env.backup(&[]);
    let slow = |on: bool| {
        env.sql(
            "postgres",
            if on {
                "ALTER ROLE lifeboat SET lifeboat.slow = 'on'"
            } else {
                "ALTER ROLE lifeboat RESET lifeboat.slow"
            },
        );
    };
    let source = env.fingerprints("yomira");
    let url = env.cluster.url("fresh");
    let spool: &[&str] = &["--create", "--jobs", "2", "--spool"];
    let streamed: &[&str] = &["--create", "--jobs", "1"];
    // Waits until the slow table is loading into database `db`.
    let loading = |db: &str| {
        wait_until(Duration::from_secs(60), "the slow table loading", || {
            env.sql(
                "postgres",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'COPY public.slow%'"),
            ) != "0"
        })
    };
    let start = |url: &str, args: &[&str]| env.start(&restore_args(&id, url, args));

    // Stopped (SIGTERM) while loading, streamed and parallel: nothing left.
    slow(true);
    for args in [streamed, spool] {
        let child = start(&url, args);
        loading("fresh_lifeboat_partial");
        let out = crate::support::terminate(child);
        assert_eq!(out.code, 130, "{args:?}: {}", out.stderr);
        // Stopped at once, cleaned up, not cut off when the grace ran out.
        assert!(
            !out.stderr.contains("clean-up did not end"),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(databases(&env, "fresh"), "", "{args:?}: {}", out.stderr);
    }

    // Killed while loading: the half-restored database is there under its staging name only,
    // and the next restore drops it and restores whole.
    let mut child = start(&url, spool);
    loading("fresh_lifeboat_partial");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(databases(&env, "fresh"), "fresh_lifeboat_partial");

    // The session holding the lock is closed under a long restore (an idle timeout, an
    // administrator): the restore reconnects to give the database its name.
    let idle = env.cluster.url("idle");
    let child = start(&idle, spool);
    loading("idle_lifeboat_partial");
    assert_eq!(
        env.sql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ),
        "1"
    );
    let out = crate::support::run_of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(databases(&env, "idle"), "idle");
    slow(false);
    let out = env.lifeboat(&restore_args(&id, &url, spool));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("dropped database `fresh_lifeboat_partial`, left half-restored"),
        "{}",
        out.stderr
    );
    assert_eq!(databases(&env, "fresh"), "fresh");
    assert_eq!(env.fingerprints("fresh"), source);
    // The mark that let it drop the leftover is not left on the restored database.
    assert_eq!(
        env.sql(
            "postgres",
            "SELECT coalesce(shobj_description(oid, 'pg_database'), 'none') FROM pg_database WHERE datname = 'fresh'"
        ),
        "none"
    );
    // A database that only has the staging name, without lifeboat's mark and not empty, is
    // not dropped.
    env.new_database("mine_lifeboat_partial");
    env.sql("mine_lifeboat_partial", "CREATE TABLE mine (x int)");
    let out = env.lifeboat(&restore_args(&id, &env.cluster.url("mine"), streamed));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("database `mine_lifeboat_partial` exists and is not a restore lifeboat left"),
        "{}",
        out.error_line()
    );
    assert_eq!(databases(&env, "mine"), "mine_lifeboat_partial");
    assert_eq!(env.sql("fresh", "SELECT count(*) FROM public.slow"), "1000");

    // A database that exists is refused in one line and left alone.
    let out = env.lifeboat(&restore_args(&id, &url, streamed));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("database `fresh` exists already"),
        "{}",
        out.error_line()
    );
    assert_eq!(env.fingerprints("fresh"), source);

    // Two restores of one name started together, five times: one restores, the other is
    // refused (by the lock while the first runs, or because the database then exists).
    for round in 0..5 {
        let name = format!("race{round}");
        let url = env.cluster.url(&name);
        let children: Vec<_> = (0..2).map(|_| start(&url, spool)).collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| crate::support::run_of(c.wait_with_output().unwrap()))
            .collect();
        let said: Vec<String> = outs
            .iter()
            .map(|o| format!("{}: {}", o.code, o.stderr))
            .collect();
        assert_eq!(
            outs.iter().filter(|o| o.code == 0).count(),
            1,
            "round {round}: {said:?}"
        );
        let refused = outs.iter().find(|o| o.code != 0).unwrap();
        let line = refused.error_line();
        assert!(
            line.contains(&format!(
                "another restore into database `{name}` is running"
            )) || line.contains(&format!("database `{name}` exists already")),
            "round {round}: {line}"
        );
        assert_eq!(databases(&env, &name), name);
        assert_eq!(env.fingerprints(&name), source, "round {round}");
    }

    // A damaged archive: refused before anything is committed, nothing left.
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &id, "--json"]).stdout).unwrap();
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let mut damaged = std::fs::read(&data).unwrap();
    let at = damaged.len() - 10;
    damaged[at] ^= 0x01;
    std::fs::write(&data, &damaged).unwrap();
    let url = env.cluster.url("broken");
    for args in [streamed, spool] {
        let out = env.lifeboat(&restore_args(&id, &url, args));
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.error_line().contains("is damaged"),
            "{}",
            out.error_line()
        );
        assert_eq!(databases(&env, "broken"), "", "{args:?}");
    }
    assert_eq!(sessions(&env, "broken"), "0");
}

/// A table that a session fails to load stops a `--create` restore at once, streamed or
/// loaded in parallel while the archive arrives (the refused row in a later piece of a table
/// the pipeline cuts up): exit 1 with what the server said, no database and no session left,
/// the spool file removed. Five rounds each, as the failure races the other sessions and the
/// download.
#[test]
fn a_table_that_fails_to_load_stops_a_created_restore() {
    let env = Env::new(Repo::Local, false);
    env.sql(
        "yomira",
        "CREATE FUNCTION public.refuse(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ \
         BEGIN IF current_setting('lifeboat.refuse', true) = 'on' AND $1 = 30000 THEN \
         RAISE EXCEPTION 'row % refused', $1; END IF; RETURN true; END $$; \
         CREATE TABLE public.picky (id int CHECK (public.refuse(id)), pad text); \
         INSERT INTO public.picky SELECT g, repeat('x', 80) FROM generate_series(1, 40000) g",
    );
    let id = env.backup(&[]);
    env.sql("postgres", "ALTER ROLE lifeboat SET lifeboat.refuse = 'on'");
    let spool = env.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let url = env.cluster.url("fresh");
    let pipelined = pipelined(&spool);
    for args in [&["--create", "--jobs", "1"][..], &pipelined[..]] {
        for round in 0..5 {
            let out = env.lifeboat(&restore_args(&id, &url, args));
            assert_eq!(out.code, 1, "{args:?} round {round}: {}", out.stderr);
            // What the server said, and which table.
            let line = out.error_line();
            assert!(
                line.contains("row 30000 refused") && line.contains("COPY picky"),
                "{args:?} round {round}: {}",
                out.stderr
            );
            assert_eq!(databases(&env, "fresh"), "", "{args:?} round {round}");
            assert_eq!(sessions(&env, "fresh"), "0", "{args:?} round {round}");
            assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
        }
    }
    // Without the refusal, the same restore succeeds, the table loaded in pieces.
    env.sql("postgres", "ALTER ROLE lifeboat RESET lifeboat.refuse");
    let out = env.lifeboat(&restore_args(
        &id,
        &url,
        &[&pipelined[..], &["--json"]].concat(),
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        report["pieces"].as_u64().unwrap() > report["tables_checked"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(
        env.sql(
            "fresh",
            "SELECT count(*), count(DISTINCT id) FROM public.picky"
        ),
        "40000|40000"
    );
}

/// A pipelined restore (`--create --jobs 2`) of a backup whose archive is over 100 MB keeps
/// only a window of it on disk, not all of it: each piece of a table leaves the spool once
/// loaded and the download waits for the sessions (from a local repository it would
/// otherwise be whole on disk in a second), while large objects, which `pg_restore` reads
/// after the load, are still there for it. What the spool file takes on disk is sampled from
/// outside, through `/proc`, while the restore runs. Without a folder for a spool file, the
/// same restore goes in one stream instead, and says so. Then, the sessions slowed down, the
/// restore is stopped with SIGTERM while its download waits for them, three times: it ends
/// at once and leaves nothing.
#[test]
fn a_pipelined_restore_spools_a_window_of_the_archive_not_all_of_it() {
    let env = Env::new(Repo::Local, false);
    env.sql(
        "yomira",
        "CREATE FUNCTION public.paced(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ \
         BEGIN IF $1 % 1000 = 0 AND current_setting('lifeboat.paced', true) = 'on' THEN \
         PERFORM pg_sleep(0.05); END IF; RETURN true; END $$; \
         CREATE TABLE public.wide (id int PRIMARY KEY CHECK (public.paced(id)), pad text); \
         INSERT INTO public.wide SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 1000000) g",
    );
    let out = env.lifeboat(&["backup", "db", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let (id, raw) = (
        manifest["id"].as_str().unwrap().to_string(),
        manifest["raw_size"].as_u64().unwrap(),
    );
    assert!(raw > 100 << 20, "{raw}");
    let spool = env.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let url = env.cluster.url("fresh");
    // `--create --jobs N` is pipelined without `--spool`.
    let child = env.start(&restore_args(
        &id,
        &url,
        &[
            "--create",
            "--jobs",
            "2",
            "--spool-dir",
            spool.to_str().unwrap(),
            "--json",
        ],
    ));
    let pid = child.id();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (out, sampled) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut most = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(spool_on_disk(pid, &spool));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        let out = crate::support::run_of(child.wait_with_output().unwrap());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, sampler.join().unwrap())
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["pipelined"], true, "{report}");
    eprintln!("archive {raw} bytes, spool seen at {sampled}, reported {report}");
    // Seen, and bounded: about 3/8 of the archive (the window: a piece per session and one
    // more), where the whole archive used to be spooled.
    assert!(sampled > 0, "the spool file was never seen");
    assert!(sampled < raw / 2, "the spool took {sampled} of {raw} bytes");
    // The report says as much.
    let peak = report["spool_peak_bytes"].as_u64().unwrap();
    assert!(
        sampled <= peak + (1 << 20),
        "sampled {sampled}, reported {peak}"
    );
    assert!(peak < raw / 2, "reported {peak} of {raw} bytes");
    assert_eq!(env.fingerprints("fresh"), env.fingerprints("yomira"));
    assert_eq!(
        env.fingerprint("fresh", "public.wide"),
        env.fingerprint("yomira", "public.wide")
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    // No folder to make a spool file in: restored in one stream instead, and said.
    let out = crate::support::run_of(
        env.command(&restore_args(
            &id,
            &env.cluster.url("streamed"),
            &["--create", "--jobs", "2", "--json"],
        ))
        .env("TMPDIR", env.dir.path().join("gone"))
        .output()
        .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["pipelined"], false, "{report}");
    assert!(
        out.stderr.contains("no spool file can be made") && out.stderr.contains("gone"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.fingerprint("streamed", "public.wide"),
        env.fingerprint("yomira", "public.wide")
    );

    // Loading at 20,000 rows a second: the download fills the window in a moment, then waits.
    env.sql("postgres", "ALTER ROLE lifeboat SET lifeboat.paced = 'on'");
    let url = env.cluster.url("paced");
    let args = restore_args(&id, &url, &pipelined(&spool));
    for round in 0..3 {
        let child = env.start(&args);
        let pid = child.id();
        let mut seen = Vec::new();
        wait_until(Duration::from_secs(60), "the spool to stop growing", || {
            seen.push(spool_on_disk(pid, &spool));
            std::thread::sleep(Duration::from_millis(100));
            seen.len() > 5
                && seen[seen.len() - 5..]
                    .iter()
                    .all(|s| *s > 0 && *s == seen[seen.len() - 1])
        });
        assert!(seen.iter().all(|s| *s < raw / 2), "round {round}: {seen:?}");
        stopped_leaving_nothing(&env, child, "paced", &spool, &format!("round {round}"));
    }
    env.sql("postgres", "ALTER ROLE lifeboat RESET lifeboat.paced");
}

/// Stops a running restore into a database whose name starts with `prefix` with SIGTERM: it
/// must end within seconds (exit 130), and leave no session, no database and no file in
/// `spool`.
fn stopped_leaving_nothing(
    env: &Env,
    child: std::process::Child,
    prefix: &str,
    spool: &std::path::Path,
    what: &str,
) {
    let stopped = std::time::Instant::now();
    let out = crate::support::terminate(child);
    assert_eq!(out.code, 130, "{what}: {}", out.stderr);
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "{what}: stopped in {:?}",
        stopped.elapsed()
    );
    wait_until(Duration::from_secs(5), "the sessions to end", || {
        sessions(env, prefix) == "0"
    });
    assert_eq!(databases(env, prefix), "", "{what}");
    assert_eq!(std::fs::read_dir(spool).unwrap().count(), 0, "{what}");
}

/// The disk taken by the files process `pid` has open in `dir` (its spool file, unnamed, open
/// more than once), each counted once.
fn spool_on_disk(pid: u32, dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let files: std::collections::HashMap<u64, u64> = fds
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(dir)))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|meta| (meta.ino(), meta.blocks() * 512))
        .collect();
    files.values().sum()
}

/// A pipelined restore (`--create --spool`) stopped with SIGTERM while its sessions load a
/// table and while one builds an index that would take a minute: it stops within seconds
/// (exit 130), and leaves no session, no database and no spool file. Three rounds of each.
#[test]
fn a_stopped_pipelined_restore_ends_its_sessions_at_once() {
    let env = Env::new(Repo::Local, false);
    env.add_slow_table(2000, 0.02);
    env.sql(
        "yomira",
        "CREATE FUNCTION public.slow_key(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ \
         BEGIN IF current_setting('lifeboat.slow_index', true) = 'on' THEN \
         PERFORM pg_sleep(0.05); END IF; RETURN $1; END $$; \
         CREATE TABLE public.indexed (id int); \
         INSERT INTO public.indexed SELECT generate_series(1, 1200); \
         CREATE INDEX indexed_slowly ON public.indexed (public.slow_key(id))",
    );
    let id = env.backup(&[]);
    let spool = env.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let url = env.cluster.url("fresh");
    let args = restore_args(&id, &url, &pipelined(&spool));
    let running = |query: &str| {
        env.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'fresh%' \
                 AND application_name = 'lifeboat' AND query LIKE '{query}%'"
            ),
        ) != "0"
    };
    for (setting, query) in [
        ("lifeboat.slow", "COPY public.slow"),
        ("lifeboat.slow_index", "CREATE INDEX indexed_slowly"),
    ] {
        env.sql(
            "postgres",
            &format!("ALTER ROLE lifeboat SET {setting} = 'on'"),
        );
        for round in 0..3 {
            let child = env.start(&args);
            wait_until(Duration::from_secs(60), query, || running(query));
            stopped_leaving_nothing(
                &env,
                child,
                "fresh",
                &spool,
                &format!("{query} round {round}"),
            );
        }
        env.sql("postgres", &format!("ALTER ROLE lifeboat RESET {setting}"));
    }
    // Then the same restore goes through, the slow index built.
    let out = env.lifeboat(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("fresh"), env.fingerprints("yomira"));
}
