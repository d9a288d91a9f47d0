//! The disaster-recovery drill: everything on throwaway parts, timed step by step.
//!
//! A scratch cluster (archiving its WAL through `lifeboat wal-push`) gets the sample database;
//! it is backed up into a scratch repository, restored into a fresh database, every table's
//! contents compared with the original, and the backup verified. Then the point-in-time part:
//! a base backup, two commits a moment apart, and a recovery to the moment between them into
//! a new data folder, started and checked to hold the first commit only; and the row a wrong
//! `DELETE` removed, put back beside the live table by `restore table`.
//!
//! The drill touches nothing it did not make, whoever runs it: its repository, WAL archive,
//! configuration and spool are in the scratch folder (handed to the scratch server's user when
//! lifeboat runs as root), and go with it. The configured repository is never opened; only the
//! configured tools (`[tools] pg_bin_dir`) are used.

use std::time::Instant;

use serde::Serialize;

use std::path::{Path, PathBuf};

use crate::config::{PgUrl, PostgresConfig};
use crate::error::{Error, Result};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster};
use crate::postgres::dump::{backup_db, DumpRequest};
use crate::postgres::restore::{restore_db, RestoreRequest};
use crate::postgres::sample::{fingerprint_sql, LARGE_OBJECTS_SQL, SAMPLE_SQL, SAMPLE_TABLES};
use crate::repository::Repository;
use crate::units::{human_bytes, human_duration};
use crate::Context;

#[derive(Debug, Serialize)]
pub struct DrillReport {
    /// The scratch repository, removed with the scratch cluster.
    pub repository: String,
    pub backup: String,
    pub tables_compared: usize,
    pub rows_restored: u64,
    /// The measured recovery time of the logical backup (by `verify`).
    pub verified_recovery_seconds: Option<f64>,
    pub base_backup: String,
    pub pitr_target: String,
    pub pitr_seconds: f64,
    pub steps: Vec<DrillStep>,
}

#[derive(Debug, Serialize)]
pub struct DrillStep {
    pub step: String,
    pub seconds: f64,
    pub detail: String,
}

struct Timer(Vec<DrillStep>, Instant);

