//! lifeboat killed with SIGKILL, at several moments: it cannot clean up, so nothing may need
//! cleaning. No password or decrypted dump in the temporary folder, no child (pg_dump,
//! pg_restore and its workers, a scratch server) carrying on without it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lifeboat_testkit::ClusterOptions;

use crate::support::{wait_for_blocked_dump, wait_until, Env, Repo, TableLock};

/// A temporary folder of the test's own, given to lifeboat as `TMPDIR`.
fn private_tmp(env: &mut Env) -> PathBuf {
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    env.extra_env
        .push(("TMPDIR".into(), tmp.display().to_string()));
    tmp
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sessions of lifeboat's tools (`application_name = lifeboat`) in the cluster.
fn tool_sessions(env: &Env) -> u32 {
    env.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat'",
    )
    .parse()
    .unwrap()
}

/// Processes named `name` working on this test's cluster (their environment names its port).
fn tool_processes(env: &Env, name: &str) -> Vec<u32> {
    let port = format!("PGPORT={}", env.cluster.port());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
            comm.trim() == name
                && !zombie
                && environ.split(|b| *b == 0).any(|v| v == port.as_bytes())
        })
        .collect()
}

/// Waits until one of lifeboat's sessions is loading the slow table.
fn wait_for_slow_load(env: &Env) {
    wait_until(
        Duration::from_secs(60),
        "a session loading the slow table",
        || {
            env.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat' AND query LIKE 'COPY public.slow%'",
        ) != "0"
        },
    );
}

