//! Putting a bucket (or a prefix of it) back as it was at a run: the run's index merged with a
//! listing of the target, so that objects already there unchanged are not copied again.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::Serialize;

use super::index::{diff, Change};
use super::{index_key, list_bucket_runs, read_index, Ends, Failure};
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
    let runs = list_bucket_runs(&ends.dest).await?;
    let run = match options.as_of {
        None => runs.last(),
        Some(at) => runs.iter().rev().find(|r| r.started <= at),
    }
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
    })?
    .clone();
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
    let prefix = options.prefix.clone().unwrap_or_default();
    let snapshot = {
        let prefix = prefix.clone();
        read_index(&ends.dest, &index_key(&run.id), false)
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
    let listing = {
        let prefix = prefix.clone();
        super::listing::list_flat(&target, list_from)
            .await?
            .try_filter(move |l| futures::future::ready(l.key.starts_with(&prefix)))
            .boxed()
    };
    let part_size = (config.part_size_mib as usize) << 20;
    let mut report = BucketRestoreReport {
        name: name.to_string(),
        run: run.id.clone(),
        run_started: Some(run.started),
        target: target_config.url.to_string(),
        dry_run: options.dry_run,
        ..BucketRestoreReport::default()
    };
    let progress = ctx
        .progress
        .start(&format!("restoring `{name}` as of run `{}`", run.id), None);
    let dest = &ends.dest;
    let target = &target;
    let delete_extra = options.delete_extra;
    let mut done = diff(snapshot, listing, "target listing")
        .map(|step| async move {
            let step = step?;
            Ok::<_, Error>(match step {
                Change::Same(..) => Done::Unchanged,
                Change::Added(extra) => {
                    if !delete_extra {
                        Done::Extra
                    } else {
                        match target.delete(&extra.key).await {
                            Ok(()) => Done::Deleted,
                            Err(e) => Done::Failed(Failure {
                                key: extra.key,
                                error: e.to_string(),
                            }),
                        }
                    }
                }
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
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(250 << attempt)).await
                            }
                        }
                    }
                }
            })
        })
        .buffer_unordered(config.transfers)
        .boxed();
    let mut last_note = Instant::now();
    let result: Result<()> = async {
        loop {
            let next = tokio::select! {
                next = done.next() => next,
                () = ctx.cancel.cancelled() => {
                    return Err(Error::Interrupted("object restore stopped".into()));
                }
            };
            let Some(item) = next else { break };
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
    .await;
    drop(progress);
    result?;
    report.seconds = started.elapsed().as_secs_f64();
    report.requests = ends.requests();
    Ok(report)
}
