//! Test environment: a scratch cluster holding the sample database, a repository (a folder or
//! a bucket on a real S3 server), a config file, and a runner for the real `lifeboat` binary.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_core::postgres::sample::{
    fingerprint_sql, LARGE_OBJECTS_SQL, SAMPLE_SQL, SAMPLE_TABLES,
};
use lifeboat_testkit::{ClusterOptions, PgTools, S3Server, ScratchCluster};

pub const S3_KEY: &str = "lifeboat-test";
pub const S3_SECRET: &str = "lifeboat-test-secret-value";
pub const BUCKET: &str = "backups";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Repo {
    Local,
    S3,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub cluster: ScratchCluster,
    pub s3: Option<S3Server>,
    pub config: PathBuf,
    pub identity: Option<PathBuf>,
    pub extra_env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The last line of stdout (a new backup's id).
    pub fn last_line(&self) -> String {
        self.stdout
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The error line: exactly one line starting with `error: `.
    /// The error of a `--json` command: its last line on stderr, one JSON object.
    pub fn json_error(&self) -> serde_json::Value {
        let line = self.stderr.lines().last().unwrap_or_default();
        let error: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON error line ({e}): {}", self.stderr));
        assert_eq!(error["exit_code"], self.code, "{error}");
        error
    }

    pub fn error_line(&self) -> String {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected one error line, stderr: {}",
            self.stderr
        );
        errors[0].to_string()
    }
}

pub fn tools() -> PgTools {
    PgTools::locate(None)
}

impl Env {
    pub fn new(repo: Repo, encrypted: bool) -> Env {
        Env::with_cluster(repo, encrypted, ClusterOptions::default())
    }

    /// With `options.tcp_password`, the database is reached over TCP and the password is
    /// given through `${LB_TEST_PG_PASSWORD}`.
    pub fn with_cluster(repo: Repo, encrypted: bool, options: ClusterOptions) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ScratchCluster::start(&tools(), &options).expect("scratch cluster");
        cluster.create_database("yomira").unwrap();
        cluster.psql("yomira", SAMPLE_SQL).unwrap();
        let s3 = (repo == Repo::S3).then(|| {
            let server = S3Server::start(S3_KEY, S3_SECRET);
            server.create_bucket(BUCKET);
            server
        });
        let mut env = Env {
            dir,
            cluster,
            s3,
            config: PathBuf::new(),
            identity: None,
            extra_env: vec![("LB_TEST_S3_SECRET".into(), S3_SECRET.into())],
        };
        let mut text = String::new();
        match &env.s3 {
            None => text.push_str(&format!("[repository]\nurl = \"file://{}/repo\"\n", env.dir.path().display())),
            Some(s3) => text.push_str(&format!(
                "[repository]\nurl = \"s3://{BUCKET}/lifeboat\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
                 access_key_id = \"{S3_KEY}\"\nsecret_access_key = \"${{LB_TEST_S3_SECRET}}\"\npart_size_mib = 5\n\
                 [repository.storage_class]\ndb = \"STANDARD\"\n",
                s3.endpoint
            )),
        }
        env.write_config(&text);
        if encrypted {
            let identity = env.dir.path().join("identity.txt");
            let out = env.lifeboat(&["key", "generate", "--out", identity.to_str().unwrap()]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            text.push_str(&format!(
                "[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
                out.last_line(),
                identity.display()
            ));
            env.identity = Some(identity);
        }
        text.push_str("[postgres.main]\ncritical_tables = [\"core.comic\"]\n");
        match &options.tcp_password {
            None => text.push_str(&format!("url = \"{}\"\n", env.cluster.url("yomira"))),
            Some(password) => {
                text.push_str(&format!(
                    "url = \"{}\"\npassword = \"${{LB_TEST_PG_PASSWORD}}\"\n",
                    env.cluster.tcp_url("yomira")
                ));
                env.extra_env
                    .push(("LB_TEST_PG_PASSWORD".into(), password.clone()));
            }
        }
        env.write_config(&text);
        let init = env.lifeboat(&["init"]);
        assert_eq!(init.code, 0, "init: {}", init.stderr);
        env
    }

    /// Moves the repository to `bucket` of the moto server at `endpoint`, with `extra` TOML
    /// after `[repository]`'s keys (more keys, then other sections); the rest of the
    /// configuration stays.
    pub fn repository_on_moto(&mut self, endpoint: &str, bucket: &str, extra: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let (_, rest) = text.split_once("[postgres.main]").unwrap();
        let rest = rest.to_string();
        self.write_config(&format!(
            "[repository]\nurl = \"s3://{bucket}/lifeboat\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"moto\"\nsecret_access_key = \"moto-secret\"\n{extra}\n[postgres.main]{rest}"
        ));
    }

    pub fn write_config(&mut self, text: &str) {
        self.config = self.dir.path().join("lifeboat.toml");
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("LIFEBOAT_CONFIG")
            .env_remove("PGPASSWORD")
            .env("LIFEBOAT_LOG", "info")
            // Loopback only: never the instance metadata service.
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// lifeboat started with `args`, its output captured (for [`run_of`] once it ends).
    pub fn start(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn lifeboat(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("lifeboat runs");
        run_of(out)
    }

    pub fn backup(&self, extra: &[&str]) -> String {
        let mut args = vec!["backup", "db"];
        args.extend_from_slice(extra);
        let out = self.lifeboat(&args);
        assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
        let id = out.last_line();
        assert!(
            lifeboat_core::repository::manifest::is_backup_id(&id),
            "not an id: {id:?}"
        );
        id
    }

    pub fn restore(&self, id: &str, db: &str, extra: &[&str]) -> Run {
        let url = self.cluster.url(db);
        let mut args = vec!["restore", "db", id, "--into", url.as_str()];
        args.extend_from_slice(extra);
        self.lifeboat(&args)
    }

    pub fn new_database(&self, name: &str) {
        self.cluster.create_database(name).unwrap();
    }

    /// Fingerprints of every sample table, the large objects, a sequence and the
    /// materialized view.
    pub fn fingerprints(&self, db: &str) -> Vec<String> {
        let mut sqls: Vec<String> = SAMPLE_TABLES.iter().map(|t| fingerprint_sql(t)).collect();
        sqls.push(fingerprint_sql("core.comic_stats"));
        sqls.push(LARGE_OBJECTS_SQL.into());
        sqls.push("SELECT last_value || ',' || is_called FROM core.chapter_no".into());
        sqls.push("SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum".into());
        sqls.iter().map(|sql| self.sql(db, sql)).collect()
    }

    /// Fingerprint of one table's contents.
    pub fn fingerprint(&self, db: &str, table: &str) -> String {
        self.sql(db, &fingerprint_sql(table))
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.cluster
            .psql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .trim()
            .to_string()
    }

    /// Number of user tables in a database.
    pub fn table_count(&self, db: &str) -> u64 {
        self.sql(
            db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
        )
        .parse()
        .unwrap()
    }

    /// Files of the repository's stored data (local or bucket), leaving out the marker.
    pub fn stored_files(&self) -> Vec<String> {
        match &self.s3 {
            Some(s3) => s3.keys(BUCKET),
            None => lifeboat_testkit::files_under(&self.dir.path().join("repo")),
        }
        .into_iter()
        .filter(|k| !k.ends_with("lifeboat.json"))
        .collect()
    }

    pub fn repo_path(&self, key: &str) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.root().join(BUCKET).join("lifeboat").join(key),
            None => self.dir.path().join("repo").join(key),
        }
    }
}

pub fn run_of(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends SIGTERM to a running lifeboat and waits for it to end.
pub fn terminate(child: std::process::Child) -> Run {
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    run_of(child.wait_with_output().unwrap())
}

/// The options of a restore pipelined on two sessions (`--create --spool`), spooling in
/// `spool`.
pub fn pipelined(spool: &std::path::Path) -> [&str; 6] {
    [
        "--create",
        "--jobs",
        "2",
        "--spool",
        "--spool-dir",
        spool.to_str().unwrap(),
    ]
}

/// Polls `check` until it holds, for at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session holding an exclusive lock on a table until dropped, so that a backup blocks.
pub struct TableLock<'a>(std::process::Child, &'a Env);

impl<'a> TableLock<'a> {
    pub fn hold(env: &'a Env, table: &str) -> TableLock<'a> {
        let child = Command::new(tools().path("psql"))
            .args([
                "-X",
                "-q",
                "-c",
                &format!(
                    "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300);"
                ),
            ])
            .env("PGHOST", env.cluster.socket_dir())
            .env("PGPORT", env.cluster.port().to_string())
            .env("PGUSER", lifeboat_core::postgres::cluster::SUPERUSER)
            .env("PGDATABASE", "yomira")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(20), "the table lock", || {
            env.sql("yomira", "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation IS NOT NULL") != "0"
        });
        TableLock(child, env)
    }
}

impl Drop for TableLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // A backend sleeping in pg_sleep does not notice its client is gone: end it.
        let _ = self.1.cluster.psql(
            "yomira",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()",
        );
    }
}

