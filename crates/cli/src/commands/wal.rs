//! PostgreSQL's `archive_command` (`wal-push`) and `restore_command` (`wal-fetch`), and the
//! background work they start: pushing ready segments ahead, prefetching the next ones.

use std::path::Path;

use lifeboat_core::automation::notify;
use lifeboat_core::repository::Repository;
use lifeboat_core::{wal, Context, Result};

use crate::cli::Cli;

/// Which archive a fetch reads: `--db` and `--generation` as given.
pub struct Archive {
    db: Option<String>,
    generation: Option<u32>,
}

impl Archive {
    pub fn new(db: Option<&str>, generation: Option<u32>) -> Self {
        Archive {
            db: db.map(String::from),
            generation,
        }
    }

    async fn open<'r>(&self, ctx: &Context, repo: &'r Repository) -> Result<wal::WalArchive<'r>> {
        let name = wal::cluster::which(ctx, self.db.as_deref())?;
        let sole = wal::cluster::sole(ctx, &name);
        wal::cluster::archive(repo, &name, sole, self.generation).await
    }

    /// The options that name it again, for a command started in the background.
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        if let Some(db) = &self.db {
            out.extend(["--db".into(), db.into()]);
        }
        if let Some(generation) = self.generation {
            out.extend(["--generation".into(), generation.to_string().into()]);
        }
        out
    }
}

