//! The object backup commands: `backup objects`, `restore objects`, `list objects`.

use lifeboat_core::config::BucketUrl;
use lifeboat_core::objects::{self, BackupOptions, RestoreOptions};
use lifeboat_core::storage::Storage;
use lifeboat_core::units::human_bytes;
use lifeboat_core::{Context, Error, Result};

use crate::cli::RestoreObjectsArgs;
use crate::output::{emit, parse_time, print_json_or};

pub async fn backup(ctx: &Context, name: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let (name, config) = ctx.config.objects(name)?;
    let options = BackupOptions {
        dry_run,
        now: jiff::Timestamp::now(),
    };
    // A repository's run lock keeps a manual run apart from the daily job's; an object backup
    // configured without a repository has none to take.
    let repo = match lifeboat_core::repository::Repository::open(ctx).await {
        Ok(repo) if !dry_run => Some(repo),
        Ok(_) | Err(Error::NotARepository { .. }) => None,
        Err(e) => return Err(e),
    };
    let report = match &repo {
        Some(repo) => {
            lifeboat_core::automation::jobs::with_run_lock(
                ctx,
                repo,
                "backup objects",
                async |ctx| objects::backup_objects(ctx, name, config, &options).await,
            )
            .await?
        }
        None => objects::backup_objects(ctx, name, config, &options).await?,
    };
    let s = &report.summary;
    let what = if dry_run { "plan" } else { "done" };
    tracing::info!(
        "object backup `{name}` {what}: {} scanned, {} unchanged, {} new, {} changed, {} gone from the source; {} copied ({}), {} moved to history, {} failed; {} requests in {:.1}s",
        s.scanned,
        s.unchanged,
        s.added,
        s.changed,
        s.removed,
        s.copied,
        human_bytes(s.copied_bytes),
        s.to_history,
        s.failed,
        s.requests.total,
        s.seconds
    );
    print_json_or(json, &report, || {
        report
            .run
            .clone()
            .unwrap_or_else(|| "dry run: nothing changed".into())
    })?;
    if report.failed() > 0 {
        for failure in &report.failures {
            tracing::error!("not copied: `{}`: {}", failure.key, failure.error);
        }
        return Err(Error::Incomplete(format!(
            "object backup `{name}`: {} of {} objects could not be copied (listed above); the run is recorded as incomplete and the next run retries them",
            report.failed(),
            s.scanned
        )));
    }
    Ok(())
}

pub async fn restore(ctx: &Context, r: &RestoreObjectsArgs, json: bool) -> Result<()> {
    let (name, config) = ctx.config.objects(r.name.as_deref())?;
    let to = match &r.to {
        Some(url) => Some(BucketUrl::parse(url).map_err(|e| Error::Usage(format!("`--to`: {e}")))?),
        None => None,
    };
    let options = RestoreOptions {
        as_of: r.as_of.as_deref().map(|t| parse_time(ctx, t)).transpose()?,
        to,
        prefix: r.prefix.clone(),
        dry_run: r.dry_run,
        delete_extra: r.delete,
    };
    let report = objects::restore_objects(ctx, name, config, &options).await?;
    tracing::info!(
        "{} `{name}` as of run `{}` into `{}`: {} objects, {} already there, {} restored ({}), {} not in the run ({}), {} failed; {:.1}s",
        if report.dry_run { "restore plan of" } else { "restored" },
        report.run,
        report.target,
        report.objects,
        report.unchanged,
        report.restored,
        human_bytes(report.restored_bytes),
        report.extra + report.deleted,
        if r.delete { "deleted" } else { "kept; --delete removes them" },
        report.failed,
        report.seconds
    );
    print_json_or(json, &report, || report.run.clone())?;
    if report.failed > 0 {
        return Err(Error::Incomplete(format!(
            "restore of `{name}`: {} objects could not be restored (listed above)",
            report.failed
        )));
    }
    Ok(())
}

pub async fn list(ctx: &Context, json: bool) -> Result<()> {
    let mut all = Vec::new();
    for config in ctx.config.objects.values() {
        let dest = Storage::bucket(&config.destination, &ctx.storage_env())?;
        all.extend(objects::list_runs(&dest).await?);
    }
    if json {
        return print_json_or(true, &all, String::new);
    }
    if all.is_empty() {
        return emit("no object backup runs\n");
    }
    let mut out = format!(
        "{:<22} {:<12} {:<20} {:>9} {:>10} {:>8} {:>8} {}\n",
        "RUN", "NAME", "STARTED (UTC)", "OBJECTS", "SIZE", "COPIED", "HISTORY", "NOTES"
    );
    for run in &all {
        out.push_str(&format!(
            "{:<22} {:<12} {:<20} {:>9} {:>10} {:>8} {:>8} {}\n",
            run.id,
            run.name,
            run.started.strftime("%Y-%m-%d %H:%M:%S"),
            run.summary.objects,
            human_bytes(run.summary.bytes),
            run.summary.copied,
            run.summary.to_history,
            if run.complete {
                String::new()
            } else {
                format!("incomplete: {} failed", run.summary.failed)
            }
        ));
    }
    emit(&out)
}