impl Env {
    /// Ends backends left waiting on a lock by a backup that was killed.
    pub fn end_waiting_backends(&self) {
        self.sql(
            "yomira",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        );
    }
}

/// Waits until lifeboat's pg_dump is blocked on a lock.
pub fn wait_for_blocked_dump(env: &Env) {
    let start = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "pg_dump to block on the lock",
        || {
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("{}", env.sql("yomira", "SELECT string_agg(pid || ' ' || coalesce(application_name,'') || ' ' || coalesce(wait_event_type,'') || ' ' || state || ' ' || left(query, 60), E'\\n') FROM pg_stat_activity"));
            }
            env.sql(
            "yomira",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat' AND wait_event_type = 'Lock'",
        ) != "0"
        },
    );
}

/// The system identifier of the synthetic cluster whose segments [`fake_segment`] makes.
pub const FAKE_SYSTEM_ID: u64 = 7_300_000_000_000_000_001;

/// A 16 MiB WAL segment as PostgreSQL 15 writes it: a long page header saying which segment it
/// is (page address, timeline) and which cluster wrote it (`system_id`), then bytes that vary
/// with `seed`.
pub fn fake_segment(name: &str, system_id: u64, seed: u8) -> Vec<u8> {
    const SIZE: usize = 16 << 20;
    let timeline = u32::from_str_radix(&name[..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let number = log * 0x100 + seg;
    // Incompressible, as busy WAL mostly is, so that writing it takes as long as it does.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let mut data: Vec<u8> = Vec::with_capacity(SIZE);
    while data.len() < SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    let mut header = Vec::with_capacity(40);
    header.extend_from_slice(&0xD110u16.to_le_bytes()); // magic, PostgreSQL 15
    header.extend_from_slice(&0x0002u16.to_le_bytes()); // XLP_LONG_HEADER
    header.extend_from_slice(&timeline.to_le_bytes());
    header.extend_from_slice(&(number * SIZE as u64).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // remaining length
    header.extend_from_slice(&0u32.to_le_bytes()); // padding
    header.extend_from_slice(&system_id.to_le_bytes());
    header.extend_from_slice(&(SIZE as u32).to_le_bytes());
    header.extend_from_slice(&8192u32.to_le_bytes());
    data[..header.len()].copy_from_slice(&header);
    data
}

impl Env {
    /// Where the repository stores archived WAL file `name`.
    pub fn archived_file(&self, name: &str) -> PathBuf {
        let key = self
            .stored_files()
            .into_iter()
            .find(|k| k.contains(&format!("wal/{name}.")))
            .unwrap_or_else(|| panic!("`{name}` is archived"));
        self.repo_path(key.strip_prefix("lifeboat/").unwrap_or(&key))
    }

    /// Starts `lifeboat run JOB` while a table lock holds its backup, and waits until it holds
    /// the run lock; the run goes on when the returned table lock is dropped.
    /// `backup db` started while a lock (held by the caller) blocks its pg_dump; returns once
    /// pg_dump waits.
    /// `public.slow`: `rows` rows, each taking `sleep` seconds to load into a database whose
    /// `lifeboat.slow` setting is `on` (its CHECK calls a function that sleeps then), so that
    /// a restore is caught mid-load.
    pub fn add_slow_table(&self, rows: u32, sleep: f64) {
        self.sql(
            "yomira",
            &format!(
                "CREATE FUNCTION public.slowly(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ \
                 BEGIN IF current_setting('lifeboat.slow', true) = 'on' THEN PERFORM pg_sleep({sleep}); END IF; \
                 RETURN true; END $$; \
                 CREATE TABLE public.slow (id int CHECK (public.slowly(id))); \
                 INSERT INTO public.slow SELECT generate_series(1, {rows})"
            ),
        );
    }

    pub fn blocked_backup(&self) -> std::process::Child {
        let child = self.start(&["backup", "db"]);
        wait_for_blocked_dump(self);
        child
    }

    pub fn blocked_run(&self, job: &str) -> (std::process::Child, TableLock<'_>) {
        let lock = TableLock::hold(self, "core.comic");
        let run = self.start(&["run", job]);
        let lock_path = self.repo_path("locks/run.json");
        wait_until(Duration::from_secs(30), "the run lock", || {
            lock_path.exists()
        });
        // Held, not only written: the run is past its lock and into its dump.
        wait_for_blocked_dump(self);
        (run, lock)
    }
}

impl Env {
    /// Puts a fault-injecting proxy between lifeboat and the S3 server (the repository's
    /// endpoint becomes the proxy's), with short timeouts; the proxy passes everything on
    /// until told otherwise.
    pub fn behind_proxy(
        &mut self,
        io_secs: u64,
        request_secs: u64,
    ) -> lifeboat_testkit::FaultProxy {
        let s3 = self.s3.as_ref().expect("an S3 repository");
        let proxy = lifeboat_testkit::FaultProxy::start(&s3.endpoint);
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(
            &format!("endpoint = \"{}\"", s3.endpoint),
            &format!("endpoint = \"{}\"", proxy.endpoint),
        );
        self.write_config(&format!(
            "{text}[repository.timeouts]\nconnect_secs = 2\nio_secs = {io_secs}\nrequest_secs = {request_secs}\n"
        ));
        proxy
    }

    /// After a backup that must not have committed (`what`): `kept` is still the only backup
    /// listed, and the repository holds exactly `files_before`.
    pub fn assert_only_backup(&self, kept: &str, files_before: &[String], what: &str) {
        let list = self.lifeboat(&["list", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(listed.len(), 1, "{what} was listed: {listed:?}");
        assert_eq!(listed[0]["id"], kept);
        assert_eq!(self.stored_files(), files_before, "{what} left objects");
    }

    /// Writes `data` as WAL file `name` in a `pg_wal` folder of its own under `tag`; its path.
    pub fn wal_file(&self, tag: &str, name: &str, data: &[u8]) -> String {
        let dir = self.dir.path().join(tag).join("pg_wal");
        std::fs::create_dir_all(dir.join("archive_status")).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path.display().to_string()
    }

    /// `wal-fetch NAME` into a file of the test's folder: the run and what it wrote.
    pub fn fetch_wal(&self, name: &str) -> (Run, Option<Vec<u8>>) {
        let dest = self.dir.path().join(format!("fetched-{name}"));
        let _ = std::fs::remove_file(&dest);
        let out = self.lifeboat(&["wal-fetch", name, dest.to_str().unwrap()]);
        let data = std::fs::read(&dest).ok();
        (out, data)
    }
}
