//! Full backup and restore round trips, compared table by table.

use crate::support::{Env, Repo};

fn round_trip(repo: Repo, encrypted: bool) {
    let env = Env::new(repo, encrypted);
    // A comment and a privilege, which restores apply apart from the tables'; a table of
    // about 3 MiB (rows with tabs, newlines and backslashes among them), which the pipelined
    // restore cuts into pieces that load on both sessions.
    env.sql(
        "yomira",
        "COMMENT ON TABLE core.comic IS 'the comics'; GRANT SELECT ON core.comic TO PUBLIC; \
         CREATE TABLE core.page_text AS SELECT g AS id, CASE WHEN g % 997 = 0 \
         THEN E'a\\tb\\nc\\\\d' ELSE repeat(md5(g::text), 2) END AS body \
         FROM generate_series(1, 40000) g; \
         ALTER TABLE core.page_text ADD PRIMARY KEY (id); \
         CREATE INDEX page_text_body ON core.page_text (body)",
    );
    let before = env.fingerprints("yomira");
    let page_text = env.fingerprint("yomira", "core.page_text");
    let id = env.backup(&[]);

    let list = env.lifeboat(&["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains(&id), "{}", list.stdout);
    let json = env.lifeboat(&["list", "--json"]);
    let manifests: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let manifest = &manifests[0];
    assert_eq!(manifest["id"], id.as_str());
    assert_eq!(manifest["encryption"].is_null(), !encrypted);
    let comic = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == "core" && t["name"] == "comic")
        .unwrap();
    assert_eq!(comic["rows"], 200);

    // The stored object is what the manifest says it is.
    let data = env.repo_path(manifest["data"].as_str().unwrap());
    let stored = std::fs::read(&data).unwrap();
    assert_eq!(
        stored.len() as u64,
        manifest["stored_size"].as_u64().unwrap()
    );
    if encrypted {
        assert!(stored.starts_with(b"age-encryption.org/v1"), "not age");
    } else {
        assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd");
    }

    env.new_database("restored");
    let out = env.restore("latest", "restored", &[]);
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    assert_eq!(out.last_line(), id);
    assert_eq!(env.fingerprints("restored"), before);

    // A parallel restore streams in one transaction; index builds get parallel workers.
    env.new_database("restored_jobs");
    let out = env.restore(&id, "restored_jobs", &["--jobs", "3", "--json"]);
    assert_eq!(out.code, 0, "parallel restore failed: {}", out.stderr);
    assert_eq!(env.fingerprints("restored_jobs"), before);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["settings"]["max_parallel_maintenance_workers"], "2");
    assert!(report["settings"]["maintenance_work_mem"]
        .as_str()
        .unwrap()
        .ends_with("kB"));
    // Every table's rows were counted in the archive on its way, none afterwards.
    assert!(report["tables_checked"].as_u64().unwrap() > 0);
    assert_eq!(report["tables_counted_in_stream"], report["tables_checked"]);

    // --spool: through a spool file that is removed afterwards, tables loaded in parallel.
    let spool = env.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    env.new_database("restored_parallel");
    let out = env.restore(
        &id[..12],
        "restored_parallel",
        &[
            "--jobs",
            "2",
            "--spool",
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "parallel restore failed: {}", out.stderr);
    // The spooled archive got its data offsets (else every worker reads it from the top).
    assert!(!out.stderr.contains("could not index"), "{}", out.stderr);
    assert_eq!(env.fingerprints("restored_parallel"), before);
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool file left behind"
    );

    // --create --spool: tables loaded from the spool while the archive still arrives, into a
    // database made for the restore; the rest (sequences, large objects, indexes,
    // constraints, materialized views, comments, privileges) as the source has it.
    let out = env.restore(
        &id,
        "created_parallel",
        &[&crate::support::pipelined(&spool)[..], &["--json"]].concat(),
    );
    assert_eq!(out.code, 0, "pipelined restore failed: {}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["pipelined"], true, "{report}");
    assert_eq!(report["settings"]["synchronous_commit"], "off");
    assert!(report["tables_checked"].as_u64().unwrap() > 0);
    assert_eq!(report["tables_counted_in_stream"], report["tables_checked"]);
    assert_eq!(env.fingerprints("created_parallel"), before);
    // The large table was loaded in pieces, exactly.
    let pieces = report["pieces"].as_u64().unwrap();
    assert!(
        pieces > report["tables_checked"].as_u64().unwrap(),
        "no table was cut into pieces: {report}"
    );
    // Indexes and keys were built as their tables came in, while later tables loaded; the
    // schema compared below holds every one of them, valid (pg_dump leaves out invalid ones).
    let built = report["indexes_while_loading"].as_u64().unwrap();
    assert!(built >= 2, "no index built while loading: {report}");
    assert_eq!(
        env.sql(
            "created_parallel",
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             WHERE c.relname = 'page_text' AND i.indisvalid"
        ),
        "2"
    );
    assert_eq!(
        env.fingerprint("created_parallel", "core.page_text"),
        page_text
    );
    assert_eq!(
        env.sql(
            "created_parallel",
            "SELECT count(*) FROM core.page_text WHERE body LIKE E'%\\n%'"
        ),
        "40"
    );
    assert_eq!(
        schema_of(&env, "created_parallel"),
        schema_of(&env, "yomira")
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    // --clean restores over a database that has drifted.
    env.sql("restored", "DELETE FROM core.\"Chapter\" WHERE id < 100; UPDATE users.account SET email = 'x' || email");
    assert_ne!(env.fingerprints("restored"), before);
    let out = env.restore(&id, "restored", &["--clean"]);
    assert_eq!(out.code, 0, "clean restore failed: {}", out.stderr);
    assert_eq!(env.fingerprints("restored"), before);
}

/// A database's schema as `pg_dump --schema-only` writes it (without the random key of its
/// `\restrict` lines).
fn schema_of(env: &Env, db: &str) -> String {
    let out = std::process::Command::new(crate::support::tools().path("pg_dump"))
        .args(["--schema-only", "--dbname", &env.cluster.url(db)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn round_trip_local_folder() {
    round_trip(Repo::Local, false);
}

#[test]
fn round_trip_local_folder_encrypted() {
    round_trip(Repo::Local, true);
}

#[test]
fn round_trip_s3() {
    round_trip(Repo::S3, false);
}

#[test]
fn round_trip_s3_encrypted() {
    round_trip(Repo::S3, true);
}

#[test]
fn show_and_json_backup_output() {
    let env = Env::new(Repo::Local, false);
    let out = env.lifeboat(&["backup", "db", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let id = manifest["id"].as_str().unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["kind"], "db");
    assert_eq!(manifest["compression"]["algorithm"], "zstd");
    assert!(manifest["server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));
    assert!(manifest["raw_size"].as_u64().unwrap() > manifest["stored_size"].as_u64().unwrap());
    let shown = env.lifeboat(&["show", id]);
    assert_eq!(shown.code, 0);
    assert!(
        shown.stdout.contains("core.comic") && shown.stdout.contains(id),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("\"Audit\"") || shown.stdout.contains("Audit.EventLog"),
        "{}",
        shown.stdout
    );
}

#[test]
fn multipart_upload_of_incompressible_data() {
    let env = Env::new(Repo::S3, true);
    // About 24 MiB that zstd cannot shrink: five 5 MiB parts and a short last one.
    env.sql(
        "yomira",
        "CREATE TABLE public.blobs AS SELECT g AS id, decode(string_agg(md5(g::text || ':' || r::text), ''), 'hex') AS payload \
         FROM generate_series(1, 6000) g, generate_series(1, 256) r GROUP BY g",
    );
    let before = env.fingerprint("yomira", "public.blobs");
    let id = env.backup(&[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &id, "--json"]).stdout).unwrap();
    let stored = manifest["stored_size"].as_u64().unwrap();
    assert!(
        stored > 20 << 20,
        "expected an incompressible dump, stored {stored}"
    );
    let object = env.repo_path(manifest["data"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&object).unwrap().len(), stored);
    env.new_database("restored");
    let out = env.restore(&id, "restored", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprint("restored", "public.blobs"), before);
}

#[test]
fn a_backup_named_by_its_id_is_found_by_reading_its_own_manifest_alone() {
    let env = Env::new(Repo::S3, false);
    let ids: Vec<String> = (0..3).map(|_| env.backup(&["--schema-only"])).collect();
    let s3 = env.s3.as_ref().unwrap();
    let requests = |args: &[&str]| {
        let before = s3.requests();
        let run = env.lifeboat(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        (s3.requests() - before, run.stdout)
    };
    // `latest` reads every manifest; an id, or the start of one, its own (one request each
    // over S3, which says whether it is there with the first bytes).
    let (latest, shown) = requests(&["show", "latest", "--json"]);
    assert!(shown.contains(&ids[2]), "{shown}");
    let (by_id, shown) = requests(&["show", &ids[0], "--json"]);
    assert!(shown.contains(&ids[0]), "{shown}");
    assert_eq!(
        latest - by_id,
        2,
        "latest: {latest} requests, by id: {by_id}"
    );
    let (by_prefix, _) = requests(&["show", &ids[1][..ids[1].len() - 2], "--json"]);
    assert_eq!(by_prefix, by_id);
}
