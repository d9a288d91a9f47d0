//! What a `restore table` uses, decided before anything starts (and all `--dry-run` shows):
//! the newest base backup before the moment and the archived WAL from its start to the
//! moment, or (`--from-dump`) the newest dump before it; how much is downloaded; and how
//! long it should take, scaled from the last measured recovery of the same kind.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

use super::TableRequest;
use crate::error::{Error, Result};
use crate::postgres::pitr::{self, PitrRequest, TargetAction, TargetTimeline};
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::verifications::list_verifications;
use crate::repository::Repository;
use crate::{wal, Context};

#[derive(Debug, Serialize)]
pub struct TablePlan {
    pub as_of: String,
    /// `wal` (base backup and archived WAL) or `dump`.
    pub from: &'static str,
    pub backup: String,
    pub backup_finished: String,
    /// The database the tables are read from, in the recovered cluster.
    pub dbname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,
    pub download_bytes: u64,
    /// How much older than the moment the dump's data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<i64>,
    pub estimated_seconds: Option<f64>,
    pub estimate_basis: Option<String>,
    pub tables: Vec<Planned>,
    #[serde(skip)]
    manifest: Manifest,
}

impl TablePlan {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// The archived WAL a recovery replays: from the base backup's first segment to the first
/// segment stored after the moment.
#[derive(Debug, Serialize)]
pub struct WalRange {
    pub first: String,
    pub last: String,
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Planned {
    pub table: String,
    pub restored_as: String,
}

pub async fn plan_table(
    ctx: &Context,
    repo: &Repository,
    request: &TableRequest,
) -> Result<TablePlan> {
    let manifests = repo.list().await?;
    let (manifest, wal) = if request.from_dump {
        (choose_dump(&manifests, request)?, None)
    } else {
        let plan = pitr::plan(
            ctx,
            repo,
            &PitrRequest {
                pgdata: PathBuf::new(),
                target: request.target(),
                timeline: TargetTimeline::Latest,
                action: TargetAction::Promote,
                start: true,
                port: None,
                socket_dir: None,
                as_primary: false,
                identity: None,
                base: None,
                db: request.database.clone(),
                throwaway: true,
                thaw: Default::default(),
            },
        )
        .await
        .map_err(|e| match e {
            Error::OutsideWindow {
                target,
                problem,
                window,
            } => Error::OutsideWindow {
                target,
                problem: format!(
                    "{problem}; `--from-dump` recovers from the newest dump before it instead"
                ),
                window,
            },
            other => other,
        })?;
        let range = wal_range(ctx, repo, &plan.base, request.as_of).await?;
        (plan.base, Some(range))
    };
    let dbname = request
        .database
        .as_ref()
        .and_then(|name| ctx.config.postgres.get(name))
        .and_then(|pg| pg.url.expose().parse::<tokio_postgres::Config>().ok())
        .and_then(|c| c.get_dbname().map(str::to_string))
        .unwrap_or_else(|| manifest.dbname.clone());
    let (estimated_seconds, estimate_basis) = match estimate(repo, &manifests, &manifest).await? {
        Some((seconds, basis)) => (Some(seconds), Some(basis)),
        None => (None, None),
    };
    let stamp = super::stamp(request.as_of);
    Ok(TablePlan {
        as_of: request.as_of.to_string(),
        from: if wal.is_some() { "wal" } else { "dump" },
        backup: manifest.id.clone(),
        backup_finished: manifest.finished_at.to_string(),
        dbname,
        download_bytes: manifest.stored_size + wal.as_ref().map_or(0, |w| w.bytes),
        wal,
        data_age_seconds: request
            .from_dump
            .then(|| (request.as_of.as_second() - manifest.started_at.as_second()).max(0)),
        estimated_seconds,
        estimate_basis,
        tables: request
            .tables
            .iter()
            .map(|t| Planned {
                table: t.to_string(),
                restored_as: request.naming.target(t, &stamp).to_string(),
            })
            .collect(),
        manifest,
    })
}

/// The newest dump whose snapshot was taken before the moment.
fn choose_dump(manifests: &[Manifest], request: &TableRequest) -> Result<Manifest> {
    let dumps: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == BackupKind::Db && !m.options.schema_only)
        .filter(|m| request.database.as_ref().is_none_or(|d| &m.database == d))
        .collect();
    let mut databases: Vec<&str> = dumps.iter().map(|m| m.database.as_str()).collect();
    databases.sort_unstable();
    databases.dedup();
    if databases.len() > 1 {
        return Err(Error::Usage(format!(
            "the repository has dumps of several databases (`{}`): choose one with `--database NAME`",
            databases.join("`, `")
        )));
    }
    dumps
        .into_iter()
        .filter(|m| m.started_at <= request.as_of)
        .max_by_key(|m| m.started_at)
        .cloned()
        .ok_or_else(|| {
            Error::Missing(format!(
                "no dump was taken before {}: `lifeboat list` shows the dumps and when they were taken",
                request.as_of
            ))
        })
}

/// The archived segments a recovery from `base` to `as_of` replays.
async fn wal_range(
    ctx: &Context,
    repo: &Repository,
    base: &Manifest,
    as_of: Timestamp,
) -> Result<WalRange> {
    let archive = wal::cluster::archive_of_base(ctx, repo, base).await?;
    let info = base.base.as_ref().ok_or_else(|| Error::Damaged {
        what: format!("the manifest of base backup `{}`", base.id),
        problem: "without WAL positions".into(),
    })?;
    let size = info.wal_segment_size;
    let (timeline, start) =
        wal::segment_of_name(&info.first_wal, size).unwrap_or((info.timeline, 0));
    let mut segments: Vec<(u64, u32, String, u64, Option<Timestamp>)> = repo
        .storage()
        .list(archive.prefix())
        .await?
        .into_iter()
        .filter_map(|e| {
            let name = archive.name_of_key(&e.path)?.to_string();
            let (tl, number) = wal::segment_of_name(&name, size)?;
            (tl >= timeline && number >= start).then_some((number, tl, name, e.size, e.modified))
        })
        .collect();
    segments.sort();
    segments.dedup_by(|a, b| a.2 == b.2);
    let end = segments
        .iter()
        .position(|s| s.4.is_some_and(|at| at > as_of))
        .unwrap_or(segments.len().saturating_sub(1));
    let used = &segments[..(end + 1).min(segments.len())];
    Ok(WalRange {
        first: used.first().map_or(info.first_wal.clone(), |s| s.2.clone()),
        last: used.last().map_or(info.first_wal.clone(), |s| s.2.clone()),
        segments: used.len(),
        bytes: used.iter().map(|s| s.3).sum(),
    })
}

/// The last measured recovery of the same kind, scaled by size.
async fn estimate(
    repo: &Repository,
    manifests: &[Manifest],
    chosen: &Manifest,
) -> Result<Option<(f64, String)>> {
    let verifications = list_verifications(repo).await?;
    let measured = verifications.iter().rev().find_map(|v| {
        let seconds = v
            .recovery_seconds
            .filter(|_| v.passed && !v.quick && v.kind == chosen.kind)?;
        let backup = manifests.iter().find(|m| m.id == v.backup)?;
        Some((v, seconds, backup))
    });
    Ok(measured.map(|(v, seconds, backup)| {
        let scale = if backup.raw_size > 0 {
            chosen.raw_size as f64 / backup.raw_size as f64
        } else {
            1.0
        };
        (
            ((seconds * scale).max(1.0) * 10.0).round() / 10.0,
            format!(
                "verification of `{}` on {}: recovered in {seconds:.1}s ({} raw bytes; this backup has {})",
                v.backup, v.verified_at, backup.raw_size, chosen.raw_size
            ),
        )
    }))
}
