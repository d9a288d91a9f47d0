//! S3 Object Lock against a server that implements it (moto): backups, WAL, the marker and a
//! copy's objects are locked until retention lets them go; a leaked key cannot delete a
//! locked version, only hide objects behind delete markers, which `undelete` removes; `prune` keeps what a lock holds and says so, extends the locks of promoted dumps,
//! and deletes for good (every version) what is no longer locked. A bucket without Object
//! Lock is refused with `object_lock` set, and nothing is committed half locked.

use jiff::{SignedDuration, Timestamp};
use lifeboat_testkit::MotoServer;

use crate::support::{Env, Repo};

const BUCKET: &str = "yomira-locked";
const OFFSITE: &str = "yomira-offsite";

/// The environment's configuration with its repository on moto, `object_lock` set, and
/// `extra` TOML (retention, copies) after it.
fn on_moto(env: &mut Env, moto: &MotoServer, bucket: &str, extra: &str) {
    env.repository_on_moto(
        &moto.endpoint,
        bucket,
        &format!("object_lock = \"governance\"\n{extra}"),
    );
}

fn lock_of(moto: &MotoServer, bucket: &str, key: &str) -> (String, Timestamp) {
    let text = moto.lock(bucket, key);
    let (mode, until) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("`{key}` is not locked: {text}"));
    (mode.to_string(), until.parse().unwrap())
}