impl Timer {
    fn lap(&mut self, step: &str, detail: String) {
        let seconds = (self.1.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        // The table at the end has every step: logged only when asked for (`-v`).
        tracing::debug!("drill: {step} ({seconds:.2}s) {detail}");
        self.0.push(DrillStep {
            step: step.into(),
            seconds,
            detail,
        });
        self.1 = Instant::now();
    }
}

pub async fn run_drill(ctx: &Context) -> Result<DrillReport> {
    let mut timer = Timer(Vec::new(), Instant::now());
    let tools = ctx.tools.clone();
    let options = ClusterOptions {
        settings: vec![
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            "archive_command = 'false'".into(),
        ],
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || ScratchCluster::start(&tools, &options))
        .await
        .map_err(|e| Error::thread("drill", e))??;
    timer.lap(
        "start a scratch cluster",
        format!("PostgreSQL {}", ctx.tools.version("postgres")?),
    );

    cluster.create_database("yomira")?;
    cluster.psql("yomira", SAMPLE_SQL)?;
    timer.lap(
        "load the sample database",
        format!("{} tables", SAMPLE_TABLES.len()),
    );

    let scratch = ScratchRepository::create(ctx, cluster.root()).await?;
    let repo = &scratch.repo;
    timer.lap(
        "create a scratch repository",
        format!("{}, removed with the scratch cluster", repo.location()),
    );
    let mut drill_ctx = crate::Context::new(scratch.config.clone());
    drill_ctx.tools = ctx.tools.clone();
    drill_ctx.progress = ctx.progress.clone();
    drill_ctx.cancel = ctx.cancel.clone();
    let ctx = &drill_ctx;

    let source = PostgresConfig {
        url: PgUrl::parse(&cluster.url("yomira")).map_err(Error::Internal)?,
        password: None,
        password_file: None,
        critical_tables: vec!["core.comic".into()],
        checks: vec!["SELECT NOT dirty FROM public.schema_migrations".into()],
        pitr: false,
        pg_bin_dir: None,
    };
    let manifest = backup_db(ctx, repo, "drill", &source, &DumpRequest::default()).await?;
    timer.lap(
        "logical backup",
        format!(
            "{} ({} raw, {} stored)",
            manifest.id,
            human_bytes(manifest.raw_size),
            human_bytes(manifest.stored_size)
        ),
    );

    cluster.create_database("yomira_restored")?;
    let report = restore_db(
        ctx,
        repo,
        &RestoreRequest {
            backup: manifest.id.clone(),
            into: cluster.url("yomira_restored"),
            jobs: 1,
            ..RestoreRequest::default()
        },
    )
    .await?;
    timer.lap(
        "restore and check row counts",
        format!(
            "{} tables, {} rows",
            report.tables_checked, report.rows_checked
        ),
    );

    let mut checks: Vec<String> = SAMPLE_TABLES.iter().map(|t| fingerprint_sql(t)).collect();
    checks.push(LARGE_OBJECTS_SQL.to_string());
    checks.push("SELECT last_value || '' FROM core.chapter_no".into());
    for sql in &checks {
        let before = cluster.psql("yomira", sql)?;
        let after = cluster.psql("yomira_restored", sql)?;
        if before != after {
            return Err(Error::Mismatch {
                id: manifest.id.clone(),
                detail: format!(
                    "`{sql}` gives `{}` before and `{}` after",
                    before.trim(),
                    after.trim()
                ),
            });
        }
    }
    timer.lap(
        "compare contents",
        format!("{} checks identical", checks.len()),
    );

    // Verify on its own throwaway cluster, as `lifeboat verify` does.
    let mut verify_ctx = ctx.with_cancel(ctx.cancel.clone());
    verify_ctx
        .config
        .postgres
        .insert("drill".into(), source.clone());
    let verification = crate::verify::verify_backup(
        &verify_ctx,
        repo,
        &crate::verify::VerifyRequest {
            backup: manifest.id.clone(),
            jobs: 2,
            ..Default::default()
        },
    )
    .await?;
    if !verification.passed {
        let failed = verification.failures();
        return Err(Error::Mismatch {
            id: manifest.id.clone(),
            detail: format!(
                "verification failed: {}: {}",
                failed[0].name, failed[0].detail
            ),
        });
    }
    timer.lap(
        "verify (restore on a throwaway cluster)",
        format!(
            "{} checks passed, recovery time {}",
            verification.checks.len(),
            human_duration(verification.recovery_seconds.unwrap_or_default())
        ),
    );

    let pitr = pitr_part(ctx, &cluster, &scratch, &source, &mut timer).await?;
    Ok(DrillReport {
        repository: repo.location().to_string(),
        backup: manifest.id,
        tables_compared: SAMPLE_TABLES.len(),
        rows_restored: report.rows_checked,
        verified_recovery_seconds: verification.recovery_seconds,
        base_backup: pitr.base_backup,
        pitr_target: pitr.target,
        pitr_seconds: pitr.seconds,
        steps: timer.0,
    })
}

struct PitrOutcome {
    base_backup: String,
    target: String,
    seconds: f64,
}

/// The drill's own repository and the configuration that names it, in the scratch folder.
struct ScratchRepository {
    repo: Repository,
    config: crate::config::Config,
    /// The configuration file the scratch server's `archive_command` and the recovered
    /// server's `restore_command` name.
    file: PathBuf,
}

impl ScratchRepository {
    async fn create(ctx: &Context, scratch: &Path) -> Result<ScratchRepository> {
        let file = scratch.join("drill.toml");
        let quoted = |path: &str| toml::Value::String(path.to_string()).to_string();
        let mut text = format!(
            "[repository]\nurl = {}\n[wal]\nspool_dir = {}\n",
            quoted(&scratch.join("repo").display().to_string()),
            quoted(&scratch.join("wal-spool").display().to_string()),
        );
        if let Some(dir) = &ctx.config.tools.pg_bin_dir {
            text.push_str(&format!("[tools]\npg_bin_dir = {}\n", quoted(dir)));
        }
        std::fs::write(&file, &text).map_err(|e| Error::io("writing the drill's config", e))?;
        // Parsed back, so that the servers' commands name this very file.
        let config = crate::config::Config::parse(&text, &file)?;
        let storage = crate::storage::Storage::open(&config.repository, true, &ctx.storage_env())?;
        let repo = Repository::init_on(storage).await?;
        if let Some((uid, gid)) = crate::postgres::cluster::unprivileged_user() {
            hand_over(&scratch.join("repo"), uid, gid)?;
            hand_over(&file, uid, gid)?;
        }
        Ok(ScratchRepository { repo, config, file })
    }
}

/// Base backup, two commits a moment apart, recovery to the moment between them.
async fn pitr_part(
    ctx: &Context,
    cluster: &ScratchCluster,
    scratch_repo: &ScratchRepository,
    source: &PostgresConfig,
    timer: &mut Timer,
) -> Result<PitrOutcome> {
    let repo = &scratch_repo.repo;
    archive_through_wal_push(cluster, &scratch_repo.file)?;
    // The recovered server is reached as the role that took the backup.
    let mut pitr_ctx = ctx.with_cancel(ctx.cancel.clone());
    pitr_ctx
        .config
        .postgres
        .insert("drill".into(), source.clone());
    let base = crate::postgres::base::backup_base(&pitr_ctx, repo, "drill", source, false).await?;
    timer.lap(
        "base backup (WAL archived by wal-push)",
        format!(
            "{} ({} stored) into {}",
            base.id,
            human_bytes(base.stored_size),
            repo.location()
        ),
    );
    let (target, last) = two_commits_a_moment_apart(cluster, repo).await?;
    timer.lap(
        "two commits, a moment apart",
        format!("target between them: {target}; WAL archived up to {last}"),
    );
    let at: jiff::Timestamp = target
        .parse()
        .map_err(|e| Error::Internal(format!("drill target `{target}`: {e}")))?;
    let seconds = recover_to(&pitr_ctx, repo, cluster, at, &base.id).await?;
    timer.lap(
        "point-in-time recovery, started and checked",
        format!(
            "recovered to {target}: the first commit and not the second, in {}",
            human_duration(seconds)
        ),
    );
    let detail = deleted_row_beside(&pitr_ctx, repo, cluster, at, &base.id).await?;
    timer.lap(
        "one table as it was, beside the live one (restore table)",
        detail,
    );
    Ok(PitrOutcome {
        base_backup: base.id,
        target,
        seconds: (seconds * 10.0).round() / 10.0,
    })
}

/// Has the scratch server archive its WAL through `lifeboat wal-push`, into the drill's
/// repository (`config_file`).
fn archive_through_wal_push(cluster: &ScratchCluster, config_file: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the lifeboat program", e))?;
    let command = format!(
        "'{}' --config '{}' -q wal-push --db drill %p",
        exe.display(),
        config_file.display()
    );
    cluster.psql(
        "yomira",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            command.replace('\'', "''")
        ),
    )?;
    cluster.psql("yomira", "SELECT pg_reload_conf()")?;
    Ok(())
}

