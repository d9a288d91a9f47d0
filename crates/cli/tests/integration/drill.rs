//! `drill`: the self-contained disaster-recovery drill (dump, restore, verify, point-in-time
//! recovery, one table put back) passes on a fresh folder and leaves nothing behind but its
//! repository.

use std::os::unix::fs::PermissionsExt;
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
    // The default repository holds the dump; the scratch folders are gone.
    assert!(dir.path().join("lifeboat-repo/lifeboat.json").exists());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the temp folder: {left:?}");
}
