//! `drill`: the self-contained disaster-recovery drill (dump, restore, verify, point-in-time
//! recovery, one table put back) passes on a fresh folder and leaves nothing behind: its
//! repository is its own, whoever runs it, and the configured one is not touched.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::run_of;

#[test]
fn the_drill_recovers_a_dump_and_a_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run_of(
        Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["drill", "--json"])
            .env_remove("LIFEBOAT_CONFIG")
            .env("TMPDIR", &tmp)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 11, "{steps:?}");
    let table = &report["steps"][10];
    assert!(table["step"].as_str().unwrap().contains("restore table"));
    assert!(
        table["detail"]
            .as_str()
            .unwrap()
            .starts_with("public.drill_events_20"),
        "{table}"
    );
    assert!(steps.iter().any(|s| s.starts_with("verify")));
    assert!(steps
        .iter()
        .any(|s| s.starts_with("point-in-time recovery")));
    assert!(report["verified_recovery_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(report["rows_restored"], 3704);
    assert!(report["pitr_target"].as_str().unwrap().ends_with('Z'));
    // No repository was made in the folder (the default one is not touched either); the
    // scratch folders are gone.
    assert!(report["repository"]
        .as_str()
        .unwrap()
        .contains(tmp.to_str().unwrap()));
    assert!(!dir.path().join("lifeboat-repo").exists());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the temp folder: {left:?}");
}

#[test]
fn the_drill_prints_each_step_once_in_columns_that_line_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_of(
        Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("drill")
            .env_remove("LIFEBOAT_CONFIG")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let both = format!("{}{}", out.stdout, out.stderr);
    let steps: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(
        steps.len(),
        12,
        "eleven steps and the total: {}",
        out.stdout
    );
    for name in [
        "logical backup",
        "compare contents",
        "(restore table)",
        "two commits",
    ] {
        assert_eq!(both.matches(name).count(), 1, "`{name}` once: {both}");
    }
    // The durations end in one column, whatever the length of a step's name.
    let ends: Vec<usize> = steps
        .iter()
        .map(|l| {
            let time = l
                .split("  ")
                .map(str::trim)
                .find(|cell| cell.ends_with('s') && cell[..cell.len() - 1].parse::<f64>().is_ok())
                .unwrap_or_else(|| panic!("no duration in `{l}`"));
            l.find(time).unwrap() + time.len()
        })
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{}", out.stdout);
    // Sizes as `list` gives them.
    let backup = steps.iter().find(|l| l.contains("logical backup")).unwrap();
    assert!(
        backup.contains(" KiB") || backup.contains(" MiB"),
        "{backup}"
    );
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(dir).unwrap().display().to_string();
                files.insert(key, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// Run as a user other than root (the PostgreSQL server's user when the tests run as root),
/// with a configured repository whose WAL archive is not yet bound to a cluster, the drill
/// leaves that repository exactly as it was, and runs again.
#[test]
fn the_drill_as_another_user_leaves_the_configured_repository_as_it_was() {
    let user = lifeboat_core::postgres::cluster::unprivileged_user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let repo = dir.path().join("repo");
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!("[repository]\nurl = \"{}\"\n", repo.display()),
    )
    .unwrap();
    let lifeboat = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("LIFEBOAT_CONFIG")
            .env("TMPDIR", &tmp)
            .current_dir(dir.path())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        run_of(cmd.output().unwrap())
    };
    let out = lifeboat(&["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = snapshot(&repo);
    assert!(!before.is_empty());
    for round in 1..=2 {
        let out = lifeboat(&["drill", "--json"]);
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(
            !report["repository"]
                .as_str()
                .unwrap()
                .contains(repo.to_str().unwrap()),
            "{report}"
        );
        assert_eq!(
            snapshot(&repo),
            before,
            "round {round}: the drill changed the configured repository"
        );
    }
}
