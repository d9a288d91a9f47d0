//! Bad input and failures: each is one clear line, a non-zero exit, and loses nothing.

use std::time::Duration;

use crate::support::{run_of, wait_for_blocked_dump, wait_until, Env, Repo, TableLock};

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn interrupted_backup_leaves_nothing_listed() {
    let env = Env::new(Repo::S3, false);
    let kept = env.backup(&[]);
    let files_before = env.stored_files();

    // SIGTERM while pg_dump is blocked: clean stop, upload aborted, nothing listed.
    let lock = TableLock::hold(&env, "core.comic");
    let child = env.blocked_backup();
    signal(child.id(), "TERM");
    let out = run_of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 130, "stderr: {}", out.stderr);
    assert!(out.error_line().contains("interrupted"), "{}", out.stderr);
    env.assert_only_backup(&kept, &files_before, "the interrupted backup");
    env.end_waiting_backends();

    // pg_dump dying mid-way: the backup fails naming pg_dump, nothing listed.
    let child = env.blocked_backup();
    let pids = String::from_utf8(
        std::process::Command::new("pgrep")
            .args(["-x", "-P", &child.id().to_string(), "pg_dump"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pg_dump = pids
        .split_whitespace()
        .next()
        .expect("pg_dump is a child of lifeboat");
    signal(pg_dump.parse().unwrap(), "KILL");
    let out = run_of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    assert!(
        out.error_line()
            .contains("`pg_dump` was killed by signal 9"),
        "{}",
        out.stderr
    );
    assert_eq!(env.stored_files(), files_before);
    env.end_waiting_backends();

    // SIGKILL of lifeboat itself: it cannot clean up, but nothing is listed.
    let mut child = env
        .command(&["backup", "db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_blocked_dump(&env);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lock);
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.len(), 1, "a killed backup was listed");
    // and the kept backup still restores.
    env.new_database("after");
    let out = env.restore(&kept, "after", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_failed_roles_dump_stops_the_backup_at_once_and_leaves_nothing() {
    // The roles are taken while the dump streams: their failure must stop a dump that would
    // take long (here: waiting for a lock held for minutes), not wait for its end.
    let mut env = Env::new(Repo::S3, false);
    let kept = env.backup(&[]);
    let files_before = env.stored_files();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = crate::support::tools().path("pg_dump");
    for entry in std::fs::read_dir(real.parent().unwrap()).unwrap().flatten() {
        if entry.file_name() != "pg_dumpall" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
        }
    }
    let fake = bin.join("pg_dumpall");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'pg_dumpall: error: query failed: permission denied for table pg_authid' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.extra_env
        .push(("LIFEBOAT_PG_BIN_DIR".into(), bin.display().to_string()));
    let lock = TableLock::hold(&env, "core.comic");
    for round in 0..5 {
        let started = std::time::Instant::now();
        let mut child = env.start(&["backup", "db"]);
        let ended = wait_until_ended(&mut child, Duration::from_secs(30));
        if !ended {
            let _ = child.kill();
        }
        let out = run_of(child.wait_with_output().unwrap());
        assert!(
            ended,
            "round {round}: the backup waited for its dump: {}",
            out.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(20), "round {round}");
        assert_eq!(out.code, 1, "round {round}: {}", out.stderr);
        assert!(
            out.error_line().contains("pg_dumpall")
                && out
                    .error_line()
                    .contains("permission denied for table pg_authid"),
            "round {round}: {}",
            out.stderr
        );
        env.assert_only_backup(&kept, &files_before, "the backup whose roles failed");
        env.end_waiting_backends();
    }
    drop(lock);
}

/// Waits up to `limit` for `child` to exit; whether it did.
fn wait_until_ended(child: &mut std::process::Child, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn bad_inputs_are_one_line_and_change_nothing() {
    let env = Env::new(Repo::Local, true);
    let id = env.backup(&[]);
    env.new_database("target");

    let out = env.restore("20990101T000000Z-ffff", "target", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("backup `20990101T000000Z-ffff` not found"),
        "{}",
        out.stderr
    );

    let out = env.restore(&id, "target", &["--table", "core.nosuch"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("`core.nosuch` is not in backup"),
        "{}",
        out.stderr
    );

    let bad_target = format!(
        "postgresql:///target?host={}&port=1&user=lifeboat",
        env.cluster.socket_dir().display()
    );
    let out = env.lifeboat(&["restore", "db", &id, "--into", &bad_target]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("cannot connect to target database"),
        "{}",
        out.stderr
    );

    // Wrong identity.
    let other = env.dir.path().join("other-identity.txt");
    assert_eq!(
        env.lifeboat(&["key", "generate", "--out", other.to_str().unwrap()])
            .code,
        0
    );
    let out = env.restore(&id, "target", &["--identity", other.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("does not match any recipient"),
        "{}",
        out.stderr
    );

    // A base backup of a server that does not archive its WAL through lifeboat could never
    // be recovered: refused before anything is stored.
    let before = env.stored_files();
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("does not archive its WAL to lifeboat (archive_mode = `off`"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.stored_files(),
        before,
        "a refused base backup stored data"
    );

    // Missing identity: the config without `identity_file`.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("identity_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut env2 = env;
    env2.write_config(&without);
    let out = env2.restore(&id, "target", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("is encrypted: pass `--identity FILE`"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env2.table_count("target"),
        0,
        "a failed restore changed the target"
    );

    // Unknown config key, with its line.
    env2.write_config(&format!("{without}\nbukket = 1\n"));
    let out = env2.lifeboat(&["list"]);
    assert_eq!(out.code, 1);
    let line = out.error_line();
    assert!(
        line.contains("unknown field `bukket`") && line.contains("line"),
        "{line}"
    );

    // A folder that is not a repository.
    env2.write_config(&format!(
        "[repository]\nurl = \"file://{}/elsewhere\"\n",
        env2.dir.path().display()
    ));
    let out = env2.lifeboat(&["list"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.error_line().contains("run `lifeboat init`"),
        "{}",
        out.stderr
    );
    assert!(
        !env2.dir.path().join("elsewhere").exists(),
        "a failed command created a folder"
    );
}

/// Makes the manifest at `path` say `core.comic` has 199 rows (it has 200); its text before.
fn miscount_comics(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for table in value["tables"].as_array_mut().unwrap() {
        if table["name"] == "comic" {
            table["rows"] = serde_json::json!(199);
        }
    }
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    text
}

#[test]
fn damaged_or_mismatching_backups_fail_and_roll_back() {
    let env = Env::new(Repo::Local, false);
    let id = env.backup(&[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &id, "--json"]).stdout).unwrap();
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let manifest_path = env.repo_path(&format!("manifests/{id}.json"));

    // One byte changed near the end of the stored data.
    let original = std::fs::read(&data).unwrap();
    let mut damaged = original.clone();
    let at = damaged.len() - 10;
    damaged[at] ^= 0x01;
    std::fs::write(&data, &damaged).unwrap();
    env.new_database("target");
    let out = env.restore(&id, "target", &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!("backup `{id}` is damaged")),
        "{line}"
    );
    assert_eq!(
        env.table_count("target"),
        0,
        "a damaged backup was partly restored"
    );
    std::fs::write(&data, &original).unwrap();

    // A manifest whose row count does not match what restores.
    miscount_comics(&manifest_path);
    let out = env.restore(&id, "target", &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("`core.comic` has 200 rows, the backup has 199"),
        "{line}"
    );
}

#[test]
fn failed_backups_are_clear() {
    let env = Env::new(Repo::Local, false);
    let out = env.lifeboat(&["backup", "db", "--schema", "nosuch"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("schema `nosuch` does not exist"),
        "{}",
        out.stderr
    );
    let out = env.lifeboat(&["backup", "db", "--db", "other"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("database `other` is not configured"),
        "{}",
        out.stderr
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&env.lifeboat(&["list", "--json"]).stdout).unwrap();
    assert!(listed.is_empty());
    // init twice is refused, the repository untouched.
    let out = env.lifeboat(&["init"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("already a lifeboat repository"),
        "{}",
        out.stderr
    );
    wait_until(Duration::from_secs(1), "nothing", || true);
}

#[test]
fn a_long_dump_outlives_the_servers_idle_transaction_timeout() {
    // The snapshot transaction waits, idle, while pg_dump reads (here: waits for a lock);
    // a server that ends idle transactions after a second must not end the backup.
    let env = Env::new(Repo::Local, false);
    env.sql(
        "yomira",
        "ALTER ROLE lifeboat SET idle_in_transaction_session_timeout = '1s'",
    );
    let lock = TableLock::hold(&env, "core.comic");
    let child = env.blocked_backup();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    drop(lock);
    let out = run_of(child.wait_with_output().unwrap());
    env.sql(
        "yomira",
        "ALTER ROLE lifeboat RESET idle_in_transaction_session_timeout",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    env.new_database("again");
    let restored = env.restore(&out.last_line(), "again", &[]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
}

/// What a target database holds: its tables and the rows of `public.keep`.
fn target_state(env: &Env, db: &str) -> String {
    env.sql(
        db,
        "SELECT (SELECT string_agg(n.nspname || '.' || c.relname, ',' ORDER BY 1) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','m','v','S') \
         AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%') \
         || ' | ' || (SELECT string_agg(id::text || note, ',' ORDER BY id) FROM public.keep)",
    )
}

#[test]
fn an_interrupted_damaged_or_miscounted_restore_leaves_the_target_as_it_was() {
    let env = Env::new(Repo::Local, false);
    // A table whose rows load slowly where the target database says so: a restore is still
    // loading it when it is stopped.
    env.add_slow_table(2000, 0.01);
    env.sql(
        "yomira",
        "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS t \
         FROM generate_series(1, 60000) g",
    );
    let id = env.backup(&[]);
    env.new_database("target");
    env.sql(
        "target",
        "CREATE TABLE public.keep (id int PRIMARY KEY, note text); \
         INSERT INTO public.keep VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    );
    let before = target_state(&env, "target");
    let url = env.cluster.url("target");

    // Stopped while loading (SIGTERM), with and without parallel index builds.
    env.sql("postgres", "ALTER DATABASE target SET lifeboat.slow = 'on'");
    for jobs in ["1", "4"] {
        let child = env.start(&["restore", "db", &id, "--into", &url, "--jobs", jobs]);
        wait_until(Duration::from_secs(60), "the slow table loading", || {
            env.sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'target' AND query LIKE 'COPY public.slow%'",
            ) != "0"
        });
        let out = crate::support::terminate(child);
        assert_eq!(out.code, 130, "--jobs {jobs}: {}", out.stderr);
        wait_until(
            Duration::from_secs(30),
            "the restore's session to end",
            || {
                env.sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'target' AND application_name = 'lifeboat'",
            ) == "0"
            },
        );
        assert_eq!(
            target_state(&env, "target"),
            before,
            "--jobs {jobs} stopped"
        );
    }
    env.sql("postgres", "ALTER DATABASE target RESET lifeboat.slow");

    // A damaged archive: one byte changed near the end of the stored data.
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &id, "--json"]).stdout).unwrap();
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let original = std::fs::read(&data).unwrap();
    let mut damaged = original.clone();
    let at = damaged.len() - 10;
    damaged[at] ^= 0x01;
    std::fs::write(&data, &damaged).unwrap();
    // pg_restore of one early table, or of the definitions only, has what it needs long
    // before the damaged end (megabytes of `public.bulk` come after `Audit.EventLog`): it
    // must not commit before the whole archive is verified.
    let ways: [&[&str]; 4] = [
        &["--jobs", "1"],
        &["--jobs", "4"],
        &["--table", "Audit.EventLog"],
        &["--schema-only"],
    ];
    let refused = |args: &[&str], why: &str| {
        let out = env.restore(&id, "target", args);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(out.error_line().contains(why), "{}", out.error_line());
        assert_eq!(target_state(&env, "target"), before, "{args:?}: {why}");
    };
    for args in ways {
        // A table restored alone needs its schema in the target: without it psql fails
        // on its own, and its error races the verdict on the damage.
        let alone = args[0] == "--table";
        if alone {
            env.sql("target", "CREATE SCHEMA \"Audit\"");
        }
        refused(args, "is damaged");
        if alone {
            env.sql("target", "DROP SCHEMA \"Audit\"");
        }
    }
    std::fs::write(&data, &original).unwrap();

    // An archive whose rows differ from what the backup recorded: found before the commit.
    let manifest_path = env.repo_path(&format!("manifests/{id}.json"));
    let text = miscount_comics(&manifest_path);
    let miscounted = std::fs::read(&manifest_path).unwrap();
    for args in &ways[..2] {
        refused(args, "`core.comic` has 200 rows, the backup has 199");
    }
    // And with --clean over a restored copy that has drifted: the drift stays, nothing dropped.
    std::fs::write(&manifest_path, &text).unwrap();
    env.new_database("drifted");
    assert_eq!(env.restore(&id, "drifted", &[]).code, 0);
    env.sql("drifted", "UPDATE users.account SET email = 'x' || email");
    let drifted = env.fingerprints("drifted");
    std::fs::write(&manifest_path, &miscounted).unwrap();
    let out = env.restore(&id, "drifted", &["--clean", "--jobs", "2"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        env.fingerprints("drifted"),
        drifted,
        "a miscounted --clean committed"
    );
    std::fs::write(&manifest_path, &text).unwrap();
    // The same backup, whole, restores.
    let out = env.restore(&id, "target", &["--jobs", "4"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