fn kill_9(child: &mut std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_backup_leaves_no_password_and_no_dump_running() {
    let mut env = Env::with_cluster(
        Repo::Local,
        false,
        ClusterOptions {
            tcp_password: Some("kill-test-pw".into()),
            ..Default::default()
        },
    );
    let tmp = private_tmp(&mut env);
    // Killed while pg_dump waits for a lock, and as soon as pg_dump runs (the table lock
    // keeps the backup from finishing first: the run lock the first kill leaves is taken over
    // at once, its process being gone).
    for moment in ["blocked", "early"] {
        let lock = TableLock::hold(&env, "core.comic");
        let mut child = env
            .command(&["backup", "db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if moment == "blocked" {
            wait_for_blocked_dump(&env);
        } else {
            wait_until(Duration::from_secs(10), "pg_dump to start", || {
                !tool_processes(&env, "pg_dump").is_empty()
            });
        }
        kill_9(&mut child);
        assert!(
            entries(&tmp).is_empty(),
            "{moment}: left in the temporary folder: {:?}",
            entries(&tmp)
        );
        wait_until(Duration::from_secs(10), "pg_dump to be gone", || {
            tool_processes(&env, "pg_dump").is_empty()
        });
        drop(lock);
        env.end_waiting_backends();
    }
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert!(listed.is_empty());
}

#[test]
fn a_killed_parallel_restore_leaves_no_spool_and_no_workers() {
    let mut env = Env::new(Repo::Local, true);
    // A table whose rows load slowly in a database that says so, so that pg_restore's workers
    // are mid-load when lifeboat is killed.
    env.add_slow_table(800, 0.02);
    let id = env.backup(&[]);
    let tmp = private_tmp(&mut env);
    // Spooled then loaded by pg_restore's workers, and streamed into one transaction.
    let rounds = [("spooling", true), ("loading", true), ("loading", false)];
    for (round, (moment, spool)) in rounds.iter().enumerate() {
        let db = format!("target{round}");
        env.new_database(&db);
        env.sql(
            "postgres",
            &format!("ALTER DATABASE {db} SET lifeboat.slow = 'on'"),
        );
        let url = env.cluster.url(&db);
        let mut child = env
            .command(
                &[
                    &["restore", "db", &id, "--into", &url, "--jobs", "2"][..],
                    if *spool { &["--spool"][..] } else { &[] },
                ]
                .concat(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if *moment == "spooling" {
            std::thread::sleep(Duration::from_millis(150));
        } else {
            wait_for_slow_load(&env);
        }
        kill_9(&mut child);
        assert!(
            entries(&tmp).is_empty(),
            "{moment}: left in the temporary folder: {:?}",
            entries(&tmp)
        );
        // The workers do not carry on into the database without lifeboat.
        wait_until(
            Duration::from_secs(5),
            "pg_restore and its workers to be gone",
            || tool_processes(&env, "pg_restore").is_empty(),
        );
        // Their sessions roll back (a COPY reads the rows left in its socket, then finds its
        // client gone): nothing of the slow table is committed.
        wait_until(Duration::from_secs(120), "their sessions to end", || {
            tool_sessions(&env) == 0
        });
        // The table may not exist at all (killed before pre-data was committed): ask first.
        let exists = env.sql(&db, "SELECT to_regclass('public.slow') IS NOT NULL");
        let committed = if exists == "t" {
            env.sql(&db, "SELECT count(*) FROM public.slow")
        } else {
            String::new()
        };
        assert!(
            committed.is_empty() || committed == "0",
            "{moment}: {committed} rows committed by workers without lifeboat"
        );
    }
}

/// A pipelined restore (`--create --spool`) killed at several moments (restoring the schema,
/// loading tables while the archive arrives): no spool, no psql or pg_restore carrying on, no
/// session; at most its staging database, which the next run drops before restoring whole.
#[test]
fn a_killed_pipelined_restore_leaves_only_its_staging_database() {
    let mut env = Env::new(Repo::Local, true);
    env.add_slow_table(800, 0.02);
    let id = env.backup(&[]);
    let tmp = private_tmp(&mut env);
    env.sql("postgres", "ALTER ROLE lifeboat SET lifeboat.slow = 'on'");
    let url = env.cluster.url("fresh");
    let args = [
        "restore", "db", &id, "--into", &url, "--create", "--jobs", "2", "--spool",
    ];
    for moment in ["after 100 ms", "after 300 ms", "loading", "loading"] {
        let mut child = env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match moment {
            "after 100 ms" => std::thread::sleep(Duration::from_millis(100)),
            "after 300 ms" => std::thread::sleep(Duration::from_millis(300)),
            _ => wait_for_slow_load(&env),
        }
        kill_9(&mut child);
        assert!(entries(&tmp).is_empty(), "{moment}: {:?}", entries(&tmp));
        wait_until(
            Duration::from_secs(5),
            "psql and pg_restore to be gone",
            || {
                tool_processes(&env, "psql").is_empty()
                    && tool_processes(&env, "pg_restore").is_empty()
            },
        );
        wait_until(Duration::from_secs(120), "their sessions to end", || {
            tool_sessions(&env) == 0
        });
        // Never the database under its own name.
        let left = env.sql(
            "postgres",
            "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE 'fresh%'",
        );
        assert!(
            left.is_empty() || left == "fresh_lifeboat_partial",
            "{moment}: {left}"
        );
    }
    env.sql("postgres", "ALTER ROLE lifeboat RESET lifeboat.slow");
    let out = env.lifeboat(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.sql("fresh", "SELECT count(*) FROM public.slow"), "800");
    assert_eq!(env.fingerprints("fresh"), env.fingerprints("yomira"));
}

#[test]
fn a_killed_verification_leaves_no_server_running() {
    let mut env = Env::new(Repo::Local, false);
    let id = env.backup(&[]);
    let tmp = private_tmp(&mut env);
    let mut child = env
        .command(&["verify", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = || -> Option<PathBuf> {
        entries(&tmp)
            .into_iter()
            .filter(|n| n.starts_with("lifeboat-pg-"))
            .map(|n| tmp.join(n).join("data").join("postmaster.pid"))
            .find(|p| p.exists())
    };
    // Once its scratch server runs (its pid file is written in steps: read until whole).
    let mut pid = 0u32;
    wait_until(Duration::from_secs(60), "the scratch server", || {
        pid = pid_file()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.lines().next()?.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    kill_9(&mut child);
    // Gone, or a zombie waiting for init.
    wait_until(
        Duration::from_secs(10),
        "the scratch server to stop",
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'))
            })
        },
    );
}

/// SIGKILL for `child` and for the watchdog it started, together (as `killall -9 lifeboat`
/// or the OOM killer's choice of both do): nobody is left to kill what it ran.
fn kill_9_with_watchdog(child: &mut std::process::Child) {
    let parent = child.id().to_string();
    let watchdogs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
            stat.contains("(lifeboat)") && fields.get(1) == Some(&parent.as_str())
        })
        .map(|pid| pid.to_string())
        .collect();
    assert!(!watchdogs.is_empty(), "no watchdog under lifeboat {parent}");
    let killed = std::process::Command::new("kill")
        .arg("-KILL")
        .args(&watchdogs)
        .status()
        .unwrap();
    assert!(killed.success());
    kill_9(child);
}

/// A restore that loads through `psql` in one transaction (`restore db --clean`), killed with
/// its watchdog while a table loads and the archive's end has not yet been read: `psql`,
/// reading the end of its input in the middle of the script (even of a `COPY`, which it then
/// ends as if complete), must not take it for the end of the script and commit what it has.
/// The target stays as it was. Three rounds.
#[test]
fn a_one_transaction_restore_killed_with_its_watchdog_commits_nothing() {
    let env = Env::new(Repo::Local, false);
    env.add_slow_table(800, 0.02);
    // After the slow table in the archive, more than the pipes hold: its end cannot have
    // been read while the slow table loads.
    env.sql(
        "yomira",
        "CREATE TABLE public.tail AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS pad \
         FROM generate_series(1, 100000) g",
    );
    let id = env.backup(&[]);
    let url = env.cluster.url("target");
    let out = env.lifeboat(&["restore", "db", &id, "--into", &url, "--create"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    env.sql(
        "target",
        "UPDATE core.comic SET title = 'drifted' WHERE id = 1; DELETE FROM public.tail",
    );
    let state = || {
        let mut all = env.fingerprints("target");
        all.push(env.sql("target", "SELECT count(*) FROM public.slow"));
        all.push(env.sql("target", "SELECT count(*) FROM public.tail"));
        all
    };
    let before = state();
    env.sql("postgres", "ALTER ROLE lifeboat SET lifeboat.slow = 'on'");
    for round in 0..3 {
        let mut child = env
            .command(&["restore", "db", &id, "--into", &url, "--clean"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_slow_load(&env);
        kill_9_with_watchdog(&mut child);
        // psql is left to itself: it ends when its input has ended, committing or not.
        wait_until(Duration::from_secs(60), "psql to end", || {
            tool_processes(&env, "psql").is_empty()
        });
        wait_until(Duration::from_secs(60), "its session to end", || {
            tool_sessions(&env) == 0
        });
        assert_eq!(state(), before, "round {round}: a killed restore committed");
    }
    // Not killed, the same restore puts the backup back.
    env.sql("postgres", "ALTER ROLE lifeboat RESET lifeboat.slow");
    let out = env.lifeboat(&["restore", "db", &id, "--into", &url, "--clean"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("target"), env.fingerprints("yomira"));
    assert_eq!(
        env.sql("target", "SELECT count(*) FROM public.tail"),
        "100000"
    );
}
