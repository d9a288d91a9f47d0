//! Retention end to end on a real S3 server: backups placed in the past (copies of a real
//! backup under older ids), a dry run that changes nothing, a prune that deletes, promotes and
//! cleans up leftovers and old WAL, and the state a cut-off prune leaves behind.

use lifeboat_testkit::{Fault, Rule};
use serde_json::Value;

use crate::support::{Env, Repo};

/// Copies backup `from` as if it had been taken at `at` (`YYYY-MM-DDTHH:MM:SSZ`), as `kind`.
fn fabricate(env: &Env, from: &Value, at: &str, kind: &str) -> String {
    let stamp: String = at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let id = format!("{stamp}-{:04x}", at.len() * 257 % 65536);
    let data = format!(
        "data/{kind}/{id}.{}",
        if kind == "db" { "dump.zst" } else { "tar.zst" }
    );
    let mut manifest = from.clone();
    manifest["id"] = id.clone().into();
    manifest["kind"] = kind.into();
    manifest["started_at"] = at.into();
    manifest["finished_at"] = at.into();
    manifest["data"] = data.clone().into();
    let source = env.repo_path(from["data"].as_str().unwrap());
    let target = env.repo_path(&data);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(source, target).unwrap();
    let path = env.repo_path(&format!("manifests/{id}.json"));
    std::fs::write(path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    id
}

fn base_info(first: &str) -> Value {
    serde_json::json!({
        "start_lsn": "0/1000000", "end_lsn": "0/2000000", "timeline": 1,
        "first_wal": first, "last_wal": first, "wal_segment_size": 16777216u64
    })
}

#[test]
fn prune_plans_then_deletes_promotes_and_cleans_up() {
    let env = Env::new(Repo::S3, false);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[retention]\nmonthly_class = \"STANDARD\"\nyearly_class = \"STANDARD\"\n");
    std::fs::write(&env.config, config).unwrap();
    let today = env.backup(&[]);
    let listed: Value = serde_json::from_str(&env.lifeboat(&["list", "--json"]).stdout).unwrap();
    let real = listed[0].clone();

    let yearly = fabricate(&env, &real, "2025-01-05T02:00:00Z", "db");
    let june_a = fabricate(&env, &real, "2025-06-03T02:00:00Z", "db");
    let june_b = fabricate(&env, &real, "2025-06-10T02:00:00Z", "db");
    let january = fabricate(&env, &real, "2026-01-03T02:00:00Z", "db");
    let october = fabricate(&env, &real, "2026-10-01T02:00:00Z", "db");
    let october_b = fabricate(&env, &real, "2026-10-02T02:00:00Z", "db");
    // Base backups: the old one is replaced by a newer one before the PITR window.
    let mut base_manifest = real.clone();
    base_manifest["base"] = base_info("000000010000000000000010");
    let old_base = fabricate(&env, &base_manifest, "2026-11-01T03:00:00Z", "base");
    base_manifest["base"] = base_info("000000010000000000000020");
    let anchor_base = fabricate(&env, &base_manifest, "2026-11-10T03:00:00Z", "base");
    for name in [
        "000000010000000000000011",
        "00000001000000000000001F",
        "000000010000000000000020",
        "000000010000000000000021",
        "00000002.history",
    ] {
        let path = env.repo_path(&format!("wal/{name}.zst"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really WAL").unwrap();
    }
    // An unfinished backup from long ago, and one that may still be running.
    let stale = env.repo_path("data/db/20250101T000000Z-dead.dump.zst");
    std::fs::write(&stale, b"half").unwrap();
    let running_id = format!("{}-beef", &today[..16]);
    let running = env.repo_path(&format!("data/db/{running_id}.dump.zst"));
    std::fs::write(&running, b"half").unwrap();

    let at = "2026-11-24T12:00:00Z";
    let before = env.stored_files();
    let dry = env.lifeboat(&["prune", "--dry-run", "--at", at]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(
        env.stored_files(),
        before,
        "a dry run changed the repository"
    );
    let line = |id: &str| {
        dry.stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not in the plan:\n{}", dry.stdout))
            .to_string()
    };
    assert!(line(&yearly).contains("keep, to yearly") && line(&yearly).contains("yearly 2025"));
    assert!(line(&june_a).starts_with("  delete"), "{}", line(&june_a));
    assert!(line(&january).contains("monthly 2026-01; yearly 2026"));
    assert!(
        line(&october).contains("keep, to monthly") && line(&october).contains("monthly 2026-10"),
        "{}",
        dry.stdout
    );
    assert!(line(&october_b).starts_with("  delete"));
    assert!(line(&today).contains("daily, within 30 days"));
    assert!(line(&old_base).starts_with("  delete"));
    assert!(line(&anchor_base).contains("base of the PITR window's start"));
    assert!(
        dry.stdout
            .contains("wal: keep 3 files from 000000010000000000000020"),
        "{}",
        dry.stdout
    );
    assert!(dry
        .stdout
        .contains("remove leftover data/db/20250101T000000Z-dead.dump.zst"));
    assert!(!dry.stdout.contains(&running_id));

    let out = env.lifeboat(&["prune", "--at", at, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["backups_deleted"], 4);
    assert_eq!(report["outcome"]["promoted"], 3);
    assert_eq!(report["outcome"]["wal_deleted"], 2);
    assert_eq!(report["outcome"]["leftovers_deleted"], 1);

    let listed: Value = serde_json::from_str(&env.lifeboat(&["list", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [&yearly, &january, &october, &anchor_base, &today].map(String::as_str)
    );
    assert_eq!(listed[0]["tier"], "yearly");
    assert_eq!(listed[0]["storage_class"], "STANDARD");
    assert_eq!(listed[1]["tier"], "yearly");
    assert_eq!(listed[2]["tier"], "monthly");
    assert!(listed[4].get("tier").is_none());
    let files = env.stored_files();
    for gone in [&june_a, &june_b, &october_b, &old_base] {
        assert!(
            !files.iter().any(|f| f.contains(gone.as_str())),
            "{gone} left: {files:?}"
        );
    }
    assert!(!stale.exists() && running.exists());
    assert!(!env.repo_path("wal/000000010000000000000011.zst").exists());
    assert!(env.repo_path("wal/000000010000000000000020.zst").exists());
    assert!(env.repo_path("wal/00000002.history.zst").exists());

    // The promoted backup (copied onto itself with its new class) still restores.
    env.new_database("from_yearly");
    let restored = env.restore(&yearly, "from_yearly", &[]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);

    // A prune cut off after a manifest and before its data: the backup is no longer listed,
    // and the next prune removes the data it left.
    let half = fabricate(&env, &real, "2026-01-02T02:00:00Z", "db");
    std::fs::remove_file(env.repo_path(&format!("manifests/{half}.json"))).unwrap();
    let listed = env.lifeboat(&["list"]);
    assert!(!listed.stdout.contains(&half));
    let again = env.lifeboat(&["prune", "--at", at, "--json"]);
    let report: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        report["outcome"]["leftovers_deleted"], 1,
        "{}",
        again.stdout
    );
    assert_eq!(report["outcome"]["backups_deleted"], 0);
    assert!(!env.stored_files().iter().any(|f| f.contains(&half)));
}

#[test]
fn bad_retention_config_is_one_line() {
    let env = Env::new(Repo::Local, false);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[retention]\ntime_zone = \"Mars/Olympus\"\n");
    std::fs::write(&env.config, &config).unwrap();
    let out = env.lifeboat(&["prune", "--dry-run"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("unknown time zone `Mars/Olympus`"),
        "{}",
        out.stderr
    );
    let config = config.replace("Mars/Olympus", "UTC") + "yearly_class = \"DEEP_FREEZE\"\n";
    std::fs::write(&env.config, &config).unwrap();
    let out = env.lifeboat(&["prune", "--dry-run"]);
    assert!(
        out.error_line()
            .contains("unknown storage class `DEEP_FREEZE`"),
        "{}",
        out.stderr
    );
    let out = env.lifeboat(&["lifecycle"]);
    assert!(
        out.error_line().contains("unknown storage class"),
        "{}",
        out.stderr
    );
}

#[test]
fn lifecycle_prints_rules_and_refuses_local_repositories() {
    let env = Env::new(Repo::S3, false);
    let out = env.lifeboat(&["lifecycle"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rules: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rules["Rules"][0]["Filter"]["Prefix"], "lifeboat/");
    assert!(rules["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("Expiration").is_none()));
    // The test server has no lifecycle API: applying says so in one line.
    let out = env.lifeboat(&["lifecycle", "--apply"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("does not support"),
        "{}",
        out.stderr
    );

    let local = Env::new(Repo::Local, false);
    let out = local.lifeboat(&["lifecycle"]);
    assert!(
        out.error_line().contains("is a local folder"),
        "{}",
        out.stderr
    );
}

/// Against a server that keeps lifecycle rules (moto): `--apply` writes lifeboat's rules
/// beside the bucket's own, which stay as they were; a rule that expires WAL by age is
/// warned about; a second `--apply` changes nothing.
#[test]
fn lifecycle_rules_are_applied_beside_the_bucket_s_own() {
    let moto = lifeboat_testkit::MotoServer::start();
    let bucket = "yomira-lifecycle";
    moto.create_bucket(bucket);
    moto.python(&format!(
        "s3.put_bucket_lifecycle_configuration(Bucket='{bucket}', LifecycleConfiguration={{'Rules': [\
         {{'ID': 'media-expire', 'Filter': {{'Prefix': 'media/'}}, 'Status': 'Enabled', 'Expiration': {{'Days': 30}}}},\
         {{'ID': 'wal-7-days', 'Filter': {{'Prefix': 'lifeboat/wal/'}}, 'Status': 'Enabled', 'Expiration': {{'Days': 7}}}}]}})"
    ));
    let mut env = Env::new(Repo::Local, false);
    env.repository_on_moto(&moto.endpoint, bucket, "");
    let rules = || -> Vec<Value> {
        let out = moto.python(&format!(
            "import json\nprint(json.dumps(s3.get_bucket_lifecycle_configuration(Bucket='{bucket}')['Rules']))"
        ));
        let mut rules: Vec<Value> = serde_json::from_str(&out).unwrap();
        rules.sort_by_key(|r| r["ID"].as_str().unwrap_or_default().to_string());
        rules
    };
    let before = rules();
    let out = env.lifeboat(&["lifecycle"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("wal-7-days"),
        "the WAL rule is not warned about: {}",
        out.stderr
    );
    assert_eq!(rules(), before, "printing changed the bucket");
    for _ in 0..2 {
        let out = env.lifeboat(&["lifecycle", "--apply"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let after = rules();
        let ids: Vec<&str> = after.iter().map(|r| r["ID"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "lifeboat-abort-incomplete-uploads",
                "lifeboat-noncurrent-versions",
                "media-expire",
                "wal-7-days"
            ]
        );
        assert_eq!(after[2], before[0], "the bucket's own rule changed");
        assert_eq!(after[3], before[1], "the bucket's own rule changed");
        assert_eq!(after[0]["Filter"]["Prefix"], "lifeboat/");
        assert_eq!(
            after[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            2
        );
        assert_eq!(after[1]["NoncurrentVersionExpiration"]["NoncurrentDays"], 7);
    }
}

/// A deletion the storage refuses (403: an R2 bucket lock rule, or a key without the right
/// to delete) keeps what was refused: the backup stays listed with its data, the rest of the
/// prune is done, and the prune fails naming it; once allowed, the next prune deletes it.
#[test]
fn a_refused_deletion_keeps_the_backup_and_fails_the_prune() {
    let mut env = Env::new(Repo::S3, false);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("[retention]\nmonthly_months = 0\nyearly_years = 0\n");
    std::fs::write(&env.config, config).unwrap();
    let today = env.backup(&[]);
    let listed: Value = serde_json::from_str(&env.lifeboat(&["list", "--json"]).stdout).unwrap();
    let old = fabricate(&env, &listed[0], "2025-06-03T02:00:00Z", "db");
    let stale = env.repo_path("data/db/20250101T000000Z-dead.dump.zst");
    std::fs::write(&stale, b"half").unwrap();
    let proxy = env.behind_proxy(2, 10);
    proxy.set(vec![Rule::all(Fault::Status(403, "AccessDenied"))
        .method("DELETE")
        .path("manifests/")]);
    let out = env.lifeboat(&["prune"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("refused to delete 1 objects")
            && line.contains(&format!("manifests/{old}.json"))
            && line.contains("--check-locks"),
        "{line}"
    );
    // Kept whole; the rest (the leftover) done.
    let ids: Vec<String> =
        serde_json::from_str::<Vec<Value>>(&env.lifeboat(&["list", "--json"]).stdout)
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(ids, [old.clone(), today.clone()]);
    assert!(env.repo_path(&format!("data/db/{old}.dump.zst")).exists());
    assert!(!stale.exists(), "the rest of the prune was not done");
    proxy.clear();
    let out = env.lifeboat(&["prune"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!env.repo_path(&format!("data/db/{old}.dump.zst")).exists());
}
