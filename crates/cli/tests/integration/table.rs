//! `restore table`: one table as it was at a moment, recovered on a throwaway server from a base
//! backup and the WAL archive (or from a dump), put back beside the live one.

use std::path::Path;
use std::time::Duration;

use crate::pitr::{archiving_env, switch_and_archive};
use crate::support::{terminate, wait_until, Env, Run};

/// The server's clock now, as RFC 3339 in UTC, a moment between two commits.
fn moment(env: &Env) -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let at = env.sql(
        "yomira",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    at
}

fn archive(env: &Env) {
    switch_and_archive(env.cluster.socket_dir(), env.cluster.port());
}

fn contents(env: &Env, table: &str) -> String {
    env.sql(
        "yomira",
        &format!("SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM {table} t"),
    )
}

/// The folder's entries (the throwaway servers' folders go in it).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// No server runs on a data folder under `dir`.
fn no_server_under(dir: &Path) -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    out.stdout.is_empty()
}

/// `restore table TABLES --as-of AT --into main EXTRA...`
fn restore_table(env: &Env, tables: &[&str], at: &str, extra: &[&str]) -> Run {
    let mut args = vec!["restore", "table"];
    args.extend_from_slice(tables);
    args.extend_from_slice(&["--as-of", at, "--into", "main"]);
    args.extend_from_slice(extra);
    env.lifeboat(&args)
}

