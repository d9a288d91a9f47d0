//! Point-in-time recovery: a base backup unpacked into an empty folder, then WAL replayed from
//! the archive (by `lifeboat wal-fetch` as `restore_command`) up to the target.
//!
//! A recovery practises unless it is told that it is the new primary (`as_primary`): its
//! server has archiving off, so that promoting it forks a timeline in its own `pg_wal` only,
//! never in the archive, where it would change what a later recovery finds.
//!
//! The base backup chosen is the newest that finished before the target; a target outside what
//! the repository can recover (before the oldest base backup, after the newest archived WAL) is
//! refused with the window in the message. With `start`, the server is started, recovery is
//! awaited, and the moment reached and the time it took are reported.
//!
//! Stages: [`plan`] chooses the base backup and checks the archive can carry recovery to the
//! target; [`folder`] unpacks it and writes the recovery settings; [`server`] starts the
//! server and waits for it to reach the target; [`throwaway`] does all of it in a temporary
//! folder that goes when dropped.

mod folder;
mod plan;
mod server;
pub mod throwaway;

use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::ConfigSource;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::wal;
use crate::Context;

pub use plan::{choose_base, plan, Plan, Window};

#[derive(Debug, Clone)]
pub enum Target {
    Time(Timestamp),
    Lsn(u64),
    Latest,
    /// The base backup's consistent end: the fastest recovery (`recovery_target = 'immediate'`).
    Immediate,
    /// A restore point recorded by `lifeboat mark` (its name, and its position).
    Name(String, u64),
    /// Just before transaction `xid` commits (`recovery_target_xid` with
    /// `recovery_target_inclusive = off`), its commit record at the position given
    /// ([`crate::postgres::find::find_xid`]).
    BeforeXid(u32, u64),
}

/// The timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// The newest timeline that branched off the base backup's after it started.
    Latest,
    /// The base backup's own.
    Current,
    /// This one, which must branch off the base backup's timeline after the backup started.
    Id(u32),
}

impl std::fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Id(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Promote,
    Pause,
}

#[derive(Debug, Clone)]
pub struct PitrRequest {
    pub pgdata: PathBuf,
    pub target: Target,
    pub timeline: TargetTimeline,
    pub action: TargetAction,
    pub start: bool,
    /// Port and socket folder for the started server (else the backup's settings).
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    /// The recovered server becomes the new primary: it keeps the backup's archiving, so its
    /// new timeline goes into the repository. Otherwise archiving is off.
    pub as_primary: bool,
    pub identity: Option<PathBuf>,
    /// Recover from this base backup (by id) instead of the newest before the target.
    pub base: Option<String>,
    /// The cluster to recover (`--db`), when the repository holds several.
    pub db: Option<String>,
    /// The started server is a throwaway (verification, drill): it dies with lifeboat.
    pub throwaway: bool,
    /// How a base backup in an archive class is read back.
    pub thaw: crate::storage::s3::tiers::Thaw,
}

#[derive(Debug, Serialize)]
pub struct PitrReport {
    pub base_backup: String,
    pub pgdata: String,
    pub target: String,
    pub started: bool,
    /// The last transaction replayed, when the server was started.
    pub reached: Option<String>,
    pub timeline: Option<u32>,
    pub restore_seconds: f64,
    pub recovery_seconds: Option<f64>,
    /// Where replay ended (the end of the last WAL record), when the server was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_to: Option<String>,
    /// The timeline recovery followed (`recovery_target_timeline`).
    pub timeline_followed: u32,
    /// Why that is not the highest-numbered timeline the base backup leads to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork: Option<String>,
    /// Whether the recovered server archives into the repository (`as_primary`).
    pub archives: bool,
}

