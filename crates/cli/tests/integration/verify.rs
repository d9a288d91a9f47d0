//! `verify`: a good backup passes with its recovery time measured and recorded; a changed
//! byte, a wrong row count and a false SQL check fail, naming the backup and the reason; the
//! throwaway cluster is gone after a pass, a failure and an interruption.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{run_of, wait_until, Env, Repo};

/// A private temporary folder for the verifying process, so that its scratch clusters can be
/// counted apart from other tests'. The server (another user under root) must reach it.
fn private_tmp(env: &Env) -> PathBuf {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    tmp
}

fn scratch_dirs(tmp: &Path) -> usize {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("lifeboat-"))
        .count()
}

fn verify(env: &Env, tmp: &Path, args: &[&str]) -> crate::support::Run {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    run_of(env.command(&all).env("TMPDIR", tmp).output().unwrap())
}

fn add_checks(env: &Env, checks: &[&str]) {
    // `[postgres.main]` is the config's last table.
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    let list: Vec<String> = checks.iter().map(|c| format!("{c:?}")).collect();
    text.push_str(&format!("checks = [{}]\n", list.join(", ")));
    std::fs::write(&env.config, text).unwrap();
}

#[test]
fn a_good_backup_passes_and_its_recovery_time_is_recorded() {
    let env = Env::new(Repo::Local, false);
    add_checks(
        &env,
        &["SELECT count(*) = 200 FROM core.comic", "SELECT true, 'x'"],
    );
    let tmp = private_tmp(&env);
    let id = env.backup(&[]);

    let out = verify(&env, &tmp, &["latest", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["backup"], id.as_str());
    assert_eq!(v["passed"], true);
    assert!(v["recovery_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["rto_seconds"], 3600);
    assert_eq!(v["within_rto"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "restore",
            "critical table core.comic",
            "check `SELECT count(*) = 200 FROM core.comic`",
            "check `SELECT true, 'x'`"
        ]
    );
    assert_eq!(scratch_dirs(&tmp), 0, "scratch cluster left after a pass");

    // Recorded in the repository, shown by list and show.
    let list = env.lifeboat(&["list"]);
    assert!(
        list.stdout.contains("verified, restores in"),
        "{}",
        list.stdout
    );
    let show = env.lifeboat(&["show", &id, "--json"]);
    let shown: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(shown["verification"]["passed"], true);

    // Quick: hash and table of contents, no restore.
    let out = verify(&env, &tmp, &[&id, "--quick", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["quick"], true);
    assert!(v["recovery_seconds"].is_null());
    assert!(
        v["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("entries readable"),
        "{v}"
    );
}

#[test]
fn failures_name_the_backup_and_the_reason() {
    let env = Env::new(Repo::Local, false);
    let tmp = private_tmp(&env);
    let id = env.backup(&[]);
    let manifest_path = env.repo_path(&format!("manifests/{id}.json"));
    let original = std::fs::read(&manifest_path).unwrap();

    // A wrong row count in the manifest.
    let mut manifest: Value = serde_json::from_slice(&original).unwrap();
    let tables = manifest["tables"].as_array_mut().unwrap();
    let comic = tables
        .iter_mut()
        .find(|t| t["schema"] == "core" && t["name"] == "comic")
        .unwrap();
    comic["rows"] = 201.into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = verify(&env, &tmp, &[&id]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let line = out.error_line();
    assert!(line.contains(&id) && line.contains("core.comic"), "{line}");
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    assert_eq!(
        scratch_dirs(&tmp),
        0,
        "scratch cluster left after a failure"
    );
    std::fs::write(&manifest_path, &original).unwrap();

    // A false SQL check.
    add_checks(&env, &["SELECT count(*) = 0 FROM core.comic"]);
    let out = verify(&env, &tmp, &[&id]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("check `SELECT count(*) = 0 FROM core.comic`: returned `f`"),
        "{}",
        out.stderr
    );
    let list = env.lifeboat(&["list"]);
    assert!(
        list.stdout.contains("VERIFICATION FAILED"),
        "{}",
        list.stdout
    );

    // One byte changed in the stored data: both kinds of verification refuse it.
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    for quick in [true, false] {
        let args: Vec<&str> = if quick {
            vec![&id, "--quick"]
        } else {
            vec![&id]
        };
        let out = verify(&env, &tmp, &args);
        assert_eq!(out.code, 3, "{}", out.stderr);
        let line = out.error_line();
        assert!(line.contains(&id) && line.contains("damaged"), "{line}");
    }
    assert_eq!(scratch_dirs(&tmp), 0);
}

#[test]
fn an_interrupted_verification_leaves_no_cluster() {
    let env = Env::new(Repo::Local, false);
    let tmp = private_tmp(&env);
    env.backup(&[]);
    let child = env
        .command(&["verify", "latest"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "a scratch cluster", || {
        scratch_dirs(&tmp) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = run_of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 130, "{}", out.stderr);
    wait_until(Duration::from_secs(10), "the cluster's removal", || {
        scratch_dirs(&tmp) == 0
    });
}