fn json(out: &Run) -> serde_json::Value {
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn a_wrong_delete_is_undone_beside_the_live_table() {
    let env = archiving_env();
    let work = env.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let work_arg = work.to_str().unwrap();

    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let base = out.last_line();
    let before_base = env.sql(
        "yomira",
        "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '1 hour', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    );
    env.sql(
        "yomira",
        "CREATE TABLE public.pages (id serial PRIMARY KEY, comic_id int REFERENCES core.comic (id), \
         title text NOT NULL, views int NOT NULL DEFAULT 0); \
         CREATE INDEX pages_title ON public.pages (title); \
         CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.views := NEW.views + 1000; RETURN NEW; END'; \
         CREATE TRIGGER pages_touch BEFORE INSERT ON public.pages FOR EACH ROW WHEN (NEW.views < 0) EXECUTE FUNCTION public.touch(); \
         INSERT INTO public.pages (comic_id, title) SELECT (SELECT min(id) FROM core.comic), 'page ' || g FROM generate_series(1, 60) g",
    );
    archive(&env);
    env.sql(
        "yomira",
        "INSERT INTO public.pages (comic_id, title, views) SELECT (SELECT min(id) FROM core.comic), 'page ' || g, g FROM generate_series(61, 100) g",
    );
    let then = contents(&env, "public.pages");
    let at = moment(&env);
    // The wrong DELETE and UPDATE, then life goes on.
    env.sql("yomira", "DELETE FROM public.pages WHERE id % 3 = 0");
    env.sql(
        "yomira",
        "UPDATE public.pages SET views = 99 WHERE id <= 10",
    );
    env.sql(
        "yomira",
        "INSERT INTO public.pages (title) SELECT 'new ' || g FROM generate_series(1, 5) g",
    );
    archive(&env);
    let live_before = contents(&env, "public.pages");

    // The plan: which base backup, which WAL, how much.
    let plan = json(&restore_table(
        &env,
        &["public.pages"],
        &at,
        &["--dry-run", "--json"],
    ));
    assert_eq!(plan["from"], "wal");
    assert_eq!(plan["backup"], base.as_str());
    assert!(plan["wal"]["segments"].as_u64().unwrap() >= 2, "{plan}");
    assert!(plan["download_bytes"].as_u64().unwrap() > 0);
    assert!(plan["tables"][0]["restored_as"]
        .as_str()
        .unwrap()
        .starts_with("public.pages_20"));
    assert_eq!(entries(&work).len(), 0);
    let text = restore_table(&env, &["public.pages"], &at, &["--dry-run"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains(&format!("from base backup `{base}`"))
            && text.stdout.contains("archived WAL segments"),
        "{}",
        text.stdout
    );

    let out = restore_table(
        &env,
        &["public.pages"],
        &at,
        &["--work-dir", work_arg, "--json"],
    );
    let report = json(&out);
    let copy = report["tables"][0]["restored_as"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(report["from"], "wal");
    assert_eq!(report["backup"], base.as_str());
    assert_eq!(report["tables"][0]["rows"], 100, "{report}");
    assert_eq!(report["tables"][0]["primary_key"][0], "id");
    assert_eq!(report["tables"][0]["missing_now"], 33, "{report}");
    assert_eq!(report["tables"][0]["changed"], 7, "{report}");
    assert_eq!(report["tables"][0]["added_since"], 5, "{report}");
    // The copy holds exactly the rows of that moment; the live table is as it was.
    assert_eq!(contents(&env, &copy), then);
    assert_eq!(contents(&env, "public.pages"), live_before);
    // Indexes and the key came, renamed; the foreign key to another table and the trigger did not.
    let kinds = env.sql(
        "yomira",
        &format!(
            "SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = '{copy}'::regclass"
        ),
    );
    assert!(kinds.contains('p') && !kinds.contains('f'), "{kinds}");
    let indexes = env.sql(
        "yomira",
        &format!("SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index WHERE indrelid = '{copy}'::regclass"),
    );
    assert!(
        indexes.contains(&format!("{}_title", copy.trim_start_matches("public."))),
        "{indexes}"
    );
    assert_eq!(
        env.sql("yomira", &format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{copy}'::regclass AND NOT tgisinternal")),
        "0"
    );
    // The printed comparison finds the deleted rows, and puts them back.
    let missing = env.sql(
        "yomira",
        &format!(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM ({}) m",
            report["tables"][0]["compare"]["missing_now"]
                .as_str()
                .unwrap()
        ),
    );
    let deleted: Vec<String> = (1..=100)
        .filter(|i| i % 3 == 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(missing, deleted.join(","));
    env.sql(
        "yomira",
        report["tables"][0]["compare"]["put_back"].as_str().unwrap(),
    );
    assert_eq!(
        env.sql("yomira", "SELECT count(*) FROM public.pages"),
        "105"
    );
    // The throwaway server and its folder are gone.
    assert_eq!(entries(&work), Vec::<String>::new());
    assert!(no_server_under(&work));

    // Refusals, each naming what is wrong, the throwaway parts removed.
    let again = restore_table(&env, &["public.pages"], &at, &["--as", &copy]);
    assert_ne!(again.code, 0);
    assert!(
        again.error_line().contains("already exists"),
        "{}",
        again.stderr
    );
    let early = restore_table(&env, &["public.pages"], &before_base, &[]);
    assert_ne!(early.code, 0);
    assert!(
        early.error_line().contains("before the oldest base backup")
            && early.error_line().contains("--from-dump"),
        "{}",
        early.stderr
    );
    let absent = restore_table(&env, &["public.nothing"], &at, &["--work-dir", work_arg]);
    assert_ne!(absent.code, 0);
    assert!(
        absent
            .error_line()
            .contains("`public.nothing` did not exist at"),
        "{}",
        absent.stderr
    );
    assert_eq!(entries(&work), Vec::<String>::new());
    assert!(no_server_under(&work));
    let live = restore_table(&env, &["public.pages"], &at, &["--as", "public.pages"]);
    assert_ne!(live.code, 0);
    assert!(
        live.error_line().contains("live table itself"),
        "{}",
        live.stderr
    );
}

#[test]
fn partitioned_and_quoted_tables_and_the_dump_fallback() {
    let env = archiving_env();
    env.sql(
        "yomira",
        "CREATE TABLE public.events (id int, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
         CREATE TABLE public.events_2026_11 PARTITION OF public.events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01'); \
         CREATE TABLE public.events_2026_12 PARTITION OF public.events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01'); \
         CREATE INDEX events_note ON public.events (note); \
         CREATE TABLE core.\"Comic Pages.v2\" (id int PRIMARY KEY, \"Title\" text, n int GENERATED ALWAYS AS IDENTITY); \
         INSERT INTO public.events SELECT g, date '2026-11-20' + (g % 20), 'e' || g FROM generate_series(1, 40) g; \
         INSERT INTO core.\"Comic Pages.v2\" (id, \"Title\") SELECT g, 'T' || g FROM generate_series(1, 30) g",
    );
    // A dump with 30 pages, then 10 more.
    let dump = env.backup(&[]);
    env.sql(
        "yomira",
        "INSERT INTO core.\"Comic Pages.v2\" (id, \"Title\") SELECT g, 'T' || g FROM generate_series(31, 40) g",
    );
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events_then = contents(&env, "public.events");
    let pages_then = contents(&env, "core.\"Comic Pages.v2\"");
    let at = moment(&env);
    env.sql(
        "yomira",
        "DELETE FROM public.events WHERE id > 30; DELETE FROM core.\"Comic Pages.v2\" WHERE id % 2 = 0",
    );
    archive(&env);

    let report = json(&restore_table(
        &env,
        &["public.events", "core.\"Comic Pages.v2\""],
        &at,
        &["--schema", "recovered", "--json"],
    ));
    assert_eq!(report["tables"][0]["restored_as"], "recovered.events");
    assert_eq!(report["tables"][0]["rows"], 40, "{report}");
    assert_eq!(report["tables"][0]["partitions"], 2);
    assert_eq!(report["tables"][0]["missing_now"], 10);
    assert_eq!(
        report["tables"][1]["restored_as"],
        "recovered.\"Comic Pages.v2\""
    );
    assert_eq!(report["tables"][1]["rows"], 40);
    assert_eq!(report["tables"][1]["missing_now"], 20);
    assert_eq!(contents(&env, "recovered.events"), events_then);
    assert_eq!(contents(&env, "recovered.\"Comic Pages.v2\""), pages_then);
    assert_eq!(
        env.sql(
            "yomira",
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'recovered.events'::regclass"
        ),
        "2"
    );
    // The live tables' partitions are their own.
    assert_eq!(
        env.sql(
            "yomira",
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.events'::regclass"
        ),
        "2"
    );

    // Beside the live one, partitions renamed after it.
    let report = json(&restore_table(
        &env,
        &["public.events"],
        &at,
        &["--as", "public.events_before", "--json"],
    ));
    assert_eq!(report["tables"][0]["rows"], 40);
    let parts = env.sql(
        "yomira",
        "SELECT string_agg(inhrelid::regclass::text, ',' ORDER BY 1) FROM pg_inherits WHERE inhparent = 'public.events_before'::regclass",
    );
    assert_eq!(parts, "events_before_2026_11,events_before_2026_12");

    // Into an existing table, rows only.
    env.sql(
        "yomira",
        "CREATE TABLE public.pages_back (LIKE core.\"Comic Pages.v2\")",
    );
    let report = json(&restore_table(
        &env,
        &["core.\"Comic Pages.v2\""],
        &at,
        &["--as", "public.pages_back", "--data-only", "--json"],
    ));
    assert_eq!(report["tables"][0]["rows"], 40);
    assert_eq!(contents(&env, "public.pages_back"), pages_then);

    // From the dump: as old as the dump, and said so.
    let plan = json(&restore_table(
        &env,
        &["core.\"Comic Pages.v2\""],
        &at,
        &["--from-dump", "--dry-run", "--json"],
    ));
    assert_eq!(plan["from"], "dump");
    assert_eq!(plan["backup"], dump.as_str());
    assert!(plan["data_age_seconds"].as_i64().unwrap() >= 2, "{plan}");
    let out = restore_table(
        &env,
        &["core.\"Comic Pages.v2\""],
        &at,
        &["--from-dump", "--as", "core.pages_from_dump"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("from dump `{dump}`: the data is as of")),
        "{}",
        out.stdout
    );
    assert_eq!(
        env.sql(
            "yomira",
            "SELECT count(*) || ' ' || max(id) FROM core.pages_from_dump"
        ),
        "30 30"
    );
    // Its scratch server goes where `--work-dir` says: a file there is refused, naming it;
    // a folder is used, and left empty.
    let from_dump_in = |name: &str, work: &Path| {
        restore_table(
            &env,
            &["core.\"Comic Pages.v2\""],
            &at,
            &[
                "--from-dump",
                "--as",
                name,
                "--work-dir",
                work.to_str().unwrap(),
            ],
        )
    };
    let not_a_folder = env.dir.path().join("not-a-folder");
    std::fs::write(&not_a_folder, b"").unwrap();
    let out = from_dump_in("core.pages_nowhere", &not_a_folder);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains(&format!("in `{}` (--work-dir)", not_a_folder.display())),
        "{}",
        out.stderr
    );
    let work = env.dir.path().join("dump-work");
    std::fs::create_dir(&work).unwrap();
    let out = from_dump_in("core.pages_in_work", &work);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
}

#[test]
fn a_stopped_table_restore_leaves_nothing_behind() {
    let env = archiving_env();
    let work = env.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Enough rows that the copy takes a while after the server has started.
    env.sql(
        "yomira",
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text); \
        INSERT INTO public.notes SELECT g, md5(g::text) FROM generate_series(1, 1000000) g",
    );
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let at = moment(&env);
    env.sql("yomira", "DELETE FROM public.notes");
    archive(&env);
    // Stopped as soon as the throwaway folder appears (downloading), and once its server runs.
    for started in [false, true] {
        let child = env
            .command(&[
                "restore",
                "table",
                "public.notes",
                "--as-of",
                &at,
                "--into",
                "main",
                "--work-dir",
                work.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(60), "the throwaway server", || {
            entries(&work)
                .iter()
                .any(|e| !started || work.join(e).join("data").join("postmaster.pid").exists())
        });
        let out = terminate(child);
        assert_eq!(out.code, 130, "server started: {started}: {}", out.stderr);
        assert_eq!(
            entries(&work),
            Vec::<String>::new(),
            "server started: {started}"
        );
        assert!(no_server_under(&work), "server started: {started}");
        assert_eq!(
            env.sql(
                "yomira",
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'notes_20%'"
            ),
            "0"
        );
    }
}
