//! Cold tiers against a server that implements them (moto): a monthly dump that `prune` moved
//! to GLACIER cannot be read until restored; `restore db` and `verify` request it back, say so,
//! and with `--wait SECONDS` wait for it; `list` says where it stands.

use lifeboat_testkit::MotoServer;

use crate::pitr::{
    archive_through_lifeboat, archiving_cluster, recover_and_start, sql_at, switch_and_archive,
};
use crate::support::{Env, Repo};

const BUCKET: &str = "yomira-tiers";

fn readiness(env: &Env, id: &str) -> String {
    let out = env.lifeboat(&["list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let entry = listed.iter().find(|m| m["id"] == id).unwrap();
    entry["readiness"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn an_archived_monthly_dump_is_requested_back_then_restores() {
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let mut env = Env::new(Repo::Local, false);
    // The same environment, its repository on moto, with monthly dumps moved to GLACIER.
    env.repository_on_moto(
        &moto.endpoint,
        BUCKET,
        "[retention]\nmonthly_class = \"GLACIER\"\n",
    );
    assert_eq!(env.lifeboat(&["init"]).code, 0);
    let first = env.backup(&[]);
    let _second = env.backup(&[]);
    let before = env.fingerprints("yomira");
    // Forty days on, the first is kept only as its month's first: promoted to GLACIER.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 40)).to_string();
    let out = env.lifeboat(&["prune", "--at", &later]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key = format!("lifeboat/data/db/{first}.dump.zst");
    assert_eq!(moto.storage_class(BUCKET, &key), "GLACIER");
    assert_eq!(readiness(&env, &first), "archived");
    let out = env.lifeboat(&["list"]);
    assert!(out.stdout.contains("GLACIER: archived"), "{}", out.stdout);

    // Without --wait: the restore request is made, and the command says when to come back.
    env.new_database("thawed");
    let out = env.restore(&first, "thawed", &["--tier", "expedited"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!("backup `{first}` is in `GLACIER`"))
            && line.contains("tier Expedited")
            && line.contains("within 1 to 5 minutes")
            && line.contains("--wait"),
        "{line}"
    );
    assert!(
        out.stderr.contains("requested a restore of"),
        "{}",
        out.stderr
    );
    assert_eq!(env.table_count("thawed"), 0);
    // moto serves restore requests at once: readable now, and listed so.
    assert_eq!(readiness(&env, &first), "restored");
    let out = env.restore(&first, "thawed", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("thawed"), before);

    // Archived again: `verify --wait` requests it back, waits, and verifies.
    moto.python(&format!(
        "s3.copy_object(Bucket='{BUCKET}', Key='{key}', CopySource={{'Bucket': '{BUCKET}', 'Key': '{key}'}}, \
         StorageClass='GLACIER', MetadataDirective='COPY')"
    ));
    assert_eq!(readiness(&env, &first), "archived");
    let out = env.lifeboat(&["verify", &first, "--wait", "600", "--tier", "bulk"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("waiting for the restore of backup"),
        "{}",
        out.stderr
    );
    assert_eq!(readiness(&env, &first), "restored");
}

/// A base backup stored in GLACIER: `restore pitr` requests it back and says when to come
/// back; with `--wait` it waits, then recovers to the last archived segment.
#[test]
fn an_archived_base_backup_is_requested_back_then_recovers() {
    let moto = MotoServer::start();
    let bucket = "yomira-cold-base";
    moto.create_bucket(bucket);
    let mut env = Env::with_cluster(Repo::Local, false, archiving_cluster());
    env.repository_on_moto(
        &moto.endpoint,
        bucket,
        "[repository.storage_class]\nbase = \"GLACIER\"\n",
    );
    assert_eq!(env.lifeboat(&["init"]).code, 0);
    archive_through_lifeboat(&env, "");
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base = out.last_line();
    env.sql("yomira", "CREATE TABLE public.after_base (id int)");
    env.sql("yomira", "INSERT INTO public.after_base VALUES (7)");
    switch_and_archive(&socket, port);
    let key = format!("lifeboat/data/base/{base}.tar.zst");
    assert_eq!(moto.storage_class(bucket, &key), "GLACIER");

    let (out, _server) = recover_and_start(
        &env,
        "thawing",
        &socket,
        &["--latest", "--tier", "expedited"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains(&format!("backup `{base}` is in `GLACIER`")) && line.contains("--wait"),
        "{line}"
    );
    assert!(
        !env.dir.path().join("thawing").join("PG_VERSION").exists(),
        "unpacked before it was readable"
    );
    // Archived again (moto serves requests at once): --wait waits for it, then recovers.
    moto.python(&format!(
        "s3.copy_object(Bucket='{bucket}', Key='{key}', CopySource={{'Bucket': '{bucket}', 'Key': '{key}'}}, \
         StorageClass='GLACIER', MetadataDirective='COPY')"
    ));
    let (out, server) = recover_and_start(&env, "thawed", &socket, &["--latest", "--wait", "600"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("requested a restore of"),
        "{}",
        out.stderr
    );
    assert_eq!(
        sql_at(&socket, server.port, "SELECT id FROM public.after_base"),
        "7"
    );
}
