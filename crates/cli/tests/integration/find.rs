//! `wal find`: what the archived WAL says happened, and recoveries that stop just before one
//! transaction (`--before-xid`), on a cluster that pgbench keeps busy meanwhile.

use std::time::Duration;

use crate::pitr::{archiving_env, recover_and_start, sql_at, switch_and_archive};
use crate::support::{tools, Env};

fn now(env: &Env) -> jiff::Timestamp {
    env.sql(
        "yomira",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .parse()
    .unwrap()
}

/// Runs `sql` in one transaction and returns its id.
fn xid_of(env: &Env, sql: &str) -> u32 {
    let sql = if sql.ends_with("SELECT 0") {
        sql.trim_end_matches("; SELECT 0").to_string()
    } else {
        format!("{sql}; SELECT txid_current()")
    };
    let out = env.sql("yomira", &sql);
    out.lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction id in {out:?}"))
}

fn contents(env: &Env, table: &str) -> String {
    env.sql(
        "yomira",
        &format!("SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM {table} t"),
    )
}

/// `wal find ARGS --json`, which must succeed.
fn find(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["wal", "find", "--json"];
    all.extend_from_slice(args);
    let out = env.lifeboat(&all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn pgbench(env: &Env, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(tools().path("pgbench"));
    cmd.args(args)
        .env("PGHOST", env.cluster.socket_dir())
        .env("PGPORT", env.cluster.port().to_string())
        .env("PGUSER", "lifeboat")
        .env("PGDATABASE", "yomira")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

#[test]
fn the_wal_tells_when_and_recovery_stops_just_before() {
    let env = archiving_env();
    let (socket, port) = (env.cluster.socket_dir().to_path_buf(), env.cluster.port());
    env.sql(
        "yomira",
        "CREATE TABLE public.ledger (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO public.ledger SELECT g, g FROM generate_series(1, 100) g; \
         CREATE TABLE public.scratch (id int); INSERT INTO public.scratch SELECT generate_series(1, 10); \
         CREATE TABLE public.gone (id int, note text); \
         INSERT INTO public.gone SELECT g, 'row ' || g FROM generate_series(1, 20) g",
    );
    assert!(pgbench(&env, &["-i", "-q", "-s", "1"])
        .status()
        .unwrap()
        .success());
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::thread::sleep(Duration::from_millis(1100));
    let since = now(&env);
    std::thread::sleep(Duration::from_millis(200));

    // pgbench writes its own tables all along.
    let mut bench = pgbench(&env, &["-n", "-c", "2", "-T", "8"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Each step's transaction id, and the server's clock just before and after it.
    let mut steps: Vec<(u32, jiff::Timestamp, jiff::Timestamp)> = Vec::new();
    let mut xid_of = |env: &Env, sql: &str| {
        let before = now(env);
        let xid = xid_of(env, sql);
        steps.push((xid, before, now(env)));
        xid
    };
    let insert = xid_of(
        &env,
        "INSERT INTO public.ledger VALUES (101, 101), (102, 102)",
    );
    let before_delete = contents(&env, "public.ledger");
    let delete = xid_of(&env, "DELETE FROM public.ledger WHERE id <= 33");
    let update = xid_of(
        &env,
        "UPDATE public.ledger SET v = -v WHERE id BETWEEN 40 AND 44",
    );
    let aborted = xid_of(
        &env,
        "BEGIN; DELETE FROM public.ledger WHERE id = 50; SELECT txid_current(); ROLLBACK; SELECT 0",
    );
    let truncate = xid_of(&env, "TRUNCATE public.scratch");
    let dropped = xid_of(&env, "DROP TABLE public.gone");
    env.sql("yomira", "SELECT pg_create_restore_point('after-the-drop')");
    std::thread::sleep(Duration::from_millis(200));
    let until = now(&env);
    let _ = bench.wait();
    switch_and_archive(&socket, port);

    // The window's transactions on the three tables: exactly those, in order, with their
    // commit times inside the window; pgbench's are not among them.
    let since_arg = since.to_string();
    let report = find(
        &env,
        &[
            "--table",
            "public.ledger",
            "--table",
            "public.scratch",
            "--table",
            "public.gone",
            "--since",
            &since_arg,
        ],
    );
    let found: Vec<(u64, String)> = report["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let tables: Vec<String> = t["tables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["table"].as_str().unwrap(),
                        e["summary"].as_str().unwrap()
                    )
                })
                .collect();
            (t["xid"].as_u64().unwrap(), tables.join("; "))
        })
        .collect();
    let expected: Vec<(u64, String)> = vec![
        (insert.into(), "public.ledger 2 inserted".into()),
        (delete.into(), "public.ledger 33 deleted".into()),
        (update.into(), "public.ledger 5 updated".into()),
        (aborted.into(), "public.ledger 1 deleted".into()),
        (
            truncate.into(),
            "public.scratch truncated or rewritten".into(),
        ),
        (dropped.into(), "public.gone dropped".into()),
    ];
    assert_eq!(found, expected, "{report}");
    for t in report["transactions"].as_array().unwrap() {
        let at: jiff::Timestamp = t["at"].as_str().unwrap().parse().unwrap();
        let (_, before, after) = steps.iter().find(|s| t["xid"] == s.0).unwrap();
        assert!(
            at >= *before && at <= *after,
            "{t} outside {before}..{after}"
        );
        assert!(at >= since && at <= until, "{t} outside {since}..{until}");
        assert_eq!(t["committed"], t["xid"] != aborted, "{t}");
    }
    assert_eq!(report["followed"][2]["table"], "public.gone");
    assert!(
        report["followed"][2]["found_in"]
            .as_str()
            .unwrap()
            .starts_with("recovered at"),
        "{report}"
    );
    assert_eq!(
        report["restore_points"][0]["name"], "after-the-drop",
        "{report}"
    );
    let undo = report["transactions"][1]["undo"].as_str().unwrap();
    assert_eq!(
        undo,
        format!("lifeboat restore table public.ledger --before-xid {delete}")
    );

    // `--limit`: the first ones listed, the rest counted, from when to look again.
    let limited = find(
        &env,
        &[
            "--table",
            "public.ledger",
            "--since",
            &since_arg,
            "--limit",
            "2",
        ],
    );
    let listed: Vec<u64> = limited["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["xid"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [u64::from(insert), u64::from(delete)], "{limited}");
    assert_eq!(limited["more"], 2, "{limited}");
    assert_eq!(
        limited["first_more"], report["transactions"][2]["at"],
        "{limited}"
    );

    // `--ddl`: the TRUNCATE and the DROP change definitions; the row changes do not.
    let out = env.lifeboat(&["wal", "find", "--ddl", "--since", &since.to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("xid {truncate} "))
            && out.stdout.contains(&format!("xid {dropped} "))
            && !out.stdout.contains(&format!("xid {delete} ")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("restore point `after-the-drop`"),
        "{}",
        out.stdout
    );

    // The ledger as it was just before the DELETE: the insert before it in, nothing after.
    let out = env.lifeboat(&[
        "restore",
        "table",
        "public.ledger",
        "--before-xid",
        &delete.to_string(),
        "--into",
        "main",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let copy = restored["tables"][0]["restored_as"].as_str().unwrap();
    assert_eq!(contents(&env, copy), before_delete);
    assert_eq!(restored["tables"][0]["missing_now"], 33, "{restored}");

    // The whole cluster just before the DROP: the dropped table is back with its rows, the
    // TRUNCATE before it is in.
    let sock = env.dir.path().join("sock-undrop");
    std::fs::create_dir(&sock).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (out, server) = recover_and_start(
        &env,
        "undrop",
        &sock,
        &["--before-xid", &dropped.to_string()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &sock,
            server.port,
            "SELECT count(*) || ' ' || max(note) FROM public.gone"
        ),
        "20 row 9"
    );
    assert_eq!(
        sql_at(&sock, server.port, "SELECT count(*) FROM public.scratch"),
        "0"
    );
    drop(server);

    // A segment missing in the middle of the window: the rest is read, the gap named, and
    // the run before it ends although its last record goes on into the missing one.
    let before_bulk = now(&env);
    env.sql(
        "yomira",
        "CREATE TABLE public.bulk AS SELECT g AS id, repeat(md5(g::text), 16) AS body FROM generate_series(1, 120000) g",
    );
    env.sql("yomira", "DELETE FROM public.ledger WHERE id = 99");
    let last = switch_and_archive(&socket, port);
    let (timeline, number) = (&last[..8], u64::from_str_radix(&last[16..], 16).unwrap());
    let missing = format!("{timeline}{}{:08X}", &last[8..16], number - 2);
    std::fs::remove_file(env.repo_path(&format!("wal/{missing}.zst.age"))).unwrap();
    let report = find(
        &env,
        &[
            "--table",
            "public.ledger",
            "--since",
            &before_bulk.to_string(),
        ],
    );
    assert_eq!(report["gaps"][0], missing.as_str(), "{report}");
    assert_eq!(
        report["transactions"][0]["tables"][0]["deleted"], 1,
        "{report}"
    );

    // Refusals: a transaction the archive does not have.
    let out = env.lifeboat(&[
        "restore",
        "pitr",
        "--pgdata",
        env.dir.path().join("never").to_str().unwrap(),
        "--before-xid",
        "4000000000",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("transaction 4000000000"),
        "{}",
        out.stderr
    );
    assert!(!env.dir.path().join("never").join("PG_VERSION").exists());
}
