//! Putting a bucket (or a prefix of it) back as it was at a run: the run's index merged with a
//! listing of the target, so that objects already there unchanged are not copied again.

use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::Serialize;

use super::index::{diff, Change};
use super::{index_key, list_bucket_runs, next_or_stop, read_index, Ends, Failure, RunRecord};
use crate::config::{BucketUrl, ObjectsConfig};
use crate::error::{Error, Result};
use crate::storage::{CopyOptions, RequestCounts, Storage};
use crate::Context;

pub struct BucketRestoreOptions {
    /// Restore as of the latest run not after this time; `None`: the latest run.
    pub as_of: Option<Timestamp>,
    /// Another bucket (same account and endpoint as the source) to restore into.
    pub to: Option<BucketUrl>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    pub dry_run: bool,
    /// Also delete objects of the target that the run did not have.
    pub delete_extra: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct BucketRestoreReport {
    pub name: String,
    pub run: String,
    pub run_started: Option<Timestamp>,
    pub target: String,
    pub dry_run: bool,
    /// Objects of the run (under the prefix).
    pub objects: u64,
    /// Already in the target, unchanged.
    pub unchanged: u64,
    pub restored: u64,
    pub restored_bytes: u64,
    /// In the target but not in the run.
    pub extra: u64,
    pub deleted: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    pub seconds: f64,
    pub requests: RequestCounts,
}

enum Done {
    Unchanged,
    Restored(u64),
    Extra,
    Deleted,
    Failed(Failure),
}

pub async fn restore_bucket(
    ctx: &Context,
    name: &str,
    config: &ObjectsConfig,
    options: &BucketRestoreOptions,
) -> Result<BucketRestoreReport> {
    let started = Instant::now();
    let ends = Ends::open(config, &ctx.storage_env())?;
    let run = choose_run(&list_bucket_runs(&ends.dest).await?, name, config, options)?;
    let target_config = match &options.to {
        Some(url) => config.source.with_url(url.clone()),
        None => config.source.clone(),
    };
    // A dry run shows what it would restore and delete, through storage that writes nothing.
    let target_env = if options.dry_run {
        ends.env.dry()
    } else {
        ends.env.clone()
    };
    let target = Storage::bucket(&target_config, &target_env)?;
    let changes = run_against_target(&ends.dest, &run, &target, options).await?;
    let mut report = BucketRestoreReport {
        name: name.to_string(),
        run: run.id.clone(),
        run_started: Some(run.started),
        target: target_config.url.to_string(),
        dry_run: options.dry_run,
        ..BucketRestoreReport::default()
    };
    let part_size = (config.part_size_mib as usize) << 20;
    let (dest, target) = (&ends.dest, &target);
    let done = changes
        .map(|change| async move {
            put_back(change?, dest, target, part_size, options.delete_extra).await
        })
        .buffer_unordered(config.transfers)
        .boxed();
    let progress = ctx
        .progress
        .start(&format!("restoring `{name}` as of run `{}`", run.id), None);
    tally(ctx, done, &mut report, &progress).await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.requests = ends.requests();
    Ok(report)
}

/// The run to restore: the latest, or the latest at or before `--as-of`.
fn choose_run(
    runs: &[RunRecord],
    name: &str,
    config: &ObjectsConfig,
    options: &BucketRestoreOptions,
) -> Result<RunRecord> {
    let run = match options.as_of {
        None => runs.last(),
        Some(at) => runs.iter().rev().find(|r| r.started <= at),
    };
    run.cloned()
        .ok_or_else(|| match (options.as_of, runs.first()) {
            (_, None) => Error::Missing(format!(
                "object backup `{name}` has no run in `{}`: run `lifeboat backup objects` first",
                config.destination.url
            )),
            (Some(at), Some(first)) => Error::Missing(format!(
                "no run of `{name}` at or before `{at}`: the oldest is `{}` at `{}`",
                first.id, first.started
            )),
            (None, Some(_)) => unreachable!("a latest run exists when there is a first"),
        })
}

/// The run's index (below `--prefix`) against what the target holds now, in key order.
async fn run_against_target(
    dest: &Storage,
    run: &RunRecord,
    target: &Storage,
    options: &BucketRestoreOptions,
) -> Result<BoxStream<'static, Result<Change>>> {
    let prefix = options.prefix.clone().unwrap_or_default();
    let snapshot = {
        let prefix = prefix.clone();
        read_index(dest, &index_key(&run.id), false)
            .await?
            .try_filter(move |e| futures::future::ready(e.key.starts_with(&prefix)))
            .boxed()
    };
    // A prefix that is a folder is listed directly; any other is filtered from the listing.
    let list_from = if prefix.ends_with('/') {
        prefix.as_str()
    } else {
        ""
    };
    let listing = super::listing::list_flat(target, list_from)
        .await?
        .try_filter(move |l| futures::future::ready(l.key.starts_with(&prefix)))
        .boxed();
    Ok(diff(snapshot, listing, "target listing").boxed())
}

