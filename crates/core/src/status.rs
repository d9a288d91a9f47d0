//! Status against the recovery objectives, asset by asset: each database's dumps, its WAL
//! archive and base backups (when it archives to lifeboat), each object backup, and Redis.
//! An asset is breached when its newest good backup is older than its RPO, its last
//! verification failed or took longer than its RTO, or its WAL archive has a gap.

use jiff::Timestamp;
use serde::Serialize;

use crate::error::Result;
use crate::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::verify::Verification;
use crate::{wal, Context};

#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    /// `db main`, `wal main`, `base main`, `objects media`, `redis`.
    pub asset: String,
    pub ok: bool,
    pub last_good: Option<Timestamp>,
    pub age_minutes: Option<i64>,
    pub rpo_minutes: Option<u64>,
    pub size_bytes: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub last_verified: Option<Timestamp>,
    pub verified_recovery_seconds: Option<f64>,
    pub rto_seconds: Option<u64>,
    /// What breaches an objective.
    pub problems: Vec<String>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

impl AssetStatus {
    fn new(asset: String) -> AssetStatus {
        AssetStatus {
            asset,
            ok: true,
            last_good: None,
            age_minutes: None,
            rpo_minutes: None,
            size_bytes: None,
            duration_seconds: None,
            last_verified: None,
            verified_recovery_seconds: None,
            rto_seconds: None,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Sets the newest good backup and judges its age against `rpo` minutes.
    fn judge_age(&mut self, last: Option<Timestamp>, rpo: u64, now: Timestamp, what: &str) {
        self.rpo_minutes = Some(rpo);
        match last {
            None => self.problems.push(format!("no {what} yet")),
            Some(at) => {
                let age = now.duration_since(at).as_secs() / 60;
                self.last_good = Some(at);
                self.age_minutes = Some(age);
                if age > rpo as i64 {
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
                    "verified recovery took {secs:.0}s, more than the {} objective",
                    minutes(rto as i64)
                ));
            }
        }
    }
}

fn minutes(m: i64) -> String {
    if m >= 120 {
        format!("{}h{:02}", m / 60, m % 60)
    } else {
        format!("{m} min")
    }
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
        let mut dumps = AssetStatus::new(format!("db {name}"));
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
        let mut base = AssetStatus::new(format!("base {name}"));
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
        out.push(wal_status(ctx, repo, &manifests, name, now).await?);
    }
    for (name, config) in &ctx.config.objects {
        let mut asset = AssetStatus::new(format!("objects {name}"));
        match async {
            let dest = crate::storage::Storage::bucket(&config.destination, &ctx.storage_env())?;
            crate::objects::list_runs(&dest).await
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
    if let Some(redis) = &ctx.config.redis {
        let mut asset = AssetStatus::new("redis".into());
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
        let mut asset = AssetStatus::new("repository".into());
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

/// The WAL archive of a database: age of the segment archived last, gaps, and the newest
/// window of moments it can recover.
async fn wal_status(
    ctx: &Context,
    repo: &Repository,
    manifests: &[Manifest],
    name: &str,
    now: Timestamp,
) -> Result<AssetStatus> {
    let mut asset = AssetStatus::new(format!("wal {name}"));
    let report = wal::archive_report(ctx, repo, manifests).await?;
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

/// Prometheus text for the assets and the last run of each job.
pub fn metrics(assets: &[AssetStatus], runs: &[(String, Timestamp, bool, f64)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let label = |a: &AssetStatus| format!("asset=\"{}\"", a.asset.replace('"', "'"));
    family(
        "lifeboat_last_success_timestamp_seconds",
        "Start of the newest good backup of the asset.",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.last_good.map(|t| (label(a), t.as_second() as f64)))
            .collect(),
    );
    family(
        "lifeboat_backup_age_seconds",
        "Age of the newest good backup (for WAL: of the newest archived segment: the archive lag).",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.age_minutes.map(|m| (label(a), (m * 60) as f64)))
            .collect(),
    );
    family(
        "lifeboat_last_backup_size_bytes",
        "Stored size of the newest backup.",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.size_bytes.map(|b| (label(a), b as f64)))
            .collect(),
    );
    family(
        "lifeboat_last_backup_duration_seconds",
        "How long the newest backup took.",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.duration_seconds.map(|s| (label(a), s)))
            .collect(),
    );
    family(
        "lifeboat_last_verification_timestamp_seconds",
        "When the newest backup of the asset was last verified.",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.last_verified.map(|t| (label(a), t.as_second() as f64)))
            .collect(),
    );
    family(
        "lifeboat_verified_recovery_seconds",
        "Recovery time measured by the last verification.",
        "gauge",
        assets
            .iter()
            .filter_map(|a| a.verified_recovery_seconds.map(|s| (label(a), s)))
            .collect(),
    );
    family(
        "lifeboat_objective_breached",
        "1 when the asset breaches its RPO or RTO, or its WAL archive has a gap.",
        "gauge",
        assets
            .iter()
            .map(|a| (label(a), if a.ok { 0.0 } else { 1.0 }))
            .collect(),
    );
    family(
        "lifeboat_job_last_run_timestamp_seconds",
        "When the job last ran (in this daemon).",
        "gauge",
        runs.iter()
            .map(|(job, at, _, _)| (format!("job=\"{job}\""), at.as_second() as f64))
            .collect(),
    );
    family(
        "lifeboat_job_last_run_ok",
        "1 when every step of the job's last run succeeded.",
        "gauge",
        runs.iter()
            .map(|(job, _, ok, _)| (format!("job=\"{job}\""), if *ok { 1.0 } else { 0.0 }))
            .collect(),
    );
    family(
        "lifeboat_job_last_run_duration_seconds",
        "How long the job's last run took.",
        "gauge",
        runs.iter()
            .map(|(job, _, _, secs)| (format!("job=\"{job}\""), *secs))
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_against_the_objective() {
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let mut fresh = AssetStatus::new("db main".into());
        fresh.judge_age(
            Some("2026-11-24T02:00:00Z".parse().unwrap()),
            1500,
            now,
            "full dump",
        );
        assert!(fresh.problems.is_empty());
        assert_eq!(fresh.age_minutes, Some(600));
        let mut stale = AssetStatus::new("db main".into());
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
        let mut none = AssetStatus::new("db main".into());
        none.judge_age(None, 1500, now, "full dump");
        assert_eq!(none.problems, ["no full dump yet"]);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut a = AssetStatus::new("db main".into());
        a.last_good = Some("2026-11-24T02:00:00Z".parse().unwrap());
        a.size_bytes = Some(1234);
        a.ok = false;
        let text = metrics(
            &[a],
            &[(
                "daily".into(),
                "2026-11-24T02:00:00Z".parse().unwrap(),
                true,
                61.5,
            )],
        );
        assert!(
            text.contains(
                "lifeboat_last_success_timestamp_seconds{asset=\"db main\"} 1795485600\n"
            ),
            "{text}"
        );
        assert!(text.contains("lifeboat_last_backup_size_bytes{asset=\"db main\"} 1234\n"));
        assert!(text.contains("lifeboat_objective_breached{asset=\"db main\"} 1\n"));
        assert!(text.contains("lifeboat_job_last_run_duration_seconds{job=\"daily\"} 61.5\n"));
        assert!(text.contains("# TYPE lifeboat_backup_age_seconds gauge\n"));
    }
}