pub async fn restore_pitr(
    ctx: &Context,
    repo: &Repository,
    request: &PitrRequest,
) -> Result<PitrReport> {
    let begun = Instant::now();
    let config_file = match &ctx.config.source {
        ConfigSource::File(path) => std::path::absolute(path)
            .map_err(|e| Error::io(format!("finding `{}`", path.display()), e))?,
        ConfigSource::Default => {
            return Err(Error::Usage(
                "point-in-time recovery needs a configuration file: the recovered server runs `lifeboat --config FILE wal-fetch`; pass `--config FILE`"
                    .into(),
            ))
        }
    };
    folder::check_empty(&request.pgdata)?;
    let plan = plan(ctx, repo, request).await?;
    let base = &plan.base;
    // A data folder is read only by the server programs of its own major version: its
    // cluster's own (`[postgres.NAME] pg_bin_dir`) when they are, else the folder named, else
    // that version's among the installed ones (after a major upgrade, the old generation's).
    let server_major = crate::process::tools::major(&base.server_version);
    let own = ctx
        .config
        .postgres
        .get(&plan.cluster)
        .map(|pg| ctx.for_server(pg).tools)
        .filter(|tools| tools.is_major("postgres", server_major));
    let ctx = &ctx.with_tools(own.unwrap_or_else(|| ctx.tools.for_major(server_major)));
    ctx.tools.require(
        "postgres",
        server_major,
        true,
        &format!(
            "base backup `{}` (of a PostgreSQL {} server)",
            base.id, base.server_version
        ),
    )?;
    for link in &plan.chain {
        crate::storage::s3::tiers::ensure_readable(
            repo.storage(),
            &link.id,
            &link.objects(),
            &request.thaw,
            &ctx.cancel,
        )
        .await?;
    }
    if plan.chain.len() > 1 {
        let ids: Vec<&str> = plan.chain.iter().map(|m| m.id.as_str()).collect();
        tracing::info!(base = %base.id, target = %describe(&request.target), "restoring an incremental base backup and its chain: {}", ids.join(" → "));
    } else {
        tracing::info!(base = %base.id, target = %describe(&request.target), "restoring a base backup");
    }
    if let Some(fork) = &plan.fork {
        tracing::warn!("{fork}");
    }
    folder::unpack(ctx, repo, &plan.chain, request).await?;
    folder::write_recovery_settings(request, &plan, &config_file)?;
    let owner = crate::postgres::cluster::unprivileged_user();
    folder::prepare_permissions(&request.pgdata, owner)?;
    let mut report = PitrReport {
        base_backup: base.id.clone(),
        pgdata: request.pgdata.display().to_string(),
        target: describe(&request.target),
        started: false,
        reached: None,
        timeline: None,
        restore_seconds: round(begun.elapsed().as_secs_f64()),
        recovery_seconds: None,
        replayed_to: None,
        timeline_followed: plan.timeline,
        fork: plan.fork.clone(),
        archives: request.as_primary,
    };
    if request.start {
        let recovering = Instant::now();
        let archive = wal::WalArchive::new(repo, &plan.cluster, &plan.generation);
        let recovered = server::start_and_wait(ctx, &archive, request, base, owner).await?;
        if let (Target::Latest, Some(end)) = (&request.target, &plan.archive_end) {
            server::check_reached_end(ctx, request, owner, &recovered, end)?;
        }
        report.started = true;
        report.reached = recovered.last_commit;
        report.timeline = recovered.timeline;
        report.replayed_to = recovered.replayed_to.map(wal::format_lsn);
        report.recovery_seconds = Some(round(recovering.elapsed().as_secs_f64()));
    }
    Ok(report)
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn describe(target: &Target) -> String {
    match target {
        Target::Time(t) => t.to_string(),
        Target::Lsn(lsn) => wal::format_lsn(*lsn),
        Target::Latest => "latest".into(),
        Target::Immediate => "immediate (the base backup's end)".into(),
        Target::Name(name, _) => format!("restore point `{name}`"),
        Target::BeforeXid(xid, lsn) => format!(
            "just before transaction {xid} (its commit at {})",
            wal::format_lsn(*lsn)
        ),
    }
}