pub async fn push(ctx: &Context, args: &Cli, db: Option<&str>, path: &Path) -> Result<()> {
    // Measured before the repository is opened: the storage may be what is down.
    let queue = wal::queue::Queue::of(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(max) = queue.over(name, ctx.config.wal.queue_max_mib) {
        let dropped = wal::queue::drop_segment(ctx, name, queue, max).await?;
        let message = dropped.describe();
        let notice = notify::alert(&ctx.config.notify, &message);
        if tokio::time::timeout(std::time::Duration::from_secs(10), notice)
            .await
            .is_err()
        {
            tracing::warn!("the notification of the dropped segment did not go out in time");
        }
        return Ok(());
    }
    if queue.segments > 1 {
        tracing::info!(
            segments = queue.segments,
            bytes = queue.bytes,
            "WAL waiting to be archived"
        );
    }
    let cluster = wal::cluster::which(ctx, db)?;
    let repo = Repository::open(ctx).await?;
    let pushed = wal::push_wal(ctx, &repo, &cluster, path).await?;
    // Gaps journalled while the storage was down go into the repository now that it answers.
    if let Err(e) = wal::queue::flush(ctx, &repo).await {
        tracing::warn!("could not record the journalled gaps in the repository yet: {e}");
    }
    if pushed.ahead {
        start_background(
            args,
            &[
                "wal-push-ahead".into(),
                "--db".into(),
                cluster.into(),
                path.into(),
            ],
        );
    }
    Ok(())
}

/// `wal-stream`: checks the server, then streams until stopped.
pub async fn stream(ctx: &Context, db: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let cluster = wal::cluster::which(ctx, db)?;
    let measure = std::time::Duration::from_secs(if dry_run { 3 } else { 0 });
    let check =
        lifeboat_core::postgres::stream::preflight::preflight(ctx, &cluster, measure).await?;
    for warning in &check.warnings {
        tracing::warn!("{warning}");
    }
    if dry_run {
        return crate::output::print_json_or(json, &check, || {
            let f = &check.forecast;
            format!(
                "{}: slot `{}` {}; {} ({}); WAL written {:.1} KiB/s: about {} requests a month at a piece every {} ms (R2 Class A: ${:.2} a month)",
                check.cluster,
                check.slot,
                check.slot_status.as_deref().map_or("to be created".to_string(), |s| format!("{s}, keeping {} KiB", check.slot_retained_bytes.unwrap_or(0) / 1024)),
                if check.sync { "synchronous" } else { "asynchronous" },
                if check.synchronous { "named in synchronous_standby_names" } else { "commits do not wait for it" },
                f.write_rate_bytes_per_s / 1024.0,
                f.requests_per_month,
                f.flush_ms,
                f.usd_per_month
            )
        });
    }
    // The storage is not stopped by the signal: what was received is stored on the way out.
    let storing = ctx.with_cancel(lifeboat_core::CancellationToken::new());
    let repo = Repository::open(&storing).await?;
    lifeboat_core::postgres::stream::Streamer::new(ctx, &repo, &cluster)?
        .run()
        .await
}

pub async fn push_ahead(ctx: &Context, db: Option<&str>, path: &Path) -> Result<()> {
    let cluster = wal::cluster::which(ctx, db)?;
    let repo = Repository::open(ctx).await?;
    wal::push_ready(ctx, &repo, &cluster, path).await
}

pub async fn fetch(
    ctx: &Context,
    args: &Cli,
    from: &Archive,
    name: &str,
    dest: &Path,
) -> Result<()> {
    let from_primary = async {
        let repo = Repository::open(ctx).await?;
        let archive = from.open(ctx, &repo).await?;
        wal::fetch_wal(ctx, &archive, name, dest).await
    };
    let fetched = match from_primary.await {
        Ok(fetched) => fetched,
        // The repository failed (not: lacks the file): a copy may have it.
        Err(e) if args.from.is_none() && !ctx.cancel.is_cancelled() => {
            from_a_copy(ctx, from, name, dest, &e).await.ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    if !fetched.found {
        tracing::debug!(wal = %name, "not in the archive");
        std::process::exit(1);
    }
    if !fetched.ahead.is_empty() {
        let mut command = vec![std::ffi::OsString::from("wal-prefetch")];
        command.extend(from.args());
        command.extend(fetched.ahead.iter().map(Into::into));
        start_background(args, &command);
    }
    Ok(())
}

/// `name` from the first copy that has it, after the repository failed with `failure`.
async fn from_a_copy(
    ctx: &Context,
    from: &Archive,
    name: &str,
    dest: &Path,
    failure: &lifeboat_core::Error,
) -> Option<wal::Fetched> {
    for copy in ctx.config.repository.copies.keys() {
        let Ok(config) = ctx.config.for_copy(copy) else {
            continue;
        };
        let copy_ctx = ctx.with_config(config);
        let fetched = async {
            let repo = Repository::open(&copy_ctx).await?;
            let archive = from.open(&copy_ctx, &repo).await?;
            wal::fetch_wal(&copy_ctx, &archive, name, dest).await
        };
        match fetched.await {
            Ok(fetched) if fetched.found => {
                tracing::warn!(
                    "fetched `{name}` from copy `{copy}`: the repository failed: {failure}"
                );
                // The prefetch reads the repository, which just failed: none.
                return Some(wal::Fetched {
                    ahead: Vec::new(),
                    ..fetched
                });
            }
            Ok(_) => tracing::warn!("copy `{copy}` does not have `{name}` either"),
            Err(e) => tracing::warn!("copy `{copy}` failed too: {e}"),
        }
    }
    None
}

pub async fn prefetch(ctx: &Context, from: &Archive, names: &[String]) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let archive = from.open(ctx, &repo).await?;
    wal::prefetch(ctx, &archive, names).await
}

/// `upgrade --db NAME`: the cluster's new generation after `pg_upgrade`.
pub async fn upgrade(
    ctx: &Context,
    db: Option<&str>,
    backup: bool,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let (name, pg) = ctx.config.database(db)?;
    let repo = Repository::open(ctx).await?;
    let report = if dry_run {
        lifeboat_core::upgrade(ctx, &repo, name, pg, false, true).await?
    } else {
        lifeboat_core::repository::lock::with_run_lock(ctx, &repo, "upgrade", async |ctx| {
            lifeboat_core::upgrade(ctx, &repo, name, pg, backup, false).await
        })
        .await?
    };
    crate::output::print_json_or(json, &report, || {
        let mut text = format!(
            "{}: {}{}",
            report.cluster,
            report.generation.describe(),
            if report.dry_run {
                " (dry run: nothing recorded)"
            } else if report.recorded {
                " recorded"
            } else {
                " (recorded already)"
            }
        );
        match (&report.base_backup, &report.existing_base_backup) {
            (Some(id), _) => text.push_str(&format!("; first base backup {id}")),
            (None, Some(id)) => text.push_str(&format!("; base backup {id}")),
            (None, None) if !report.dry_run => text.push_str(
                "; no base backup of it yet: take one with `lifeboat backup base` before relying on PITR",
            ),
            _ => {}
        }
        text
    })
}

/// Starts `lifeboat COMMAND...` (a `wal-prefetch` or `wal-push-ahead`) in the background,
/// detached from PostgreSQL's `restore_command` or `archive_command`, which returns at once;
/// one that cannot start only costs speed.
fn start_background(args: &Cli, command: &[std::ffi::OsString]) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    if let Some(copy) = &args.from {
        cmd.arg("--from").arg(copy);
    }
    cmd.arg("-q")
        .args(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Err(e) = cmd.spawn() {
        tracing::debug!(error = %e, "background work not started");
    }
}

/// `mark NAME`: a restore point on the server, recorded in the repository.
pub async fn mark(ctx: &Context, name: &str, db: Option<&str>, json: bool) -> Result<()> {
    let (database, pg) = ctx.config.database(db)?;
    let repo = Repository::open(ctx).await?;
    wal::marks::check_new(&repo, name).await?;
    let lsn = lifeboat_core::postgres::archiver::restore_point(pg, name).await?;
    let mark = wal::marks::record(&repo, database, name, lsn).await?;
    tracing::info!(
        "restore point `{}` at {} on `{database}`: `restore pitr --target-name {}` recovers to it once its WAL is archived",
        mark.name,
        mark.lsn,
        mark.name
    );
    crate::output::print_json_or(json, &mark, || mark.lsn.clone())
}