fn near(a: Timestamp, b: Timestamp) -> bool {
    a.duration_since(b).abs() < SignedDuration::from_mins(10)
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn prune(env: &Env, at: Timestamp) -> serde_json::Value {
    let out = env.lifeboat(&["prune", "--at", &at.to_string(), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn listed(env: &Env) -> Vec<String> {
    let out = env.lifeboat(&["list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_bucket_without_object_lock_is_refused_and_no_backup_is_committed_unlocked() {
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let mut env = Env::new(Repo::Local, false);
    on_moto(&mut env, &moto, BUCKET, "");
    let out = env.lifeboat(&["init"]);
    assert_ne!(out.code, 0);
    let line = out.error_line();
    assert!(
        line.contains(&format!(
            "bucket `s3://{BUCKET}/lifeboat` has no Object Lock"
        )) && line.contains("--object-lock-enabled-for-bucket"),
        "{line}"
    );
    // A repository made without `object_lock`, which is then set: the backup fails at its
    // commit, leaves no data behind, and lists nothing; doctor says why.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace("object_lock = \"governance\"\n", ""),
    )
    .unwrap();
    assert_eq!(env.lifeboat(&["init"]).code, 0);
    std::fs::write(&env.config, &text).unwrap();
    let out = env.lifeboat(&["backup", "db"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.error_line().contains("has no Object Lock"),
        "{}",
        out.stderr
    );
    assert!(listed(&env).is_empty());
    let data = moto.python(&format!(
        "print(len(s3.list_objects_v2(Bucket='{BUCKET}', Prefix='lifeboat/data/').get('Contents', [])))"
    ));
    assert_eq!(data, "0");
    let out = env.lifeboat(&["doctor"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("object lock")
            && l.contains("has no Object Lock")),
        "{}",
        out.stdout
    );
}

#[test]
fn locked_backups_survive_a_leaked_key_and_prune_works_around_locks() {
    let moto = MotoServer::start();
    moto.create_locked_bucket(BUCKET);
    moto.create_locked_bucket(OFFSITE);
    let mut env = Env::new(Repo::Local, false);
    let retention = "[retention]\ndaily_days = 30\nmonthly_months = 0\nyearly_years = 0\nmonthly_class = \"STANDARD\"\n";
    let copy = format!(
        "[repository.copies.offsite]\nurl = \"s3://{OFFSITE}/copy\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"moto\"\nsecret_access_key = \"moto-secret\"\nobject_lock = \"compliance\"\n",
        moto.endpoint
    );
    on_moto(&mut env, &moto, BUCKET, &format!("{copy}{retention}"));
    let out = env.lifeboat(&["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (mode, until) = lock_of(&moto, BUCKET, "lifeboat/lifeboat.json");
    assert_eq!(mode, "GOVERNANCE");
    assert!(near(until, Timestamp::now() + days(365)), "{until}");
    let out = env.lifeboat(&["doctor"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("object lock")),
        "{}",
        out.stdout
    );

    // A dump: its data, roles and manifest locked for the daily window.
    let first = env.backup(&[]);
    let data = format!("lifeboat/data/db/{first}.dump.zst");
    let manifest = format!("lifeboat/manifests/{first}.json");
    let started: Timestamp = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &first[..16])
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    for key in [&data, &manifest] {
        let (mode, until) = lock_of(&moto, BUCKET, key);
        assert_eq!(mode, "GOVERNANCE", "{key}");
        assert!(near(until, started + days(30)), "{key}: {until}");
    }
    // A WAL file: locked for the PITR window (7 days).
    let segment = env.sql("yomira", "SELECT pg_walfile_name(pg_switch_wal())");
    let path = env.cluster.data_dir().join("pg_wal").join(&segment);
    let out = env.lifeboat(&["wal-push", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, until) = lock_of(&moto, BUCKET, &format!("lifeboat/wal/{segment}.zst"));
    assert!(near(until, Timestamp::now() + days(7)), "{until}");
    // An older backup (40 days, the only one of its series, so kept only as its newest),
    // never locked in the repository: in the copy its lock would already have ended, and
    // S3 refuses a lock in the past; it is copied unlocked.
    let old = moto.python(&format!(
        "import json, datetime\n\
         m = json.loads(s3.get_object(Bucket='{BUCKET}', Key='{manifest}')['Body'].read())\n\
         t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=40)\n\
         old = t.strftime('%Y%m%dT%H%M%SZ') + '-0abc'\n\
         m.update(id=old, started_at=t.strftime('%Y-%m-%dT%H:%M:%SZ'), finished_at=t.strftime('%Y-%m-%dT%H:%M:%SZ'), \
         data='data/db/' + old + '.dump.zst', globals=None, options={{'schema_only': True, 'schemas': []}})\n\
         s3.copy_object(Bucket='{BUCKET}', Key='lifeboat/' + m['data'], CopySource={{'Bucket': '{BUCKET}', 'Key': '{data}'}})\n\
         s3.put_object(Bucket='{BUCKET}', Key='lifeboat/manifests/' + old + '.json', Body=json.dumps(m))\n\
         print(old)"
    ));
    // The copy in the other account: locked in COMPLIANCE mode.
    let out = env.lifeboat(&["copy"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for key in [
        format!("copy/data/db/{first}.dump.zst"),
        format!("copy/manifests/{first}.json"),
        format!("copy/wal/{segment}.zst"),
    ] {
        assert_eq!(lock_of(&moto, OFFSITE, &key).0, "COMPLIANCE", "{key}");
    }
    for key in [
        format!("copy/data/db/{old}.dump.zst"),
        format!("copy/manifests/{old}.json"),
    ] {
        assert_eq!(moto.lock(OFFSITE, &key), "none", "{key}");
    }
    for key in [
        format!("lifeboat/data/db/{old}.dump.zst"),
        format!("lifeboat/manifests/{old}.json"),
    ] {
        for version in moto.versions(BUCKET, &key) {
            moto.python(&format!(
                "s3.delete_object(Bucket='{BUCKET}', Key='{key}', VersionId='{version}')"
            ));
        }
    }

    // The leaked key cannot delete a locked version...
    let versions = moto.versions(BUCKET, &data);
    assert_eq!(versions.len(), 1, "{versions:?}");
    let refused = moto.python(&format!(
        "try:\n    s3.delete_object(Bucket='{BUCKET}', Key='{data}', VersionId='{}')\n    print('deleted')\n\
         except Exception as e:\n    print('refused' if 'AccessDenied' in str(e) else str(e))",
        versions[0]
    ));
    assert_eq!(refused, "refused");
    // ... only hide objects: the marker, the manifest and the data, behind delete markers.
    for key in ["lifeboat/lifeboat.json", &manifest, &data] {
        moto.python(&format!("s3.delete_object(Bucket='{BUCKET}', Key='{key}')"));
    }
    let out = env.lifeboat(&["list"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    let out = env.lifeboat(&["undelete", "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["backups"], 1, "{report}");
    assert_eq!(report["hidden"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(env.lifeboat(&["list"]).code, 6, "a dry run changed nothing");
    let out = env.lifeboat(&["undelete"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(listed(&env), vec![first.clone()]);
    let before = env.fingerprints("yomira");
    env.new_database("after_the_leak");
    let out = env.restore(&first, "after_the_leak", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("after_the_leak"), before);

    let second = env.backup(&[]);
    // Retention shortened to 1 day: three days on, the first is let go by the policy but
    // locked for 30 days: kept, and said so.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace("daily_days = 30", "daily_days = 1"),
    )
    .unwrap();
    let report = prune(&env, Timestamp::now() + days(3));
    let locked = report["plan"]["locked"].as_array().unwrap();
    assert_eq!(locked.len(), 1, "{report}");
    assert_eq!(locked[0]["id"], first.as_str());
    assert_eq!(report["outcome"]["backups_deleted"], 0, "{report}");
    assert_eq!(report["outcome"]["locked"], 1, "{report}");
    let out = env.lifeboat(&[
        "prune",
        "--dry-run",
        "--at",
        &(Timestamp::now() + days(3)).to_string(),
    ]);
    assert!(out.stdout.contains("keep, locked"), "{}", out.stdout);
    std::fs::write(&env.config, &text).unwrap();
    // Forty days on, the plan (by the dates the locks were set to) lets it go; the server
    // still holds the lock today: prune keeps it, says so, and succeeds.
    let report = prune(&env, Timestamp::now() + days(40));
    assert_eq!(report["outcome"]["backups_deleted"], 0, "{report}");
    assert_eq!(report["outcome"]["locked"], 1, "{report}");
    assert_eq!(listed(&env), [first.clone(), second.clone()]);
    // Once the lock has ended (made to end now, as an administrator with the right to may),
    // it is deleted for good: no version and no delete marker left.
    let soon = (Timestamp::now() + SignedDuration::from_secs(2)).strftime("%Y-%m-%dT%H:%M:%SZ");
    let globals = format!("lifeboat/data/db/{first}.globals.sql.zst");
    for key in [&data, &manifest, &globals] {
        moto.python(&format!(
            "import datetime\nif s3.list_objects_v2(Bucket='{BUCKET}', Prefix='{key}').get('KeyCount'):\n    s3.put_object_retention(Bucket='{BUCKET}', Key='{key}', BypassGovernanceRetention=True, \
             Retention={{'Mode': 'GOVERNANCE', 'RetainUntilDate': datetime.datetime.fromisoformat('{soon}'.replace('Z', '+00:00'))}})"
        ));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let report = prune(&env, Timestamp::now() + days(40));
    assert_eq!(report["outcome"]["backups_deleted"], 1, "{report}");
    assert_eq!(report["outcome"]["locked"], 0, "{report}");
    assert_eq!(listed(&env), vec![second.clone()]);
    for key in [&data, &manifest] {
        assert!(
            moto.versions(BUCKET, key).is_empty(),
            "{key}: {:?}",
            moto.versions(BUCKET, key)
        );
    }

    // Kept for its month: the second is promoted when a third is newest, and its lock moves
    // to the first day of the month twelve months after its own.
    std::fs::write(
        &env.config,
        text.replace("monthly_months = 0", "monthly_months = 12"),
    )
    .unwrap();
    let _third = env.backup(&[]);
    let report = prune(&env, Timestamp::now() + days(40));
    assert_eq!(report["outcome"]["promoted"], 1, "{report}");
    let started = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &second[..16]).unwrap();
    let expected = jiff::civil::date(started.year() + 1, started.month(), 1)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    for key in [
        format!("lifeboat/data/db/{second}.dump.zst"),
        format!("lifeboat/manifests/{second}.json"),
    ] {
        let (mode, until) = lock_of(&moto, BUCKET, &key);
        assert_eq!((mode.as_str(), until), ("GOVERNANCE", expected), "{key}");
    }
}

#[test]
fn r2_lock_rules_are_printed_from_the_policy_and_a_bucket_s_rules_checked() {
    let env = Env::new(Repo::S3, false);
    let out = env.lifeboat(&["lifecycle", "--locks"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rules: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rules = rules["rules"].as_array().unwrap();
    let db = rules.iter().find(|r| r["id"] == "lifeboat-db").unwrap();
    assert!(db["prefix"].as_str().unwrap().ends_with("data/db/"), "{db}");
    assert_eq!(db["condition"]["type"], "Age");
    assert_eq!(db["condition"]["maxAgeSeconds"], 30 * 86_400);
    assert!(
        out.stderr.contains("wrangler r2 bucket lock set"),
        "{}",
        out.stderr
    );
    // Set as printed: they fit.
    let file = env.dir.path().join("locks.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = env.lifeboat(&["lifecycle", "--check-locks", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("fit the policy"), "{}", out.stdout);
    // One rule over the whole bucket, forever, as the API gives it: refused, naming it.
    std::fs::write(
        &file,
        r#"{"success": true, "result": {"rules": [{"id": "everything", "enabled": true, "prefix": "", "condition": {"type": "Indefinite"}}]}}"#,
    )
    .unwrap();
    let out = env.lifeboat(&[
        "lifecycle",
        "--check-locks",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error: serde_json::Value =
        serde_json::from_str(out.stderr.lines().last().unwrap()).unwrap();
    let line = error["error"].as_str().unwrap();
    assert!(
        line.contains("rule `everything`") && line.contains("more problems"),
        "{line}"
    );
    assert_eq!(error["kind"], "config");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        report["problems"].as_array().unwrap().len() >= 3,
        "{report}"
    );
    // Not rules at all: one line naming the file.
    std::fs::write(&file, "[]").unwrap();
    let out = env.lifeboat(&["lifecycle", "--check-locks", file.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("is not R2 bucket lock rules"),
        "{}",
        out.stderr
    );
}