/// Commits a first row, takes the moment, commits a second and a wrong `DELETE` of the
/// first, and waits for the WAL to be archived: the target between the commits, and the last
/// segment archived.
async fn two_commits_a_moment_apart(
    cluster: &ScratchCluster,
    repo: &Repository,
) -> Result<(String, String)> {
    cluster.psql("yomira", "CREATE TABLE public.drill_events (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")?;
    cluster.psql("yomira", "INSERT INTO public.drill_events (id) VALUES (1)")?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let target = cluster
        .psql("yomira", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")?
        .trim()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The second commit, and a wrong DELETE of the first row.
    cluster.psql(
        "yomira",
        "INSERT INTO public.drill_events (id) VALUES (2); DELETE FROM public.drill_events WHERE id = 1",
    )?;
    let last = cluster
        .psql("yomira", "SELECT pg_walfile_name(pg_switch_wal())")?
        .trim()
        .to_string();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let archive = crate::wal::cluster::archive(repo, "drill", true, None).await?;
    while !crate::wal::archived_names(&archive).await?.contains(&last) {
        if Instant::now() > deadline {
            return Err(Error::TimedOut {
                what: format!("the scratch server archiving `{last}`"),
                seconds: 60,
                hint: String::new(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok((target, last))
}

/// Recovers the base backup to `target` on a server of its own, started, and checks that it
/// holds the first commit and not the second; the time the recovery took.
async fn recover_to(
    ctx: &Context,
    repo: &Repository,
    cluster: &ScratchCluster,
    target: jiff::Timestamp,
    base: &str,
) -> Result<f64> {
    let server_user = crate::postgres::cluster::unprivileged_user();
    let scratch = cluster.root();
    let into = scratch.join("recovered");
    let socket = scratch.join("recovered-sock");
    std::fs::create_dir(&socket).map_err(|e| Error::io("creating a socket folder", e))?;
    if let Some((uid, gid)) = server_user {
        hand_over(&socket, uid, gid)?;
    }
    let port = crate::postgres::cluster::free_port()?;
    let begun = Instant::now();
    let recovered = crate::postgres::pitr::restore_pitr(
        ctx,
        repo,
        &crate::postgres::pitr::PitrRequest {
            pgdata: into.clone(),
            target: crate::postgres::pitr::Target::Time(target),
            timeline: crate::postgres::pitr::TargetTimeline::Latest,
            action: crate::postgres::pitr::TargetAction::Promote,
            start: true,
            port: Some(port),
            socket_dir: Some(socket.clone()),
            as_primary: false,
            throwaway: true,
            identity: None,
            base: None,
            db: None,
            thaw: Default::default(),
        },
    )
    .await;
    let seconds = begun.elapsed().as_secs_f64();
    let stop = || {
        let mut cmd = std::process::Command::new(ctx.tools.path("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&into)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some((uid, gid)) = server_user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    };
    if let Err(e) = recovered {
        stop();
        return Err(e);
    }
    let rows = std::process::Command::new(ctx.tools.path("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.drill_events",
        ])
        .env("PGHOST", &socket)
        .env("PGPORT", port.to_string())
        .env("PGUSER", crate::postgres::cluster::SUPERUSER)
        .env("PGDATABASE", "yomira")
        .output();
    stop();
    let rows = rows.map_err(|e| Error::io("starting `psql`", e))?;
    let rows = String::from_utf8_lossy(&rows.stdout).trim().to_string();
    if rows != "1" {
        return Err(Error::Mismatch {
            id: base.to_string(),
            detail: format!(
                "recovery to {target} should hold the first commit only, it holds `{rows}`"
            ),
        });
    }
    Ok(seconds)
}

/// `restore table`: the deleted row, as it was at `target`, beside the live table; what the
/// drill says of it.
async fn deleted_row_beside(
    ctx: &Context,
    repo: &Repository,
    cluster: &ScratchCluster,
    target: jiff::Timestamp,
    base: &str,
) -> Result<String> {
    let table = crate::postgres::table::restore_table(
        ctx,
        repo,
        &crate::postgres::table::TableRequest {
            before_xid: None,
            tables: vec![crate::postgres::table::Qualified::new(
                "public",
                "drill_events",
            )],
            as_of: target,
            into: cluster.url("yomira"),
            into_password: None,
            database: Some("drill".into()),
            naming: crate::postgres::table::Naming::Beside,
            data_only: false,
            from_dump: false,
            identity: None,
            work_dir: Some(cluster.root().to_path_buf()),
        },
    )
    .await?;
    let copy = &table.tables[0];
    if copy.rows != 1 || copy.missing_now != Some(1) || copy.added_since != Some(1) {
        return Err(Error::Mismatch {
            id: base.to_string(),
            detail: format!(
                "the copy of public.drill_events as of {target} should hold the deleted row only: {} rows, {:?} missing now, {:?} added since",
                copy.rows, copy.missing_now, copy.added_since
            ),
        });
    }
    Ok(format!(
        "{} holds the deleted row; recovered in {}",
        copy.restored_as,
        human_duration(table.recovery_seconds)
    ))
}

/// Gives a path (recursively) to the scratch server's user.
fn hand_over(path: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("handing `{}` to the server's user", p.display()), e))?;
        if p.is_dir() {
            for entry in std::fs::read_dir(&p)
                .map_err(|e| Error::io(format!("reading `{}`", p.display()), e))?
                .flatten()
            {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}
