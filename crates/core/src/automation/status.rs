//! Status against the recovery objectives, asset by asset: each database's dumps, its WAL
//! archive and base backups (when it archives to lifeboat), each object backup, and Redis.
//! An asset is breached when its newest good backup is older than its RPO, its last
//! verification failed or took longer than its RTO, or its WAL archive has a gap.

use jiff::Timestamp;
use serde::Serialize;

use crate::error::Result;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::verify::Verification;
use crate::{wal, Context};

/// One asset's state. Every duration is in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    /// `db`, `wal`, `base`, `objects`, `copy`, `redis` or `repository`.
    pub kind: String,
    /// The configured name (`main`, `media`); empty for `redis` and `repository`.
    pub name: String,
    pub ok: bool,
    pub last_good: Option<Timestamp>,
    pub age_seconds: Option<f64>,
    pub rpo_seconds: Option<u64>,
    pub size_bytes: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub last_verified: Option<Timestamp>,
    /// Whether the last verification passed.
    pub last_verification_passed: Option<bool>,
    pub verified_recovery_seconds: Option<f64>,
    pub rto_seconds: Option<u64>,
    /// WAL archiving as the server sees it (`wal` assets, when the server answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archiver: Option<crate::postgres::archiver::Archiver>,
    /// What breaches an objective.
    pub problems: Vec<String>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

impl AssetStatus {
    pub(crate) fn new(kind: &str, name: &str) -> AssetStatus {
        AssetStatus {
            kind: kind.into(),
            name: name.into(),
            ok: true,
            last_good: None,
            age_seconds: None,
            rpo_seconds: None,
            size_bytes: None,
            duration_seconds: None,
            last_verified: None,
            last_verification_passed: None,
            verified_recovery_seconds: None,
            rto_seconds: None,
            archiver: None,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// `db main`, `redis`: how messages name the asset.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.kind.clone()
        } else {
            format!("{} {}", self.kind, self.name)
        }
    }

    /// Sets the newest good backup and judges its age against `rpo` minutes.
    fn judge_age(&mut self, last: Option<Timestamp>, rpo: u64, now: Timestamp, what: &str) {
        self.rpo_seconds = Some(rpo * 60);
        match last {
            None => self.problems.push(format!("no {what} yet")),
            Some(at) => {
                let seconds = now.duration_since(at).as_secs_f64();
                let age = seconds as i64 / 60;
                self.last_good = Some(at);
                self.age_seconds = Some(seconds);
                if seconds > (rpo * 60) as f64 {
                    self.problems.push(format!(
                        "newest {what} is {} old, more than the {} objective",
                        minutes(age),
                        minutes(rpo as i64)
                    ));
                }
            }
        }
    }

    fn judge_verification(&mut self, v: Option<&Verification>, rto: u64) {
        self.rto_seconds = Some(rto * 60);
        let Some(v) = v else {
            self.notes
                .push("never verified: run `lifeboat verify`".into());
            return;
        };
        self.last_verified = Some(v.verified_at);
        self.last_verification_passed = Some(v.passed);
        self.verified_recovery_seconds = v.recovery_seconds;
        if !v.passed {
            let failed = v.failures();
            self.problems.push(format!(
                "last verification of `{}` failed: {}: {}",
                v.backup,
                failed.first().map(|c| c.name.as_str()).unwrap_or("?"),
                failed.first().map(|c| c.detail.as_str()).unwrap_or("?")
            ));
        } else if let Some(secs) = v.recovery_seconds {
            if secs > (rto * 60) as f64 {
                self.problems.push(format!(
                    "verified recovery took {}, more than the {} objective",
                    crate::units::human_duration(secs),
                    minutes(rto as i64)
                ));
            }
        }
    }
}

fn minutes(m: i64) -> String {
    crate::units::human_duration(m as f64 * 60.0)
}

