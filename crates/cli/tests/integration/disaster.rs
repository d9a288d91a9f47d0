//! The lost server: a database whose objects belong to an application role and are granted to
//! a read-only one is restored onto a server just made by initdb, roles and database included.

use std::process::Command;

use lifeboat_testkit::{ClusterOptions, ScratchCluster};

use crate::support::{tools, Env, Repo};

/// Ownership, privileges, memberships, role attributes and database settings, as the catalogs
/// say them, for comparing two servers.
const CATALOG: &str = "\
    SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '-') \
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
      WHERE n.nspname IN ('app', 'core') \
    UNION ALL SELECT 'schema ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '-') \
      FROM pg_namespace WHERE nspname IN ('app', 'core') \
    UNION ALL SELECT 'member ' || r.rolname || ' in ' || g.rolname \
      FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
      WHERE r.rolname LIKE 'yomira%' \
    UNION ALL SELECT 'role ' || rolname || ' login=' || rolcanlogin || ' ' || coalesce(rolconfig::text, '-') \
      FROM pg_roles WHERE rolname LIKE 'yomira%' \
    UNION ALL SELECT 'db ' || pg_get_userbyid(d.datdba) || ' ' || pg_encoding_to_char(d.encoding) || ' ' || \
      coalesce((SELECT setconfig::text FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0), '-') \
      FROM pg_database d WHERE datname = 'yomira' \
    ORDER BY 1";

/// Logs in to `db` as the application role over TCP with `password`; who it is and its
/// `search_path`.
fn log_in(cluster: &ScratchCluster, db: &str, password: &str) -> String {
    let out = Command::new(tools().path("psql"))
        .args([
            "-XAtc",
            "SELECT current_user || ' ' || current_setting('search_path')",
        ])
        .arg(format!(
            "postgresql://yomira_app@127.0.0.1:{}/{db}",
            cluster.port()
        ))
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn catalog(cluster: &ScratchCluster) -> String {
    cluster.psql("yomira", CATALOG).expect("the catalog query")
}

#[test]
fn a_database_is_restored_onto_an_empty_server_with_its_roles() {
    let env = Env::new(Repo::Local, true);
    env.sql(
        "postgres",
        "CREATE ROLE yomira_app LOGIN PASSWORD 'app-old-pw'; CREATE ROLE yomira_read NOLOGIN; \
         GRANT yomira_read TO yomira_app; ALTER ROLE yomira_app SET work_mem = '8MB'; \
         ALTER DATABASE yomira OWNER TO yomira_app; \
         ALTER DATABASE yomira SET search_path = app, public; \
         ALTER DATABASE yomira SET statement_timeout = '7s'",
    );
    env.sql(
        "yomira",
        "CREATE SCHEMA app AUTHORIZATION yomira_app; \
         CREATE TABLE app.series (id int PRIMARY KEY, title text); \
         ALTER TABLE app.series OWNER TO yomira_app; \
         GRANT USAGE ON SCHEMA app TO yomira_read; GRANT SELECT ON app.series TO yomira_read; \
         INSERT INTO app.series VALUES (1, 'One'), (2, 'Two'); \
         GRANT SELECT ON ALL TABLES IN SCHEMA core TO yomira_read",
    );
    let before = catalog(&env.cluster);
    assert!(
        before.contains("member yomira_app in yomira_read"),
        "{before}"
    );
    let id = env.backup(&[]);

    // A server just made: none of the roles, no database.
    let fresh = ScratchCluster::start(
        &tools(),
        &ClusterOptions {
            tcp_password: Some("fresh-superuser-pw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    // Without the roles, the restore cannot give the objects their owners.
    fresh.create_database("plain").unwrap();
    let refused = env.lifeboat(&["restore", "db", &id, "--into", &fresh.url("plain")]);
    assert_ne!(refused.code, 0, "{}", refused.stderr);

    let restored = env.lifeboat(&[
        "restore",
        "db",
        &id,
        "--into",
        &fresh.url("yomira"),
        "--create",
        "--globals",
        "--json",
    ]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let report: serde_json::Value = serde_json::from_str(&restored.stdout).unwrap();
    let created = report["roles"]["created"].to_string();
    assert!(
        created.contains("yomira_app") && created.contains("yomira_read"),
        "{report}"
    );
    // The server's own superuser exists already: kept as it is.
    assert!(
        report["roles"]["kept"].to_string().contains("lifeboat"),
        "{report}"
    );
    assert_eq!(report["created"], true);
    assert!(
        restored.stderr.contains("created database `yomira`"),
        "{}",
        restored.stderr
    );

    // Ownership, grants, memberships, role settings and database settings as they were.
    assert_eq!(catalog(&fresh), before);
    assert_eq!(
        fresh
            .psql(
                "yomira",
                "SELECT string_agg(title, ',' ORDER BY id) FROM app.series"
            )
            .unwrap()
            .trim(),
        "One,Two"
    );
    // The application logs in with its old password.
    assert_eq!(
        log_in(&fresh, "yomira", "app-old-pw"),
        "yomira_app app, public"
    );

    // Roles that exist are left alone: a second server where the application's password
    // has changed keeps it.
    fresh
        .psql("postgres", "ALTER ROLE yomira_app PASSWORD 'app-new-pw'")
        .unwrap();
    fresh.create_database("again").unwrap();
    let again = env.lifeboat(&[
        "restore",
        "db",
        &id,
        "--into",
        &fresh.url("again"),
        "--globals",
        "--json",
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        report["roles"]["created"],
        serde_json::json!([]),
        "{report}"
    );
    assert!(
        report["roles"]["kept"].to_string().contains("yomira_app"),
        "{report}"
    );
    assert!(log_in(&fresh, "again", "app-new-pw").starts_with("yomira_app "));
}
