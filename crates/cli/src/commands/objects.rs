//! The object backup commands: `backup objects`, `restore objects`, `list objects`.

use lifeboat_core::buckets;
use lifeboat_core::config::BucketUrl;
use lifeboat_core::storage::Storage;
use lifeboat_core::units::human_bytes;
use lifeboat_core::{backup_bucket, restore_bucket, BucketBackupOptions, BucketRestoreOptions};
use lifeboat_core::{Context, Error, Result};

use crate::cli::RestoreObjectsArgs;
use crate::output::{emit, parse_time, print_json_or};

pub async fn backup(ctx: &Context, name: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let (name, config) = ctx.config.objects(name)?;
    let options = BucketBackupOptions {
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
            lifeboat_core::repository::lock::with_run_lock(
                ctx,
                repo,
                "backup objects",
                async |ctx| backup_bucket(ctx, name, config, &options).await,
            )
            .await?
        }
        None => backup_bucket(ctx, name, config, &options).await?,
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
    let options = BucketRestoreOptions {
        as_of: r.as_of.as_deref().map(|t| parse_time(ctx, t)).transpose()?,
        to,
        prefix: r.prefix.clone(),
        dry_run: r.dry_run,
        delete_extra: r.delete,
    };
    let report = restore_bucket(ctx, name, config, &options).await?;
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
        all.extend(buckets::list_bucket_runs(&dest).await?);
    }
    if json {
        return print_json_or(true, &all, String::new);
    }
    if all.is_empty() {
        return emit("no object backup runs\n");
    }
    let header = [
        "RUN",
        "NAME",
        "STARTED (UTC)",
        "OBJECTS",
        "SIZE",
        "COPIED",
        "HISTORY",
        "NOTES",
    ];
    let rows = all
        .iter()
        .map(|run| {
            vec![
                run.id.clone(),
                run.name.clone(),
                run.started.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                run.summary.objects.to_string(),
                human_bytes(run.summary.bytes),
                run.summary.copied.to_string(),
                run.summary.to_history.to_string(),
                if run.complete {
                    String::new()
                } else {
                    format!("incomplete: {} failed", run.summary.failed)
                },
            ]
        })
        .collect();
    emit(&crate::output::table_text(
        "",
        Some(&header),
        rows,
        &[3, 4, 5, 6],
    ))
}
