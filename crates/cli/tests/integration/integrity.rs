//! Integrity: what is stored proves what it is, and no race loses a backup. Each race runs at
//! least five times, on a local folder and on an S3 server.

use std::time::{Duration, Instant};

use crate::support::{fake_segment, run_of, wait_until, Env, Repo, Run, TableLock, FAKE_SYSTEM_ID};

/// Pushes of one name with different contents started at the same moment.
const PUSHERS: u8 = 4;

fn racing_pushes(repo: Repo) {
    let env = Env::new(repo, false);
    for round in 1..=5u8 {
        let name = format!("0000000100000000000000{round:02X}");
        // Every file first, so that the pushes start together.
        let paths: Vec<String> = (0..PUSHERS)
            .map(|side| {
                env.wal_file(
                    &format!("{round}-{side}"),
                    &name,
                    &fake_segment(&name, FAKE_SYSTEM_ID, side + 1),
                )
            })
            .collect();
        let children: Vec<_> = paths
            .iter()
            .map(|path| env.start(&["wal-push", path]))
            .collect();
        let outcomes: Vec<Run> = children
            .into_iter()
            .map(|c| run_of(c.wait_with_output().unwrap()))
            .collect();
        let winners: Vec<usize> = (0..PUSHERS as usize)
            .filter(|i| outcomes[*i].code == 0)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one push of {PUSHERS} different contents succeeds: {:?}",
            outcomes.iter().map(|o| &o.stderr).collect::<Vec<_>>()
        );
        let winner = winners[0];
        for loser in outcomes.iter().filter(|o| o.code != 0) {
            assert!(
                loser.error_line().contains("different content"),
                "{}",
                loser.stderr
            );
        }
        let (out, data) = env.fetch_wal(&name);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            data.unwrap() == fake_segment(&name, FAKE_SYSTEM_ID, winner as u8 + 1),
            "round {round}: the archive holds the content of the push that failed"
        );
    }
}

#[test]
fn racing_pushes_of_one_name_archive_one_content_local() {
    racing_pushes(Repo::Local);
}

#[test]
fn racing_pushes_of_one_name_archive_one_content_s3() {
    racing_pushes(Repo::S3);
}

/// Two lifeboats started together with `args`, while a table lock blocks their backups, so
/// that the one holding the run lock is still running when the other asks for it; the lock
/// goes once one of them has ended (or after 15 s). Their outcomes and pids.
fn two_together(env: &Env, args: &[&str]) -> (Vec<Run>, Vec<u32>) {
    let lock = TableLock::hold(env, "core.comic");
    let mut children: Vec<_> = (0..2).map(|_| env.start(args)).collect();
    let pids = children.iter().map(|c| c.id()).collect();
    let begun = Instant::now();
    while begun.elapsed() < Duration::from_secs(15)
        && children.iter_mut().all(|c| c.try_wait().unwrap().is_none())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(lock);
    let outcomes = children
        .into_iter()
        .map(|c| run_of(c.wait_with_output().unwrap()))
        .collect();
    (outcomes, pids)
}

