//! Incremental base backups (PostgreSQL 17 and later): a chain taken, restored in one pass into
//! the data folder and compared with what `pg_combinebackup` makes of the same chain; broken
//! chains refused before anything is written; a stop during a chain's restore.
//!
//! Run on whatever PostgreSQL the tests use: on 15 and 16 the test checks that `--incremental`
//! is refused and ends there; `scripts/test` runs it on 17 and 18.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pitr::{archive_through_lifeboat, archiving_cluster, recover_and_start, sql_at};
use crate::support::{tools, wait_until, Env, Repo, Run, S3_SECRET};

/// An environment archiving through lifeboat whose server summarizes its WAL; `None` (after
/// checking that `--incremental` is refused in one line) when the server is older than 17.
fn incremental_env(encrypted: bool) -> Option<Env> {
    let env = Env::with_cluster(Repo::S3, encrypted, archiving_cluster());
    archive_through_lifeboat(&env, &format!("LB_TEST_S3_SECRET={S3_SECRET} "));
    let version: u32 = env
        .sql("yomira", "SHOW server_version_num")
        .parse()
        .unwrap();
    if version < 170_000 {
        let out = env.lifeboat(&["backup", "base", "--incremental"]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.error_line()
                .contains("`--incremental` needs PostgreSQL 17 or later"),
            "{}",
            out.stderr
        );
        assert!(env
            .stored_files()
            .iter()
            .all(|k| !k.starts_with("data/base/")));
        return None;
    }
    env.sql("yomira", "ALTER SYSTEM SET summarize_wal = on");
    env.sql("yomira", "SELECT pg_reload_conf()");
    wait_until(Duration::from_secs(30), "WAL summaries", || {
        env.sql(
            "yomira",
            "SELECT count(*) FROM pg_available_wal_summaries()",
        ) != "0"
            || {
                env.sql("yomira", "SELECT pg_switch_wal()");
                false
            }
    });
    Some(env)
}

