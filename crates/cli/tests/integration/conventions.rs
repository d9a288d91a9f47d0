//! The command line as its ecosystem expects it: `--version` names the build, completions and
//! man pages, distinct exit codes for a locked repository, a missing one and a temporary
//! failure, errors as one JSON line with `--json`, JSON logs, and a clear line when the
//! PostgreSQL server programs are missing.

use std::process::Command;

use crate::support::{run_of, Env, Repo};

fn lifeboat<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> crate::support::Run {
    run_of(
        Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(args)
            .env_remove("LIFEBOAT_CONFIG")
            .output()
            .unwrap(),
    )
}

#[test]
fn version_completions_and_man_pages() {
    let out = lifeboat(&["--version"]);
    assert_eq!(out.code, 0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    assert!(
        out.stdout.contains(&format!("commit {commit}")) && out.stdout.contains("linux"),
        "{}",
        out.stdout
    );
    let bash = lifeboat(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("_lifeboat()") && bash.stdout.contains("wal-push"));
    let dir = tempfile::tempdir().unwrap();
    let man = lifeboat(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    let page = std::fs::read_to_string(dir.path().join("lifeboat.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(dir.path().join("lifeboat-restore-pitr.1").exists());
    let help = lifeboat(&["--help"]);
    for named in [
        "LIFEBOAT_CONFIG",
        "LIFEBOAT_LOG",
        "LIFEBOAT_PG_BIN_DIR",
        "CREDENTIALS_DIRECTORY",
        "75",
    ] {
        assert!(help.stdout.contains(named), "{named}: {}", help.stdout);
    }
}

#[test]
fn completions_into_a_pipe_closed_early_end_quietly() {
    // `lifeboat completions zsh | head -1`: the reader is gone before the script is written.
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["completions", "zsh"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn exit_codes_say_locked_missing_and_try_again() {
    let env = Env::new(Repo::Local, false);
    // Another run holds the lock: 5, and as JSON with --json.
    let lock = env.repo_path("locks/run.json");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let now = jiff::Timestamp::now().to_string();
    let holder = serde_json::json!({
        "id": "other", "job": "daily", "host": "elsewhere", "pid": 1,
        "started": now, "heartbeat": now
    });
    std::fs::write(&lock, holder.to_string()).unwrap();
    let out = env.lifeboat(&["backup", "db", "--json"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    let error = out.json_error();
    assert_eq!(error["kind"], "locked");
    assert_eq!(error["exit_code"], 5);
    assert!(error["error"].as_str().unwrap().contains("busy"), "{error}");
    std::fs::remove_file(&lock).unwrap();

    // Not a repository: 6.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"file://{}/none\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = lifeboat(&["--config", config.to_str().unwrap(), "list"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out.error_line().contains("lifeboat init"), "{}", out.stderr);

    // Storage that refuses connections: a temporary failure, 75.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"s3://b/p\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\n\
             [repository.timeouts]\nconnect_secs = 1\nio_secs = 2\nrequest_secs = 3\n"
        ),
    )
    .unwrap();
    let out = lifeboat(&["--config", config.to_str().unwrap(), "--json", "list"]);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(out.json_error()["kind"], "storage");
}

#[test]
fn logs_as_json_lines() {
    let env = Env::new(Repo::Local, false);
    let out = env.lifeboat(&["--log-format", "json", "backup", "db"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn a_drill_without_the_server_programs_says_what_to_install() {
    let bin = tempfile::tempdir().unwrap();
    let pg = crate::support::tools();
    for tool in ["pg_dump", "pg_restore", "psql", "pg_basebackup"] {
        std::os::unix::fs::symlink(pg.path(tool), bin.path().join(tool)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let out = run_of(
        Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("drill")
            .env("LIFEBOAT_PG_BIN_DIR", bin.path())
            .env_remove("LIFEBOAT_CONFIG")
            .current_dir(work.path())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("initdb` not found") && line.contains("apt install postgresql"),
        "{line}"
    );
}

/// Bad input of the command line's own: an argument that is not UTF-8 is a usage error, not a
/// panic (also for `wal-fetch`, which must then exit above 125), and `--jobs 0` is refused.
#[test]
fn arguments_that_are_not_text_and_zero_jobs_are_usage_errors() {
    use std::os::unix::ffi::OsStrExt;
    let not_text = std::ffi::OsStr::from_bytes(b"\xff");
    let out = lifeboat(&["show".as_ref(), not_text]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let out = lifeboat(&["wal-fetch".as_ref(), not_text, "dest".as_ref()]);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    for args in [
        vec!["verify", "latest", "--jobs", "0"],
        vec!["restore", "db", "latest", "--into", "x", "--jobs", "0"],
    ] {
        let out = lifeboat(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("--jobs"), "{}", out.stderr);
    }
}

/// A repository on a read-only file system: `verify --quick` still gives its verdict (exit 0,
/// with a warning that it could not be recorded), and a backup fails as a permanent error
/// (1), not as one worth retrying unchanged (75).
#[test]
fn a_read_only_repository_is_a_permanent_error_and_verify_still_answers() {
    let env = Env::new(Repo::Local, false);
    let id = env.backup(&[]);
    let repo = env.dir.path().join("repo");
    let read_only = |args: &str| {
        let script = format!(
            "mount --bind '{repo}' '{repo}' && mount -o remount,bind,ro '{repo}' && exec '{exe}' --config '{config}' {args}",
            repo = repo.display(),
            exe = env!("CARGO_BIN_EXE_lifeboat"),
            config = env.config.display(),
        );
        run_of(
            Command::new("unshare")
                .args(["-m", "sh", "-c", &script])
                .env_remove("LIFEBOAT_CONFIG")
                .output()
                .unwrap(),
        )
    };
    let probe = read_only("--version");
    if probe.code != 0 {
        eprintln!("skipped: no mount namespace here ({})", probe.stderr.trim());
        return;
    }
    let out = read_only(&format!("verify --quick {id} --json"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(verified["passed"], true, "{verified}");
    assert!(
        out.stderr.contains("could not be recorded"),
        "{}",
        out.stderr
    );
    let out = read_only("backup db");
    assert_eq!(out.code, 1, "{}", out.stderr);
}

#[test]
fn a_server_gets_the_programs_of_its_own_pg_bin_dir() {
    // Two entries for the cluster: `other` names a folder of its own programs, whose
    // `pg_dump` leaves a mark before running the real one.
    let mut env = Env::new(Repo::Local, false);
    let bin = env.dir.path().join("other-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = crate::support::tools().path("pg_dump");
    for entry in std::fs::read_dir(real.parent().unwrap()).unwrap().flatten() {
        if entry.file_name() != "pg_dump" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
        }
    }
    let mark = env.dir.path().join("other-pg-dump-ran");
    let fake = bin.join("pg_dump");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            mark.display(),
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&env.config).unwrap();
    let url = config
        .lines()
        .find(|l| l.starts_with("url = \"postgresql"))
        .unwrap()
        .to_string();
    env.write_config(&format!(
        "{config}[postgres.other]\n{url}\npg_bin_dir = \"{}\"\n",
        bin.display()
    ));
    let out = env.lifeboat(&["backup", "db", "--db", "main"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!mark.exists(), "`main` uses the usual programs");
    let out = env.lifeboat(&["backup", "db", "--db", "other"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ran = std::fs::read_to_string(&mark).unwrap();
    assert!(ran.contains("--format=custom"), "{ran}");
    // A folder without the programs: one line naming the program and the folder.
    env.write_config(&format!(
        "{config}[postgres.other]\n{url}\npg_bin_dir = \"/nonexistent/pg-17\"\n"
    ));
    let out = env.lifeboat(&["backup", "db", "--db", "other"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("/nonexistent/pg-17/pg_dump"),
        "{}",
        out.stderr
    );
}