/// Copy `name` of the repository: its newest backup against the dump objective, and the
/// repository's backups it lacks.
async fn copy_status(
    ctx: &Context,
    manifests: &[Manifest],
    name: &str,
    now: Timestamp,
) -> AssetStatus {
    let mut asset = AssetStatus::new("copy", name);
    let read = async {
        let copy_ctx = ctx.with_config(ctx.config.for_copy(name)?);
        let repo = Repository::open(&copy_ctx).await?;
        repo.list().await
    };
    match read.await {
        Ok(copied) => {
            let newest = copied.iter().max_by_key(|m| m.started_at);
            asset.judge_age(
                newest.map(|m| m.started_at),
                ctx.config.objectives.dump_rpo_minutes,
                now,
                "backup in the copy",
            );
            asset.size_bytes = newest.map(|m| m.stored_size);
            let have: std::collections::HashSet<&str> =
                copied.iter().map(|m| m.id.as_str()).collect();
            let missing: Vec<&str> = manifests
                .iter()
                .map(|m| m.id.as_str())
                .filter(|id| !have.contains(id))
                .collect();
            asset
                .notes
                .push(format!("{} backups in the copy", copied.len()));
            if let Some(oldest) = missing.first() {
                asset.notes.push(format!(
                    "{} backups of the repository not copied yet, the oldest `{oldest}`: `lifeboat copy {name}`",
                    missing.len()
                ));
            }
        }
        Err(e) => asset.problems.push(format!("cannot read the copy: {e}")),
    }
    asset
}

/// The status of every configured asset at `now`.
pub async fn status(ctx: &Context, repo: &Repository, now: Timestamp) -> Result<Vec<AssetStatus>> {
    let objectives = &ctx.config.objectives;
    let catalog = repo.catalog().await?;
    let manifests = catalog.manifests;
    let verifications = crate::verify::list_verifications(repo).await?;
    let newest_verification = |database: &str, kind: BackupKind| {
        verifications
            .iter()
            .filter(|v| v.database == database && v.kind == kind && !v.quick)
            .max_by_key(|v| v.verified_at)
    };
    let mut out = Vec::new();
    for (name, pg) in &ctx.config.postgres {
        let mut dumps = AssetStatus::new("db", name);
        let newest = manifests
            .iter()
            .filter(|m| m.kind == BackupKind::Db && &m.database == name)
            .filter(|m| !m.options.schema_only && m.options.schemas.is_empty())
            .max_by_key(|m| m.started_at);
        dumps.judge_age(
            newest.map(|m| m.started_at),
            objectives.dump_rpo_minutes,
            now,
            "full dump",
        );
        if let Some(m) = newest {
            dumps.size_bytes = Some(m.stored_size);
            dumps.duration_seconds = Some(m.finished_at.duration_since(m.started_at).as_secs_f64());
        }
        dumps.judge_verification(
            newest_verification(name, BackupKind::Db),
            objectives.dump_rto_minutes,
        );
        out.push(dumps);
        if !pg.pitr {
            continue;
        }
        let mut base = AssetStatus::new("base", name);
        let newest = manifests
            .iter()
            .filter(|m| m.kind == BackupKind::Base && &m.database == name)
            .max_by_key(|m| m.started_at);
        let window = ctx.config.retention.pitr_days as u64 * 24 * 60;
        base.judge_age(newest.map(|m| m.started_at), window, now, "base backup");
        if let Some(m) = newest {
            base.size_bytes = Some(m.stored_size);
            base.duration_seconds = Some(m.finished_at.duration_since(m.started_at).as_secs_f64());
        }
        base.judge_verification(
            newest_verification(name, BackupKind::Base),
            objectives.pitr_rto_minutes,
        );
        out.push(base);
        let mut wal = wal_status(ctx, repo, &manifests, name, now).await?;
        archiver_status(ctx, pg, &mut wal).await;
        out.push(wal);
    }
    for (name, config) in &ctx.config.objects {
        let mut asset = AssetStatus::new("objects", name);
        match async {
            let dest = crate::storage::Storage::bucket(&config.destination, &ctx.storage_env())?;
            crate::buckets::list_bucket_runs(&dest).await
        }
        .await
        {
            Ok(runs) => {
                let newest = runs.last();
                let good = runs.iter().rev().find(|r| r.complete);
                asset.judge_age(
                    good.map(|r| r.started),
                    objectives.objects_rpo_minutes,
                    now,
                    "complete run",
                );
                if let Some(run) = newest {
                    asset.size_bytes = Some(run.summary.bytes);
                    asset.duration_seconds = Some(run.summary.seconds);
                    if !run.complete {
                        asset.notes.push(format!(
                            "last run `{}` incomplete: {} objects failed",
                            run.id, run.summary.failed
                        ));
                    }
                }
            }
            Err(e) => asset.problems.push(format!("cannot read its runs: {e}")),
        }
        out.push(asset);
    }
    for name in ctx.config.repository.copies.keys() {
        out.push(copy_status(ctx, &manifests, name, now).await);
    }
    if let Some(redis) = &ctx.config.redis {
        let mut asset = AssetStatus::new("redis", "");
        asset
            .notes
            .push("ephemeral by design: rebuilt from PostgreSQL, not restored".into());
        match crate::redis::check(redis).await {
            Ok(answer) => asset.notes.push(answer),
            Err(e) => asset.problems.push(e.to_string()),
        }
        out.push(asset);
    }
    if !catalog.damaged.is_empty() {
        let mut asset = AssetStatus::new("repository", "");
        asset.problems = catalog
            .damaged
            .iter()
            .map(|d| {
                format!(
                    "{}: restore it from a copy, or remove it with `lifeboat prune --force`",
                    d.describe()
                )
            })
            .collect();
        out.push(asset);
    }
    for asset in &mut out {
        asset.ok = asset.problems.is_empty();
    }
    Ok(out)
}