/// `backup base [--incremental] --json`: the manifest.
fn base_backup(env: &Env, incremental: bool) -> (serde_json::Value, Run) {
    let mut args = vec!["backup", "base", "--json"];
    if incremental {
        args.push("--incremental");
    }
    let out = env.lifeboat(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (serde_json::from_str(&out.stdout).unwrap(), out)
}

/// Every file under `dir` (relative path → content), and every folder (content `None`).
fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// A stored (unencrypted) base backup's tar, unpacked into `dir` by `zstd -d | tar -x`.
fn untar(env: &Env, manifest: &serde_json::Value, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | tar -x -C '{}'",
            data.display(),
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

fn pg_tool(name: &str) -> PathBuf {
    tools().path(name)
}

#[test]
fn an_incremental_chain_restores_as_pg_combinebackup_makes_it() {
    let Some(env) = incremental_env(false) else {
        return;
    };
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql(
        "yomira",
        "CREATE TABLE public.big AS SELECT i, md5(i::text) AS t FROM generate_series(1, 200000) i; \
         CREATE TABLE public.trunc AS SELECT i FROM generate_series(1, 5000) i; \
         CREATE TABLE public.gone AS SELECT i FROM generate_series(1, 5000) i; \
         CHECKPOINT",
    );
    // Hinted and frozen, as a production table's old rows are (on 18, with data checksums on by
    // default, setting hint bits logs whole pages: a first scan would touch every page).
    env.sql("yomira", "VACUUM (FREEZE, ANALYZE)");
    // No base backup yet: the incremental is a full one, saying why.
    let (full, out) = base_backup(&env, true);
    assert!(full["base"]["parent"].is_null(), "{full}");
    assert!(
        out.stderr.contains("no earlier base backup"),
        "{}",
        out.stderr
    );
    assert!(full["backup_manifest"]["key"]
        .as_str()
        .unwrap()
        .ends_with(".backup_manifest.zst"));

    // A day: 1% of `big` updated (rows side by side, as a day's changes mostly are), a table truncated, one dropped, one made.
    env.sql(
        "yomira",
        "UPDATE public.big SET t = 'day one' WHERE i <= 2000; TRUNCATE public.trunc; \
         DROP TABLE public.gone; CREATE TABLE public.fresh AS SELECT 1 AS one",
    );
    let (first, _) = base_backup(&env, true);
    assert_eq!(first["base"]["parent"], full["id"], "{first}");
    let (full_size, first_size) = (
        full["stored_size"].as_u64().unwrap(),
        first["stored_size"].as_u64().unwrap(),
    );
    assert!(
        first_size * 4 < full_size,
        "incremental {first_size} bytes, full {full_size}"
    );

    // Another: rows deleted from the end of `big` and vacuumed away (the relation shrinks).
    env.sql("yomira", "DELETE FROM public.big WHERE i > 150000");
    env.sql("yomira", "VACUUM public.big");
    env.sql("yomira", "INSERT INTO public.trunc VALUES (7), (8)");
    let (second, _) = base_backup(&env, true);
    assert_eq!(second["base"]["parent"], first["id"], "{second}");

    // `list` shows the chain.
    let list = env.lifeboat(&["list"]);
    let second_id = second["id"].as_str().unwrap();
    let first_id = first["id"].as_str().unwrap();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains(second_id) && l.contains(&format!("since {first_id}"))),
        "{}",
        list.stdout
    );

    // Restored in one pass, and what pg_combinebackup makes of the same chain.
    let ours = env.dir.path().join("ours");
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        ours.to_str().unwrap(),
        "--base",
        second_id,
        "--target-immediate",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("incremental applied"), "{}", out.stderr);
    let staged = env.dir.path().join("staged");
    let mut inputs = Vec::new();
    for (i, m) in [&full, &first, &second].into_iter().enumerate() {
        let dir = staged.join(i.to_string());
        untar(&env, m, &dir);
        inputs.push(dir);
    }
    let reference = env.dir.path().join("combined");
    let out = std::process::Command::new(pg_tool("pg_combinebackup"))
        .args(&inputs)
        .arg("-o")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mine, theirs) = (tree(&ours), tree(&reference));
    // lifeboat adds the recovery settings; each writes its own backup_manifest (checked below).
    let ours_only = ["recovery.signal", "postgresql.auto.conf", "backup_manifest"];
    let names = |t: &BTreeMap<String, Option<Vec<u8>>>| -> Vec<String> {
        t.keys()
            .filter(|k| !ours_only.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(names(&mine), names(&theirs));
    let mut compared = 0;
    for (name, content) in &theirs {
        if ours_only.contains(&name.as_str()) {
            continue;
        }
        assert!(
            mine[name] == *content,
            "`{name}` differs from pg_combinebackup's"
        );
        compared += 1;
    }
    assert!(compared > 500, "{compared} entries");
    assert!(
        !mine.contains_key("base/5/INCREMENTAL.1259")
            && !mine.keys().any(|k| k.contains("INCREMENTAL."))
    );
    // pg_combinebackup's settings are a prefix of ours.
    let auto = |t: &BTreeMap<String, Option<Vec<u8>>>| t["postgresql.auto.conf"].clone().unwrap();
    assert!(auto(&mine).starts_with(&auto(&theirs)));
    for dir in [&ours, &reference] {
        let out = std::process::Command::new(pg_tool("pg_verifybackup"))
            .arg("--no-parse-wal")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_verifybackup {}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // And it recovers: the truncated table, the dropped one, the shrunk one, as they were.
    env.sql("yomira", "INSERT INTO public.trunc VALUES (9)");
    crate::pitr::switch_and_archive(&socket, port);
    let (out, server) = recover_and_start(&env, "recovered", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let q = |sql: &str| sql_at(&socket, server.port, sql);
    assert_eq!(
        q("SELECT count(*), count(*) FILTER (WHERE t = 'day one') FROM public.big"),
        "150000|2000"
    );
    assert_eq!(
        q("SELECT string_agg(i::text, ',' ORDER BY i) FROM public.trunc"),
        "7,8,9"
    );
    assert_eq!(
        q("SELECT to_regclass('public.gone') IS NULL, (SELECT one FROM public.fresh)"),
        "t|1"
    );
}

/// Reads `child`'s stderr until a line contains `what` (true), or it ends (false); the lines
/// read are added to `seen`.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    what: &str,
    seen: &mut String,
) -> bool {
    for line in lines {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(what) {
            return true;
        }
    }
    false
}

#[test]
fn a_broken_chain_is_refused_before_anything_is_written_and_a_stop_leaves_nothing() {
    use std::io::BufRead;
    let Some(mut env) = incremental_env(true) else {
        return;
    };
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql(
        "yomira",
        "CREATE TABLE public.big AS SELECT i, md5(i::text) AS t FROM generate_series(1, 100000) i",
    );
    env.sql("yomira", "VACUUM (FREEZE, ANALYZE)");
    let (full, _) = base_backup(&env, false);
    env.sql("yomira", "UPDATE public.big SET t = 'one' WHERE i <= 1000");
    let (first, _) = base_backup(&env, true);
    env.sql("yomira", "UPDATE public.big SET t = 'two' WHERE i <= 500");
    let (second, _) = base_backup(&env, true);
    assert_eq!(second["base"]["parent"], first["id"]);
    // Encrypted, but the backup_manifest beside each backup is only compressed: a backup
    // host with the public key alone takes the next incremental.
    assert!(second["data"].as_str().unwrap().ends_with(".age"));
    assert!(second["backup_manifest"]["key"]
        .as_str()
        .unwrap()
        .ends_with(".zst"));
    env.sql("yomira", "INSERT INTO public.big VALUES (0, 'after')");
    crate::pitr::switch_and_archive(&socket, port);
    let id = |m: &serde_json::Value| m["id"].as_str().unwrap().to_string();

    // `verify` of the newest incremental replays its whole chain.
    let out = env.lifeboat(&["verify", &id(&second), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(verified["passed"], true, "{verified}");
    assert!(out.stderr.contains("incremental applied"), "{}", out.stderr);

    let pgdata = env.dir.path().join("restored");
    let restore = |env: &Env| {
        env.lifeboat(&[
            "restore",
            "pitr",
            "--latest",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ])
    };
    // A damaged link (a byte flipped in the first incremental's data): refused, naming it,
    // before the data folder is made.
    let data = env.repo_path(first["data"].as_str().unwrap());
    let intact = crate::pitr::damage(&data);
    let out = restore(&env);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.error_line().contains(&id(&first)) && out.error_line().contains("damaged"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists());
    std::fs::write(&data, &intact).unwrap();
    // The full backup's data gone: refused, naming it.
    let full_data = env.repo_path(full["data"].as_str().unwrap());
    let aside = env.dir.path().join("aside");
    std::fs::rename(&full_data, &aside).unwrap();
    let out = restore(&env);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.error_line().contains(&id(&full)) && out.error_line().contains("missing"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists());
    std::fs::rename(&aside, &full_data).unwrap();
    // A link whose manifest is gone: the chain cannot be told whole.
    let manifest = env.repo_path(&format!("manifests/{}.json", id(&first)));
    std::fs::rename(&manifest, &aside).unwrap();
    let out = restore(&env);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains(&format!("base backup `{}`", id(&first)))
            && out.error_line().contains("--base"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists());
    std::fs::rename(&aside, &manifest).unwrap();

    // SIGTERM while the chain is checked, then once the full backup is unpacked and the
    // incrementals are being applied (the newest one's data dripping in): nothing is left.
    let proxy = env.behind_proxy(30, 120);
    let second_data = second["data"].as_str().unwrap().to_string();
    for moment in ["checking", "applying"] {
        proxy.set(vec![lifeboat_testkit::Rule::all(
            lifeboat_testkit::Fault::Drip {
                bytes: 16 << 10,
                every: Duration::from_millis(100),
            },
        )
        .method("GET")
        .path(&second_data)]);
        let mut child = env.start(&[
            "restore",
            "pitr",
            "--latest",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ]);
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = String::new();
        if moment == "checking" {
            std::thread::sleep(Duration::from_millis(1500));
        } else {
            assert!(
                wait_for_line(&mut lines, "base backup unpacked", &mut seen),
                "{seen}"
            );
            assert!(pgdata.join("PG_VERSION").exists(), "{seen}");
        }
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        wait_for_line(&mut lines, "\u{0}", &mut seen);
        let status = child.wait().unwrap();
        assert_ne!(status.code(), Some(0), "{moment}: {seen}");
        assert!(!pgdata.exists(), "{moment}: the folder was left: {seen}");
        assert!(proxy.faulted() > 0);
    }
    proxy.clear();
    // And with nothing in the way, the chain recovers to the last row.
    let (out, server) = recover_and_start(&env, "recovered", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let q = |sql: &str| sql_at(&socket, server.port, sql);
    assert_eq!(
        q("SELECT count(*) FILTER (WHERE t = 'one'), count(*) FILTER (WHERE t = 'two'), count(*) FILTER (WHERE t = 'after') FROM public.big"),
        "500|500|1"
    );
    drop(server);

    // Where an incremental cannot be, a full backup is taken, saying why: the parent's
    // backup_manifest damaged, `summarize_wal` off (summaries that no longer reach back to the
    // parent are a unit test's).
    crate::pitr::damage(&env.repo_path(second["backup_manifest"]["key"].as_str().unwrap()));
    let (instead, out) = base_backup(&env, true);
    assert!(instead["base"]["parent"].is_null(), "{instead}");
    assert!(
        out.stderr.contains(&format!(
            "the backup_manifest of base backup `{}` cannot be read",
            id(&second)
        )),
        "{}",
        out.stderr
    );
    env.sql("yomira", "ALTER SYSTEM SET summarize_wal = off");
    env.sql("yomira", "SELECT pg_reload_conf()");
    let (instead, out) = base_backup(&env, true);
    assert!(instead["base"]["parent"].is_null(), "{instead}");
    assert!(
        out.stderr.contains("`summarize_wal` is off"),
        "{}",
        out.stderr
    );
    // doctor says so for a job that takes incrementals, and is content once it is on.
    let config = std::fs::read_to_string(&env.config).unwrap();
    let config = config.replace("[postgres.main]\n", "[postgres.main]\npitr = true\n");
    std::fs::write(
        &env.config,
        format!("{config}[jobs.daily]\nsteps = [\"backup base --incremental\"]\n"),
    )
    .unwrap();
    let finding = || {
        let out = env.lifeboat(&["doctor", "--json"]);
        let findings: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
        findings
            .into_iter()
            .find(|f| f["check"] == "incrementals main")
            .unwrap_or_else(|| panic!("no incrementals finding in {}", out.stdout))
    };
    let off = finding();
    assert_eq!(off["ok"], false, "{off}");
    assert!(
        off["detail"].as_str().unwrap().contains("job `daily`"),
        "{off}"
    );
    env.sql("yomira", "ALTER SYSTEM SET summarize_wal = on");
    env.sql("yomira", "SELECT pg_reload_conf()");
    let on = finding();
    assert_eq!(on["ok"], true, "{on}");
    assert!(
        on["detail"]
            .as_str()
            .unwrap()
            .starts_with("summarize_wal = on"),
        "{on}"
    );
}

#[test]
fn object_lock_holds_a_chain_as_long_as_its_newest_backup() {
    use lifeboat_testkit::MotoServer;
    let Some(mut env) = incremental_env(false) else {
        return;
    };
    let moto = MotoServer::start();
    let bucket = "yomira-chain-locked";
    moto.create_locked_bucket(bucket);
    env.repository_on_moto(&moto.endpoint, bucket, "object_lock = \"governance\"\n");
    let out = env.lifeboat(&["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The server archives into the new repository (the config file is the same).
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql("yomira", "CREATE TABLE public.t AS SELECT 1 AS one");
    crate::pitr::switch_and_archive(&socket, port);
    let (full, _) = base_backup(&env, false);
    // A lock is dated by the backup's end: the incremental ends seconds later.
    std::thread::sleep(Duration::from_secs(3));
    env.sql("yomira", "INSERT INTO public.t VALUES (2)");
    let (one, _) = base_backup(&env, true);
    assert_eq!(one["base"]["parent"], full["id"]);
    let until = |key: &str| -> jiff::Timestamp {
        let text = moto.lock(bucket, &format!("lifeboat/{key}"));
        let (mode, until) = text
            .split_once(' ')
            .unwrap_or_else(|| panic!("`{key}` is not locked: {text}"));
        assert_eq!(mode, "GOVERNANCE");
        until.parse().unwrap()
    };
    let newest = until(one["data"].as_str().unwrap());
    let full_id = full["id"].as_str().unwrap();
    for key in [
        full["data"].as_str().unwrap().to_string(),
        full["backup_manifest"]["key"].as_str().unwrap().to_string(),
        format!("manifests/{full_id}.json"),
    ] {
        assert!(
            until(&key) >= newest,
            "`{key}` is locked until {}, its incremental until {newest}",
            until(&key)
        );
    }
}