/// Puts one object back as the run had it (three tries), or deletes one the run did not have
/// (with `--delete`); a failure is reported, not fatal, but a stop is.
async fn put_back(
    change: Change,
    dest: &Storage,
    target: &Storage,
    part_size: usize,
    delete_extra: bool,
) -> Result<Done> {
    Ok(match change {
        Change::Same(..) => Done::Unchanged,
        Change::Added(_) if !delete_extra => Done::Extra,
        Change::Added(extra) => match target.delete(&extra.key).await {
            Ok(()) => Done::Deleted,
            Err(e) => Done::Failed(Failure {
                key: extra.key,
                error: e.to_string(),
            }),
        },
        Change::Removed(entry) | Change::Changed(entry, _) => {
            let options = CopyOptions {
                size: entry.size,
                etag: None,
                storage_class: None,
                part_size,
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match target
                    .copy_from(dest, &entry.stored_key(), &entry.key, &options)
                    .await
                {
                    Ok(Some(bytes)) => break Done::Restored(bytes),
                    Ok(None) => {
                        break Done::Failed(Failure {
                            error: format!(
                                "its copy `{}` is missing from the backup",
                                dest.display(&entry.stored_key())
                            ),
                            key: entry.key,
                        })
                    }
                    Err(e @ Error::Interrupted(_)) => return Err(e),
                    Err(e) if attempt >= 3 => {
                        break Done::Failed(Failure {
                            key: entry.key,
                            error: e.to_string(),
                        })
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250 << attempt)).await,
                }
            }
        }
    })
}

/// Counts what was done into `report` as it is done, until all is, or a stop.
async fn tally(
    ctx: &Context,
    mut done: BoxStream<'_, Result<Done>>,
    report: &mut BucketRestoreReport,
    progress: &crate::progress::Task,
) -> Result<()> {
    let mut last_note = Instant::now();
    loop {
        let Some(item) = next_or_stop(&mut done, &ctx.cancel, "object restore").await? else {
            break;
        };
        match item? {
            Done::Unchanged => {
                report.objects += 1;
                report.unchanged += 1;
            }
            Done::Restored(bytes) => {
                report.objects += 1;
                report.restored += 1;
                report.restored_bytes += bytes;
                progress.advance(bytes);
            }
            Done::Extra => report.extra += 1,
            Done::Deleted => report.deleted += 1,
            Done::Failed(failure) => {
                tracing::warn!("cannot restore `{}`: {}", failure.key, failure.error);
                report.failed += 1;
                report.failures.push(failure);
            }
        }
        if last_note.elapsed() >= Duration::from_millis(500) {
            last_note = Instant::now();
            progress.note(&format!(
                "{} objects, {} restored, {} failed",
                report.objects, report.restored, report.failed
            ));
        }
    }
    Ok(())
}