/// How long `status` waits for the server to say how its archiving goes.
const ARCHIVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the server says of its archiving: WAL waiting in `pg_wal` (against `[wal]
/// queue_max_mib`, where set: more than half of it is a problem), and failed attempts.
async fn archiver_status(
    ctx: &Context,
    pg: &crate::config::PostgresConfig,
    asset: &mut AssetStatus,
) {
    // Bounded: a server that accepts and never answers must not hold `status` (nor the
    // daemon's metrics) with it.
    let read = crate::postgres::archiver::read(
        pg,
        ctx.config.wal.queue_max_mib,
        &ctx.config.wal.stream_slot,
    );
    let state = match tokio::time::timeout(ARCHIVER_WAIT, read).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            asset
                .notes
                .push(format!("the server's archiver could not be read: {e}"));
            return;
        }
        Err(_) => {
            asset.notes.push(format!(
                "the server's archiver could not be read: no answer within {} s",
                ARCHIVER_WAIT.as_secs()
            ));
            return;
        }
    };
    if let (Some(waiting), Some(max)) = (state.waiting_bytes, state.queue_max_bytes) {
        if waiting * 2 > max {
            asset.problems.push(format!(
                "{} of WAL wait in pg_wal to be archived, more than half of `[wal] queue_max_mib` ({}): past it, segments are dropped unarchived",
                crate::units::human_bytes(waiting),
                crate::units::human_bytes(max)
            ));
        }
    }
    if let Some(stream) = &state.stream {
        let kept = crate::units::human_bytes(stream.retained_bytes.unwrap_or(0).max(0) as u64);
        if stream.wal_status.as_deref() == Some("lost") {
            asset.problems.push(format!(
                "the WAL stream's slot `{}` was invalidated (`max_slot_wal_keep_size`): `lifeboat wal-stream` makes it again; the WAL between comes from archive_command only",
                stream.slot
            ));
        } else if !stream.active {
            asset.problems.push(format!(
                "nothing reads the WAL stream's slot `{}`: it keeps {kept} of WAL in pg_wal (is `lifeboat wal-stream` running? drop the slot if the stream is retired)",
                stream.slot
            ));
        } else {
            asset.notes.push(format!(
                "WAL streamed through slot `{}`: {} behind, last stored {:.1} s after it was written; {kept} kept in pg_wal",
                stream.slot,
                crate::units::human_bytes(stream.lag_bytes.unwrap_or(0).max(0) as u64),
                stream.lag_seconds.unwrap_or(0.0)
            ));
        }
        if let (Some(kept), Some(max)) = (stream.retained_bytes, state.queue_max_bytes) {
            if kept.max(0) as u64 * 2 > max {
                asset.problems.push(format!(
                    "the WAL stream's slot `{}` keeps {} of WAL in pg_wal, more than half of `[wal] queue_max_mib`",
                    stream.slot,
                    crate::units::human_bytes(kept as u64)
                ));
            }
        }
    }
    if state.failing() {
        asset.problems.push(format!(
            "the server's archive_command is failing: {} failures, the last on `{}` at {} (PostgreSQL's log says why)",
            state.failed_count,
            state.last_failed_wal.as_deref().unwrap_or("?"),
            state.last_failed_time.as_deref().unwrap_or("?")
        ));
    }
    asset.archiver = Some(state);
}

