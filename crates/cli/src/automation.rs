//! `run`, `daemon`, `status`, `doctor` and `backup redis`.

use lifeboat_core::repository::Repository;
use lifeboat_core::{daemon, doctor, jobs, notify, status, Context, Error, Result};

use crate::commands::{emit, print_json_or};

pub async fn run(ctx: &Context, job: &str, json: bool) -> Result<()> {
    let jobs = ctx.config.jobs();
    let config = jobs.get(job).ok_or_else(|| {
        Error::Config(format!(
            "job `{job}` is not configured: the jobs are {}",
            jobs.keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let report = jobs::run_job(ctx, job, config).await?;
    if json {
        print_json_or(true, &report, String::new)?;
    } else {
        emit(&format!("{}\n", notify::summary(&report)))?;
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!("job `{job}` stopped")));
    }
    let failed = report.failed();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Incomplete(format!(
            "job `{job}`: {} of {} steps failed: {}",
            failed.len(),
            report.steps.len(),
            failed
                .iter()
                .map(|s| format!("{} ({})", s.step, s.detail))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}

pub async fn daemon(ctx: &Context, run_at_start: bool) -> Result<()> {
    daemon::run_daemon(ctx, run_at_start).await
}

pub async fn status(ctx: &Context, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let assets = status::status(ctx, &repo, jiff::Timestamp::now()).await?;
    if json {
        print_json_or(true, &assets, String::new)?;
    } else {
        let mut out = String::new();
        if assets.is_empty() {
            out.push_str(
                "nothing configured: add `[postgres.NAME]`, `[objects.NAME]` or `[redis]`\n",
            );
        }
        for a in &assets {
            out.push_str(&format!(
                "{:<4} {:<24} last good {:<17} age {:>8} (RPO {:>6}){}\n",
                if a.ok { "ok" } else { "FAIL" },
                a.asset,
                a.last_good
                    .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "never".into()),
                a.age_minutes
                    .map(|m| format!("{m} min"))
                    .unwrap_or_else(|| "-".into()),
                a.rpo_minutes
                    .map(|m| format!("{m} min"))
                    .unwrap_or_else(|| "-".into()),
                match (a.verified_recovery_seconds, a.rto_seconds) {
                    (Some(secs), Some(rto)) => format!(", restores in {secs:.0}s (RTO {rto}s)"),
                    _ => String::new(),
                }
            ));
            for p in &a.problems {
                out.push_str(&format!("       ! {p}\n"));
            }
            for n in &a.notes {
                out.push_str(&format!("         {n}\n"));
            }
        }
        emit(&out)?;
    }
    let breached: Vec<&str> = assets
        .iter()
        .filter(|a| !a.ok)
        .map(|a| a.asset.as_str())
        .collect();
    if breached.is_empty() {
        Ok(())
    } else {
        Err(Error::Breached(format!(
            "recovery objectives breached for {}",
            breached.join(", ")
        )))
    }
}

pub async fn doctor(ctx: &Context, json: bool) -> Result<()> {
    let findings = doctor::doctor(ctx).await;
    if json {
        print_json_or(true, &findings, String::new)?;
    } else {
        let mut out = String::new();
        for f in &findings {
            out.push_str(&format!(
                "{:<4} {:<24} {}\n",
                if f.ok { "ok" } else { "FAIL" },
                f.check,
                f.detail
            ));
        }
        emit(&out)?;
    }
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| f.check.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Incomplete(format!(
            "doctor found problems with: {}",
            failed.join(", ")
        )))
    }
}

pub async fn backup_redis(ctx: &Context, json: bool) -> Result<()> {
    let redis = ctx.config.redis.as_ref().ok_or_else(|| {
        Error::Config("no `[redis]` section: Redis is ephemeral by design; add `[redis] url = ... backup = true` to snapshot it".into())
    })?;
    if !redis.backup {
        return Err(Error::Config(
            "`redis.backup` is false: Redis is ephemeral by design; set `backup = true` to take RDB snapshots".into(),
        ));
    }
    let repo = Repository::open(ctx).await?;
    let (id, size) = lifeboat_core::jobs::with_run_lock(ctx, &repo, "backup redis", async |ctx| {
        lifeboat_core::redis::backup(ctx, &repo, redis).await
    })
    .await?;
    tracing::info!(
        "redis snapshot `{id}` stored ({} bytes)",
        size.unwrap_or_default()
    );
    print_json_or(
        json,
        &serde_json::json!({ "id": id, "stored_size": size }),
        || id.clone(),
    )
}
