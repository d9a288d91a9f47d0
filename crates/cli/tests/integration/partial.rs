//! Single-table, single-schema and schema-only backups and restores.

use crate::support::{Env, Repo};

#[test]
fn single_table_restore_into_existing_schema() {
    let env = Env::new(Repo::Local, false);
    let before = env.fingerprints("yomira");
    let id = env.backup(&[]);

    // The schema first (empty tables), then one table's data, as the guide's procedure does.
    env.new_database("target");
    let out = env.restore(&id, "target", &["--schema-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.sql("target", "SELECT count(*) FROM core.comic"), "0");

    let out = env.restore(&id, "target", &["--table", "core.comic", "--data-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.fingerprint("target", "core.comic"),
        before[2],
        "core.comic differs"
    );
    assert_eq!(env.sql("target", "SELECT count(*) FROM users.account"), "0");
    assert_eq!(
        env.sql("target", "SELECT count(*) FROM core.\"Chapter\""),
        "0"
    );

    // A mixed-case table.
    let out = env.restore(&id, "target", &["--table", "core.Chapter", "--data-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.fingerprint("target", "core.\"Chapter\""),
        before[1],
        "core.Chapter differs"
    );
    assert_eq!(env.sql("target", "SELECT count(*) FROM users.account"), "0");

    // A table restored with its definition into a database that lacks it.
    env.new_database("fresh");
    let out = env.restore(&id, "fresh", &["--table", "public.schema_migrations"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.sql(
            "fresh",
            "SELECT version || ',' || dirty FROM schema_migrations"
        ),
        "42,false"
    );
    assert_eq!(env.table_count("fresh"), 1);
}

#[test]
fn single_schema_restore_and_backup() {
    let env = Env::new(Repo::Local, false);
    let before = env.fingerprints("yomira");
    let full = env.backup(&[]);

    env.new_database("users_only");
    let out = env.restore(&full, "users_only", &["--schema", "users"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprint("users_only", "users.account"), before[6]);
    assert_eq!(env.table_count("users_only"), 1);

    // A backup of one schema holds only that schema.
    let core = env.backup(&["--schema", "core"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &core, "--json"]).stdout).unwrap();
    let schemas: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["schema"].as_str().unwrap())
        .collect();
    assert!(
        !schemas.is_empty() && schemas.iter().all(|s| *s == "core"),
        "{schemas:?}"
    );
    env.new_database("core_only");
    let out = env.restore(&core, "core_only", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprint("core_only", "core.\"Chapter\""), before[1]);
    assert_eq!(env.fingerprint("core_only", "core.comic"), before[2]);
    assert_eq!(
        env.sql(
            "core_only",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'users'"
        ),
        "0"
    );

    // A mixed-case schema.
    let audit = env.backup(&["--schema", "Audit"]);
    env.new_database("audit_only");
    let out = env.restore(&audit, "audit_only", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.fingerprint("audit_only", "\"Audit\".\"EventLog\""),
        before[0]
    );
}

#[test]
fn schema_only_backup_restores_empty_tables() {
    let env = Env::new(Repo::S3, false);
    let id = env.backup(&["--schema-only"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&env.lifeboat(&["show", &id, "--json"]).stdout).unwrap();
    assert_eq!(manifest["options"]["schema_only"], true);
    env.new_database("schema_copy");
    let out = env.restore(&id, "schema_copy", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.table_count("schema_copy"), env.table_count("yomira"));
    assert_eq!(
        env.sql("schema_copy", "SELECT count(*) FROM core.comic"),
        "0"
    );
    // The generated column and the enum came along.
    env.sql(
        "schema_copy",
        "INSERT INTO core.comic (title, status) VALUES ('new', 'hiatus')",
    );
    assert_eq!(
        env.sql("schema_copy", "SELECT title_upper FROM core.comic"),
        "NEW"
    );
}