/// The WAL archive of a database: age of the segment archived last, gaps, and the newest
/// window of moments it can recover.
async fn wal_status(
    ctx: &Context,
    repo: &Repository,
    manifests: &[Manifest],
    name: &str,
    now: Timestamp,
) -> Result<AssetStatus> {
    let mut asset = AssetStatus::new("wal", name);
    // The newest generation: what is archived now (older ones are listed by `list wal`).
    let archive = wal::cluster::archive(repo, name, wal::cluster::sole(ctx, name), None).await?;
    let report = wal::archive_report(ctx, &archive, manifests).await?;
    if archive.generation.generation > 1 {
        asset.notes.push(archive.generation.describe());
    }
    let newest = report.newest();
    asset.judge_age(
        newest.and_then(|(_, at)| at),
        ctx.config.objectives.wal_rpo_minutes,
        now,
        "archived WAL",
    );
    for timeline in &report.timelines {
        for (from, to) in &timeline.span.gaps {
            asset.problems.push(format!(
                "gap in the WAL archive on timeline {}: {from} .. {to} missing; no moment after it can be recovered until the next base backup",
                timeline.span.timeline
            ));
        }
    }
    // Segments `wal-push` let PostgreSQL drop (`[wal] queue_max_mib`): PITR is broken from
    // each until a base backup starts after it.
    for dropped in wal::queue::list_dropped(repo).await? {
        let mended = manifests
            .iter()
            .filter(|m| m.kind == BackupKind::Base && m.database == name)
            .find(|m| m.started_at > dropped.at);
        match mended {
            None => asset.problems.push(dropped.describe()),
            Some(base) => asset.notes.push(format!(
                "`{}` was dropped unarchived at {}; recoverable again from base backup {}",
                dropped.name,
                dropped.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                base.id
            )),
        }
    }
    let left_behind = report.left_behind();
    for fork in &report.forks {
        let what = format!(
            "timeline {} branched off timeline {} at {} while timeline {} went on to {}",
            fork.timeline, fork.parent, fork.at, fork.parent, fork.parent_went_on_to
        );
        if left_behind.contains(&fork) {
            asset.problems.push(format!(
                "{what}, and stopped: a fork beside the production line (a recovery promoted while production archived, or two primaries); recoveries to the latest moment follow the timeline archived last, and PostgreSQL's own `latest` would follow timeline {}",
                fork.timeline
            ));
        } else {
            asset.notes.push(what);
        }
    }
    if let Some((segment, _)) = newest {
        asset.notes.push(format!("newest segment {segment}"));
    }
    // A refusal after the newest archived segment: PostgreSQL is stuck retrying it.
    if let Some(refusal) = wal::last_refusal(repo).await? {
        let newest_at = newest.and_then(|(_, at)| at);
        if newest_at.is_none_or(|at| refusal.at > at) {
            asset.problems.push(format!(
                "wal-push refused `{}` at {}: {}",
                refusal.name,
                refusal.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                refusal.reason
            ));
        }
    }
    if let Some(window) = report
        .timelines
        .iter()
        .filter_map(|t| t.recoverable.last())
        .max_by_key(|w| w.to)
    {
        asset.notes.push(format!(
            "recoverable {} .. {}",
            window.from.strftime("%Y-%m-%d %H:%M:%S"),
            window.to.strftime("%Y-%m-%d %H:%M:%S")
        ));
    }
    Ok(asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_against_the_objective() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let mut fresh = AssetStatus::new("db", "main");
        fresh.judge_age(
            Some("2026-11-24T02:00:00Z".parse().unwrap()),
            1500,
            now,
            "full dump",
        );
        assert!(fresh.problems.is_empty());
        assert_eq!(fresh.age_seconds, Some(36000.0));
        let mut stale = AssetStatus::new("db", "main");
        stale.judge_age(
            Some("2026-11-22T02:00:00Z".parse().unwrap()),
            1500,
            now,
            "full dump",
        );
        assert_eq!(
            stale.problems,
            ["newest full dump is 58h00 old, more than the 25h00 objective"]
        );
        let mut none = AssetStatus::new("db", "main");
        none.judge_age(None, 1500, now, "full dump");
        assert_eq!(none.problems, ["no full dump yet"]);
    }
}
