//! A copy of the repository in another account: committed backups only, checked by hash,
//! manifests last; read back with `--from`; `wal-fetch` falls back to it; its own retention.

use lifeboat_testkit::{Fault, FaultProxy, Rule, S3Server};

use crate::pitr::{archiving_env, switch_and_archive};
use crate::support::{terminate, TableLock};

const COPY_BUCKET: &str = "offsite";

fn ids(listed: &str) -> Vec<String> {
    let listed: Vec<serde_json::Value> = serde_json::from_str(listed).unwrap();
    listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_copy_in_another_account_holds_committed_backups_checked_and_restores() {
    let mut env = archiving_env();
    // Another account: its own server and credentials, reached through a proxy that can fail.
    let other = S3Server::start("copy-key", "copy-secret-key");
    other.create_bucket(COPY_BUCKET);
    let proxy = FaultProxy::start(&other.endpoint);
    let text = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!(
        "{text}[repository.copies.offsite]\nurl = \"s3://{COPY_BUCKET}/yomira\"\nendpoint = \"{}\"\n\
         region = \"us-east-1\"\naccess_key_id = \"copy-key\"\nsecret_access_key = \"copy-secret-key\"\n\
         [repository.copies.offsite.retention]\ndaily_days = 1\nmonthly_months = 0\nyearly_years = 0\n",
        proxy.endpoint
    ));
    let socket = env.cluster.socket_dir().to_path_buf();
    let port = env.cluster.port();
    let first = env.backup(&[]);
    let segment = switch_and_archive(&socket, port);
    let second = env.backup(&[]);
    let copy_keys = || -> Vec<String> {
        other
            .keys(COPY_BUCKET)
            .into_iter()
            .filter(|k| !k.ends_with("lifeboat.json") && !k.contains("/locks/"))
            .collect()
    };

    // A backup still running is not copied.
    let lock = TableLock::hold(&env, "core.comic");
    let running = env.blocked_backup();

    let out = env.lifeboat(&["copy", "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let plan = &reports[0]["plan"];
    let planned: Vec<&str> = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(planned, [first.as_str(), second.as_str()]);
    assert!(plan["wal"].as_array().unwrap().len() >= 2, "{plan}");
    assert!(copy_keys().is_empty(), "a dry run copied {:?}", copy_keys());

    let out = env.lifeboat(&["copy", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        reports[0]["backups_copied"],
        serde_json::json!([first, second])
    );
    let killed = terminate(running);
    assert_ne!(killed.code, 0);
    drop(lock);

    // The copy holds each backup whole (data, roles, manifest) and the WAL archive.
    let keys = copy_keys();
    for id in [&first, &second] {
        for part in ["dump.zst.age", "globals.sql.zst.age"] {
            assert!(
                keys.contains(&format!("yomira/data/db/{id}.{part}")),
                "{id}.{part} missing: {keys:?}"
            );
        }
        assert!(keys.contains(&format!("yomira/manifests/{id}.json")));
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("yomira/wal/{segment}"))),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.contains("/manifests/")).count(),
        2,
        "only committed backups: {keys:?}"
    );

    // `status` (and its metrics) shows the copy.
    let metrics = env.dir.path().join("lifeboat.prom");
    let out = env.lifeboat(&[
        "status",
        "--json",
        "--prometheus",
        metrics.to_str().unwrap(),
    ]);
    let assets: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let copy = assets
        .iter()
        .find(|a| a["kind"] == "copy" && a["name"] == "offsite")
        .unwrap_or_else(|| panic!("no copy in {assets:?}"));
    assert_eq!(copy["ok"], true, "{copy}");
    assert!(
        copy["notes"][0].as_str().unwrap().starts_with("2 backups"),
        "{copy}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("lifeboat_last_success_timestamp_seconds{kind=\"copy\",name=\"offsite\"}"),
        "{text}"
    );

    // Read back from the copy: listed the same, restored the same.
    let out = env.lifeboat(&["list", "--from", "offsite", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ids(&out.stdout), [first.clone(), second.clone()]);
    let before = env.fingerprints("yomira");
    env.new_database("from_copy");
    let out = env.restore(&second, "from_copy", &["--from", "offsite"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("from_copy"), before);
    let out = env.lifeboat(&["backup", "db", "--from", "offsite"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("`--from`"),
        "{}",
        out.error_line()
    );

    // Nothing new: nothing planned (a dry run takes no lock: nothing to say about one), nothing
    // copied.
    let out = env.lifeboat(&["copy", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("would copy 0 backups"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("lock"), "{}", out.stderr);
    let out = env.lifeboat(&["copy", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(reports[0]["backups_copied"], serde_json::json!([]));
    assert_eq!(reports[0]["plan"]["present"], 2);

    // The daily job copies; what reads back damaged from the copy is not committed there.
    proxy.set(vec![Rule::all(Fault::Truncate { keep: 100 })
        .method("GET")
        .path("/data/db/")]);
    let out = env.lifeboat(&["run", "daily"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("copy offsite"), "{}", out.stderr);
    let third = env.lifeboat(&["list", "--json"]);
    let third = ids(&third.stdout).last().unwrap().clone();
    assert!(third > second);
    assert!(
        !copy_keys().iter().any(|k| k.contains(&third)),
        "{:?}",
        copy_keys()
    );
    proxy.clear();
    let out = env.lifeboat(&["list", "--from", "offsite", "--json"]);
    assert_eq!(ids(&out.stdout), [first.clone(), second.clone()]);
    let out = env.lifeboat(&["copy"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.lifeboat(&["list", "--from", "offsite", "--json"]);
    assert_eq!(
        ids(&out.stdout),
        [first.clone(), second.clone(), third.clone()]
    );

    // The copy's own retention (1 day, no monthly or yearly: all but the newest go) against
    // the repository's (30 days: all stay).
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 5)).to_string();
    let deleted = |extra: &[&str]| -> usize {
        let mut args = vec!["prune", "--dry-run", "--json", "--at", &later];
        args.extend_from_slice(extra);
        let out = env.lifeboat(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let start = out.stdout.find("\n{").map_or(0, |i| i + 1);
        let value: serde_json::Value = serde_json::from_str(&out.stdout[start..]).unwrap();
        value["plan"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["keep"] == false)
            .count()
    };
    assert_eq!(deleted(&[]), 0);
    assert_eq!(deleted(&["--from", "offsite"]), 2);

    // The repository fails: wal-fetch takes the segment from the copy, and says so.
    let (out, from_repository) = env.fetch_wal(&segment);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let primary = env.behind_proxy(2, 5);
    primary.set(vec![Rule::all(Fault::Status(500, "InternalError"))]);
    let (out, from_copy) = env.fetch_wal(&segment);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(from_copy, from_repository);
    assert!(
        out.stderr
            .contains(&format!("fetched `{segment}` from copy `offsite`")),
        "{}",
        out.stderr
    );
    let (out, direct) = {
        let dest = env.dir.path().join("direct");
        let out = env.lifeboat(&[
            "wal-fetch",
            "--from",
            "offsite",
            &segment,
            dest.to_str().unwrap(),
        ]);
        (out, std::fs::read(&dest).ok())
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(direct, from_repository);
}