fn racing_runs(repo: Repo) {
    let env = Env::new(repo, false);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[jobs.dump]\nsteps = [\"backup db\"]\n");
    std::fs::write(&env.config, config).unwrap();
    for round in 1..=5 {
        // The backups block on a table lock, so a run that got the lock is still running when
        // the other one asks for it.
        let (outcomes, _) = two_together(&env, &["run", "dump"]);
        let ran: Vec<&Run> = outcomes.iter().filter(|o| o.code == 0).collect();
        assert_eq!(
            ran.len(),
            1,
            "round {round}: two runs started together, exactly one runs: {:?}",
            outcomes.iter().map(|o| &o.stderr).collect::<Vec<_>>()
        );
        let refused = outcomes.iter().find(|o| o.code != 0).unwrap();
        assert!(
            refused.stderr.contains("is busy"),
            "round {round}: {}",
            refused.stderr
        );
        env.end_waiting_backends();
        let list = env.lifeboat(&["list", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(listed.len(), round, "round {round}: one backup per round");
    }
}

#[test]
fn runs_started_together_one_runs_local() {
    racing_runs(Repo::Local);
}

#[test]
fn runs_started_together_one_runs_s3() {
    racing_runs(Repo::S3);
}

/// Two `backup db` started together against the S3 test server, whose conditional create is
/// a check and then a write (both can pass the check), 50 rounds: exactly one commits, the
/// other is refused as busy naming the other run, and no lock or heartbeat is left.
#[test]
fn backups_started_together_one_commits_and_no_lock_is_left_s3() {
    let env = Env::new(Repo::S3, false);
    for round in 1..=50 {
        let (outcomes, pids) = two_together(&env, &["backup", "db"]);
        let codes: Vec<i32> = outcomes.iter().map(|o| o.code).collect();
        let stderrs: Vec<&String> = outcomes.iter().map(|o| &o.stderr).collect();
        assert!(
            codes == [0, 5] || codes == [5, 0],
            "round {round}: exit codes {codes:?}: {stderrs:?}"
        );
        let (winner, loser) = if codes[0] == 0 { (0, 1) } else { (1, 0) };
        assert!(
            outcomes[loser]
                .error_line()
                .contains(&format!("(pid {})", pids[winner])),
            "round {round}: the refused run names the other: {}",
            outcomes[loser].stderr
        );
        env.end_waiting_backends();
        let left: Vec<String> = env
            .stored_files()
            .into_iter()
            .filter(|f| f.contains("locks/"))
            .collect();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
        let list = env.lifeboat(&["list", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(listed.len(), round, "round {round}: one backup per round");
    }
}

/// A run killed with SIGKILL at several moments leaves its lock; on the same host, whose
/// process table says it is gone, the next run takes it over at once (and says so), without
/// waiting `lock_stale_minutes`. `unlock` refuses a live holder, removes a dead one's lock.
#[test]
fn a_killed_holder_s_lock_is_taken_over_at_once_on_its_host() {
    let env = Env::new(Repo::Local, false);
    let lock_path = env.repo_path("locks/run.json");
    let out = env.lifeboat(&["unlock"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("has no run lock"), "{}", out.stdout);
    for round in 1..=3u64 {
        let lock = TableLock::hold(&env, "core.comic");
        let mut holder = env.start(&["backup", "db"]);
        wait_until(Duration::from_secs(30), "the run lock", || {
            lock_path.exists()
        });
        // Killed right after it took the lock, while its dump waits, a moment later.
        match round {
            1 => {}
            2 => crate::support::wait_for_blocked_dump(&env),
            _ => std::thread::sleep(Duration::from_millis(700)),
        }
        if round == 2 {
            let out = env.lifeboat(&["unlock"]);
            assert_eq!(out.code, 1, "{}", out.stderr);
            assert!(
                out.error_line().contains("which is alive"),
                "{}",
                out.stderr
            );
            assert!(lock_path.exists());
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        drop(lock);
        env.end_waiting_backends();
        assert!(
            lock_path.exists(),
            "round {round}: the killed run left no lock"
        );
        if round == 3 {
            let out = env.lifeboat(&["unlock", "--dry-run"]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(
                out.stdout.contains("would remove the run lock"),
                "{}",
                out.stdout
            );
            assert!(lock_path.exists());
            let out = env.lifeboat(&["unlock"]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(!lock_path.exists());
            continue;
        }
        let begun = Instant::now();
        let out = env.lifeboat(&["backup", "db"]);
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        assert!(begun.elapsed() < Duration::from_secs(60));
        assert!(
            out.stderr.contains("that process no longer exists"),
            "round {round}: {}",
            out.stderr
        );
        assert!(!lock_path.exists());
    }
    // Another host's lock: alive while it beats, removable once it stops.
    let other = serde_json::json!({
        "id": "0123456789abcdef", "job": "daily", "host": "elsewhere", "pid": 4242,
        "started": "2026-01-01T00:00:00Z"
    });
    std::fs::write(&lock_path, other.to_string()).unwrap();
    let beat = env.repo_path("locks/run.0123456789abcdef.beat");
    std::fs::write(
        &beat,
        serde_json::json!({ "heartbeat": jiff::Timestamp::now() }).to_string(),
    )
    .unwrap();
    let out = env.lifeboat(&["unlock"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("on `elsewhere`"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&beat).unwrap();
    let out = env.lifeboat(&["unlock", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["removed"]["host"], "elsewhere", "{report}");
    assert!(!lock_path.exists());
}

fn wal_is_tied_to_its_name(repo: Repo) {
    let env = Env::new(repo, true);
    let first = "000000010000000000000001";
    let second = "000000010000000000000002";
    for name in [first, second] {
        let path = env.wal_file(name, name, &fake_segment(name, FAKE_SYSTEM_ID, 1));
        let out = env.lifeboat(&["wal-push", &path]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    // A file that is not the segment its name says (its first page is segment 2's) is refused
    // before anything is stored.
    let third = "000000010000000000000003";
    let path = env.wal_file("wrong", third, &fake_segment(second, FAKE_SYSTEM_ID, 3));
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains(&format!("`{third}`"))
            && out.error_line().contains("page address"),
        "{}",
        out.stderr
    );
    // A segment of another cluster, too.
    let path = env.wal_file("other", third, &fake_segment(third, 42, 3));
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("system identifier 42")
            && out
                .error_line()
                .contains(&format!("system identifier {FAKE_SYSTEM_ID}")),
        "{}",
        out.stderr
    );
    assert!(!env.stored_files().iter().any(|k| k.contains(third)));
    // `status` says so until a later segment is archived.
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("pitr = true\n");
    std::fs::write(&env.config, config).unwrap();
    let out = env.lifeboat(&["status"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("wal-push refused `{third}`"))
            && out.stdout.contains("system identifier 42"),
        "{}",
        out.stdout
    );

    // The stored object of segment 2 copied over segment 1's: fetching segment 1 fails (exit
    // 255, so PostgreSQL stops recovery), never hands over segment 2's bytes as segment 1.
    std::fs::copy(env.archived_file(second), env.archived_file(first)).unwrap();
    let (out, data) = env.fetch_wal(first);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(
        out.error_line().contains(&format!("`{second}`"))
            && out.error_line().contains(&format!("`{first}`")),
        "{}",
        out.stderr
    );
    assert!(data.is_none(), "a wrong segment was handed over");
    let (out, data) = env.fetch_wal(second);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(data.unwrap() == fake_segment(second, FAKE_SYSTEM_ID, 1));
}

#[test]
fn a_wal_object_is_tied_to_its_name_local() {
    wal_is_tied_to_its_name(Repo::Local);
}

#[test]
fn a_wal_object_is_tied_to_its_name_s3() {
    wal_is_tied_to_its_name(Repo::S3);
}

#[test]
fn a_damaged_manifest_is_listed_and_blocks_nothing_else() {
    let env = Env::new(Repo::Local, false);
    let damaged = env.backup(&[]);
    let good = env.backup(&[]);
    let manifest = env.repo_path(&format!("manifests/{damaged}.json"));
    std::fs::write(&manifest, b"{\"format\": 1, \"id\": ").unwrap();

    let out = env.lifeboat(&["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&good), "{}", out.stdout);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&damaged))
        .unwrap_or_else(|| panic!("the damaged backup is listed: {}", out.stdout));
    assert!(line.contains("DAMAGED"), "{line}");
    let out = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    let entry = listed.iter().find(|m| m["id"] == damaged.as_str()).unwrap();
    assert!(
        entry["damaged"].as_str().unwrap().contains("not readable"),
        "{entry}"
    );

    for args in [
        vec!["show", good.as_str()],
        vec!["show", "latest"],
        vec!["verify", good.as_str(), "--quick"],
    ] {
        let out = env.lifeboat(&args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    env.new_database("other");
    let out = env.restore(&good, "other", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.lifeboat(&["show", &damaged]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.error_line().contains("is damaged") && out.error_line().contains("not readable"),
        "{}",
        out.stderr
    );

    let out = env.lifeboat(&["status"]);
    assert_eq!(out.code, 4, "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("manifest of backup `{damaged}` is damaged")),
        "{}",
        out.stdout
    );

    // prune, even years later, keeps it and its data: only `--force` removes them.
    let data: Vec<String> = env
        .stored_files()
        .into_iter()
        .filter(|f| f.contains(&damaged))
        .collect();
    // Its manifest, its dump and its roles.
    assert_eq!(data.len(), 3, "{data:?}");
    let out = env.lifeboat(&["prune", "--at", "2031-01-01T00:00:00Z"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&damaged) && out.stdout.contains("damaged"),
        "{}",
        out.stdout
    );
    for file in &data {
        assert!(
            env.stored_files().contains(file),
            "prune removed `{file}` of a damaged backup"
        );
    }
    let out = env.lifeboat(&["prune", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !env.stored_files().iter().any(|f| f.contains(&damaged)),
        "{:?}",
        env.stored_files()
    );
    assert_eq!(env.lifeboat(&["status"]).code, 0);
}

/// `restore db --clean` of a good backup, 20 times in a row, by a role that is not a superuser,
/// with a password, over TCP, from an S3 repository, with enough data that the stream's held
/// back end and the restore's end race.
#[test]
fn a_clean_restore_succeeds_every_time() {
    let password = "app-secret-pw";
    let env = Env::with_cluster(
        Repo::S3,
        false,
        lifeboat_testkit::ClusterOptions {
            tcp_password: Some(password.into()),
            ..Default::default()
        },
    );
    env.sql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{password}'"),
    );
    env.sql("postgres", "CREATE DATABASE appdb OWNER app");
    env.sql(
        "appdb",
        &format!(
            "SET ROLE app; {} CREATE TABLE public.blobs AS SELECT g AS id, \
             decode((SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 1000) s), 'hex') AS bytes \
             FROM generate_series(1, 1500) g;",
            lifeboat_core::postgres::sample::SAMPLE_SQL
        ),
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    let app_url = env.cluster.tcp_url("appdb").replace("lifeboat@", "app@");
    let text = text.replace(&env.cluster.tcp_url("yomira"), &app_url);
    std::fs::write(&env.config, text).unwrap();
    let id = env.backup(&[]);
    let before = env.sql(
        "appdb",
        "SELECT md5(string_agg(md5(bytes), '' ORDER BY id)) FROM blobs",
    );
    for round in 1..=20 {
        let out = env.lifeboat(&["restore", "db", &id, "--into", "main", "--clean"]);
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
    }
    assert_eq!(
        env.sql(
            "appdb",
            "SELECT md5(string_agg(md5(bytes), '' ORDER BY id)) FROM blobs"
        ),
        before
    );
}

#[test]
fn a_run_whose_lock_is_taken_over_commits_nothing() {
    let env = Env::new(Repo::Local, false);
    let hook = crate::automation::Receiver::start();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "[jobs.dump]\nsteps = [\"backup db\"]\n[notify]\nwebhook = \"{}/hook\"\n",
        hook.url
    ));
    std::fs::write(&env.config, config).unwrap();
    let lock_path = env.repo_path("locks/run.json");
    let (run, lock) = env.blocked_run("dump");
    // Another host takes the lock over (it judged this run dead).
    let other = serde_json::json!({
        "id": "0123456789abcdef", "job": "daily", "host": "elsewhere", "pid": 4242,
        "started": "2026-01-01T00:00:00Z"
    });
    std::fs::write(&lock_path, other.to_string()).unwrap();
    drop(lock);
    let out = run_of(run.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("run lock was taken over by job `daily` on `elsewhere`"),
        "{}",
        out.stderr
    );
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        listed.is_empty(),
        "a run that lost its lock committed a backup"
    );
    assert!(
        !env.stored_files().iter().any(|f| f.contains("data/db/")),
        "{:?}",
        env.stored_files()
    );
    // Its lock is the other one's: not removed.
    assert!(std::fs::read_to_string(&lock_path)
        .unwrap()
        .contains("elsewhere"));
    let notified = hook.requests();
    let report = &notified.last().expect("the run is notified").1;
    assert!(report.contains("taken over"), "{report}");
}

#[test]
fn manual_backups_take_the_run_lock_and_can_wait_for_it() {
    let env = Env::new(Repo::Local, false);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[jobs.dump]\nsteps = [\"backup db\"]\n");
    std::fs::write(&env.config, config).unwrap();
    let lock_path = env.repo_path("locks/run.json");
    let (run, lock) = env.blocked_run("dump");
    for args in [vec!["backup", "db"], vec!["prune"]] {
        let out = env.lifeboat(&args);
        assert_ne!(out.code, 0, "{args:?} ran beside a job");
        assert!(
            out.error_line().contains("is busy: job `dump`") && out.error_line().contains("--wait"),
            "{}",
            out.stderr
        );
    }
    let waiting = env.start(&["--wait", "60", "backup", "db"]);
    std::thread::sleep(Duration::from_millis(1500));
    drop(lock);
    let first = run_of(run.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = run_of(waiting.wait_with_output().unwrap());
    assert_eq!(second.code, 0, "{}", second.stderr);
    let list = env.lifeboat(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(!lock_path.exists());
}

#[test]
fn small_things_said_right() {
    let mut env = Env::new(Repo::Local, false);
    let id = env.backup(&[]);
    let text = std::fs::read_to_string(&env.config).unwrap();

    // A damaged backup: a failed full verification is not called quick, and the backup is
    // named once in each message.
    let data = env
        .stored_files()
        .into_iter()
        .find(|f| f.contains("data/db/"))
        .unwrap();
    let path = env.repo_path(&data);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let out = env.lifeboat(&["verify", &id]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stdout.contains("FAILED") && !out.stdout.contains("quick"),
        "{}",
        out.stdout
    );
    let out = env.lifeboat(&["list"]);
    assert!(out.stdout.contains("VERIFICATION FAILED"), "{}", out.stdout);
    let out = env.lifeboat(&["verify", &id, "--quick"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        out.error_line().matches("is damaged").count(),
        1,
        "{}",
        out.stderr
    );
    for text in [&out.stdout, &env.lifeboat(&["verify", &id]).stdout] {
        for line in text.lines() {
            assert!(line.matches("is damaged").count() <= 1, "{line}");
        }
    }
    env.new_database("damaged");
    let out = env.restore(&id, "damaged", &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        out.error_line().matches("is damaged").count(),
        1,
        "{}",
        out.stderr
    );

    // An address the daemon cannot listen on is a configuration error.
    env.write_config(&format!("{text}[daemon]\nlisten = \"not an address\"\n"));
    let out = env.lifeboat(&["config", "check"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.error_line().contains("`not an address`") && out.error_line().contains("daemon.listen"),
        "{}",
        out.stderr
    );

    // A repository that is a file.
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    env.write_config(&format!(
        "[repository]\nurl = \"file://{}\"\n",
        file.display()
    ));
    let out = env.lifeboat(&["list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains(&format!(
            "`file://{}` is a file, not a folder",
            file.display()
        )),
        "{}",
        out.stderr
    );
    env.write_config(&text);
}

/// A parallel restore whose spool folder fills up names the folder and how to choose another.
#[test]
fn a_full_spool_folder_is_named() {
    let env = Env::new(Repo::Local, false);
    let id = env.backup(&[]);
    env.new_database("spooled");
    let tiny = env.dir.path().join("tiny");
    std::fs::create_dir(&tiny).unwrap();
    // A 64 KiB file system of its own (a mount namespace, so nothing outside sees it).
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {0} && exec \"$@\"",
        tiny.display()
    );
    let url = env.cluster.url("spooled");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(&env.config)
        .args([
            "restore",
            "db",
            &id,
            "--into",
            &url,
            "--jobs",
            "2",
            "--spool",
            "--spool-dir",
        ])
        .arg(&tiny)
        .env("LIFEBOAT_LOG", "info");
    let out = run_of(cmd.output().unwrap());
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!("`{}`", tiny.display()))
            && line.contains("no space left")
            && line.contains("--spool-dir"),
        "{line}"
    );
}

/// Two backups started within one second are listed in the order they started, whatever their
/// ids' random suffixes (`list` used to sort by id, undoing the catalog's order).
#[test]
fn backups_of_one_second_are_listed_in_the_order_they_started() {
    let env = Env::new(Repo::Local, false);
    let real = env.backup(&[]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo_path(&format!("manifests/{real}.json"))).unwrap(),
    )
    .unwrap();
    // The earlier one's suffix sorts last.
    let made = [
        ("20260101T020000Z-ffff", "2026-01-01T02:00:00.1Z"),
        ("20260101T020000Z-0000", "2026-01-01T02:00:00.9Z"),
    ];
    for (id, at) in made {
        let mut m = manifest.clone();
        m["id"] = id.into();
        m["started_at"] = at.into();
        std::fs::write(
            env.repo_path(&format!("manifests/{id}.json")),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }
    let out = env.lifeboat(&["list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [made[0].0, made[1].0, real.as_str()]);
    let out = env.lifeboat(&["list"]);
    let at = |id: &str| {
        out.stdout
            .find(id)
            .unwrap_or_else(|| panic!("{id}: {}", out.stdout))
    };
    assert!(at(made[0].0) < at(made[1].0), "{}", out.stdout);
}

#[test]
fn list_lines_up_its_columns_whatever_the_widths() {
    let env = Env::new(Repo::Local, false);
    let real = env.backup(&[]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.repo_path(&format!("manifests/{real}.json"))).unwrap(),
    )
    .unwrap();
    // A database name wider than the column used to be, and a size of another width.
    let mut m = manifest.clone();
    m["id"] = "20260101T020000Z-abcd".into();
    m["database"] = "analytics_events_archive_2026".into();
    m["raw_size"] = 123_456_789_012u64.into();
    std::fs::write(
        env.repo_path("manifests/20260101T020000Z-abcd.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let out = env.lifeboat(&["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    // Every column starts where its header does; sizes end where theirs does.
    for header in ["KIND", "DATABASE", "FINISHED (UTC)", "NOTES"] {
        let at = lines[0].find(header).unwrap();
        // A row without notes ends before their column.
        for line in lines[1..].iter().filter(|l| l.len() > at) {
            assert!(
                line[..at].ends_with("  ") && !line[at..].starts_with(' '),
                "`{header}` at {at}:\n{}",
                out.stdout
            );
        }
    }
    for header in ["RAW", "STORED", "TABLES"] {
        let end = lines[0].find(header).unwrap() + header.len();
        for line in &lines[1..] {
            assert!(
                line[..end].ends_with(|c: char| c == 'B' || c.is_ascii_digit())
                    && (line.len() == end || line[end..].starts_with("  ")),
                "`{header}` ends at {end}:\n{}",
                out.stdout
            );
        }
    }
}
