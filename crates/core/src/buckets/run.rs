//! One object backup run: merge the source listing with the previous index, copy what is new
//! or changed (`transfers` at a time, results kept in key order so the new index streams out
//! sorted), record what the source lost, and write the run's record last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::index::{diff, version_key, Change, IndexEntry, IndexWriter, SourceObject};
use super::{
    index_key, list_bucket_runs, next_or_stop, read_index, record_key, retired_key, Ends, Failure,
    RunRecord, Summary, RUN_FORMAT,
};
use crate::config::ObjectsConfig;
use crate::error::{Error, Result};
use crate::progress::Task;
use crate::storage::{CopyOptions, Storage, UploadOptions};
use crate::Context;

/// Failures kept in a run's record (all are logged).
const FAILURES_KEPT: usize = 100;
/// Attempts per object before it counts as failed (each request is also retried by the
/// storage layer, with backoff).
const ATTEMPTS: u32 = 2;
/// Steps in flight, at least, between the listing and the ordered index.
const STEP_WINDOW: usize = 8192;
/// Compressed index bytes gathered before they are sent.
const INDEX_FLUSH: usize = 1 << 20;

pub struct BucketBackupOptions {
    pub dry_run: bool,
    /// The run's time (injected so that tests can place runs in the past).
    pub now: Timestamp,
}

#[derive(Debug, Serialize)]
pub struct BucketBackupReport {
    pub name: String,
    /// The run's id; `None` for a dry run.
    pub run: Option<String>,
    pub dry_run: bool,
    pub complete: bool,
    pub summary: Summary,
    pub failures: Vec<Failure>,
}

#[derive(Clone, Copy)]
enum ChangeKind {
    Same,
    Added,
    Changed,
    Removed,
}

impl BucketBackupReport {
    pub fn failed(&self) -> u64 {
        self.summary.failed
    }
}

/// What became of one key.
struct Outcome {
    kind: ChangeKind,
    index: Option<IndexEntry>,
    retired: Option<IndexEntry>,
    copied: Option<u64>,
    failure: Option<Failure>,
}

/// Backs up the bucket of `[objects.NAME]`.
pub async fn backup_bucket(
    ctx: &Context,
    name: &str,
    config: &ObjectsConfig,
    options: &BucketBackupOptions,
) -> Result<BucketBackupReport> {
    // A dry run goes the whole way with storage that shows its writes instead of making them.
    let env = if options.dry_run {
        ctx.storage_env().dry()
    } else {
        ctx.storage_env()
    };
    let ends = Ends::open(config, &env)?;
    backup_between(ctx, name, config, &ends, options).await
}

/// Backs up `ends.source` into `ends.dest` (as `[objects.NAME]` says how).
pub async fn backup_between(
    ctx: &Context,
    name: &str,
    config: &ObjectsConfig,
    ends: &Ends,
    options: &BucketBackupOptions,
) -> Result<BucketBackupReport> {
    let started = Instant::now();
    let runs = list_bucket_runs(&ends.dest).await?;
    let previous = match runs.last() {
        Some(run) => read_index(&ends.dest, &index_key(&run.id), false).await?,
        None => futures::stream::empty().boxed(),
    };
    let listing = super::listing::list_parallel(&ends.source, config.checkers).await?;
    let steps = diff(previous, listing, "source listing");
    let id = super::new_run_id(options.now);
    let task = ctx.progress.start(&format!("objects `{name}`"), None);
    let result = copy_all(ctx, ends, config, &id, steps, &task).await;
    drop(task);
    let Pass {
        mut summary,
        failures,
        retired,
    } = result?;
    let complete = summary.failed == 0;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.requests = ends.requests();
    if options.dry_run {
        return Ok(BucketBackupReport {
            name: name.to_string(),
            run: None,
            dry_run: true,
            complete,
            summary,
            failures,
        });
    }
    let record = RunRecord {
        format: RUN_FORMAT,
        name: name.to_string(),
        id: id.clone(),
        source: config.source.url.to_string(),
        started: options.now,
        finished: options
            .now
            .checked_add(Duration::from_secs_f64(summary.seconds))
            .unwrap_or(options.now),
        complete,
        summary: summary.clone(),
        failures: failures.iter().take(FAILURES_KEPT).cloned().collect(),
        client_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("run records serialize");
    ends.dest.write(&record_key(&id), json).await?;
    // The retired list is closed after the record: a list without its run would let prune
    // remove versions that a later run still holds, while a run without its list only keeps
    // some history longer than needed.
    if let Err(e) = retired.finish().await {
        tracing::warn!("run `{id}` is recorded but its list of retired versions is not: they will not be pruned ({e})");
    }
    Ok(BucketBackupReport {
        name: name.to_string(),
        run: Some(id),
        dry_run: false,
        complete,
        summary,
        failures,
    })
}

/// What copying every object came to: the counts, the objects that failed, and the list of
/// the versions moved to history, still open (it is closed after the run's record).
struct Pass {
    summary: Summary,
    failures: Vec<Failure>,
    retired: Upload,
}

async fn copy_all(
    ctx: &Context,
    ends: &Ends,
    config: &ObjectsConfig,
    id: &str,
    steps: impl futures::Stream<Item = Result<Change>> + Send + 'static,
    task: &Task,
) -> Result<Pass> {
    let part_size = (config.part_size_mib as usize) << 20;
    let slots = Arc::new(Semaphore::new(config.transfers));
    let mut index = Upload::start(&ends.dest, &index_key(id), part_size).await?;
    let mut retired = Upload::start(&ends.dest, &retired_key(id), part_size).await?;
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    // Results leave in key order (the index is written sorted), so a slow copy holds back the
    // ones after it: the window of steps in flight is wide, so that sparse changes still copy
    // `transfers` at a time. A waiting step is a few hundred bytes.
    let window = (config.transfers * 4).max(STEP_WINDOW);
    let mut outcomes = steps
        .map(|step| {
            let slots = slots.clone();
            async move {
                let step = step?;
                Ok::<_, Error>(process(ends, config, id, step, &slots).await)
            }
        })
        .buffered(window)
        .boxed();
    let result: Result<()> = async {
        let mut last_note = Instant::now();
        loop {
            let Some(outcome) = next_or_stop(&mut outcomes, &ctx.cancel, "object backup").await?
            else {
                break;
            };
            let outcome = outcome?;
            match outcome.kind {
                ChangeKind::Same => summary.unchanged += 1,
                ChangeKind::Added => summary.added += 1,
                ChangeKind::Changed => summary.changed += 1,
                ChangeKind::Removed => summary.removed += 1,
            }
            if !matches!(outcome.kind, ChangeKind::Removed) {
                summary.scanned += 1;
            }
            if let Some(entry) = &outcome.index {
                summary.objects += 1;
                summary.bytes += entry.size;
                index.push(entry).await?;
            }
            if let Some(entry) = &outcome.retired {
                summary.to_history += 1;
                retired.push(entry).await?;
            }
            if let Some(bytes) = outcome.copied {
                summary.copied += 1;
                summary.copied_bytes += bytes;
                task.advance(bytes);
            }
            if let Some(failure) = outcome.failure {
                tracing::warn!("cannot copy `{}`: {}", failure.key, failure.error);
                summary.failed += 1;
                failures.push(failure);
            }
            if last_note.elapsed() >= Duration::from_millis(500) {
                last_note = Instant::now();
                task.note(&format!(
                    "{} objects listed, {} copied, {} failed",
                    summary.scanned, summary.copied, summary.failed
                ));
            }
        }
        Ok(())
    }
    .await;
    drop(outcomes);
    if let Err(e) = result {
        index.abort().await;
        retired.abort().await;
        return Err(e);
    }
    index.finish().await?;
    Ok(Pass {
        summary,
        failures,
        retired,
    })
}

/// Copies one object if it needs copying, retrying; never fails the run for one object.
async fn process(
    ends: &Ends,
    config: &ObjectsConfig,
    id: &str,
    step: Change,
    slots: &Semaphore,
) -> Outcome {
    let kind = if matches!(step, Change::Added(_)) {
        ChangeKind::Added
    } else {
        ChangeKind::Changed
    };
    let (old, new) = match step {
        Change::Same(old, _) => {
            return Outcome {
                kind: ChangeKind::Same,
                index: Some(old),
                retired: None,
                copied: None,
                failure: None,
            }
        }
        Change::Removed(old) => {
            return Outcome {
                kind: ChangeKind::Removed,
                index: None,
                retired: Some(old),
                copied: None,
                failure: None,
            }
        }
        Change::Added(new) => (None, new),
        Change::Changed(old, new) => (Some(old), new),
    };
    let _slot = slots.acquire().await.expect("semaphore never closes");
    match copy_with_retries(ends, config, id, &new).await {
        Ok(Some(bytes)) => Outcome {
            kind,
            index: Some(IndexEntry::new(new, id)),
            retired: old,
            copied: Some(bytes),
            failure: None,
        },
        // Deleted from the source since it was listed: as if it had not been listed.
        Ok(None) => Outcome {
            kind,
            index: None,
            retired: old,
            copied: None,
            failure: None,
        },
        Err(e) => Outcome {
            kind,
            // The previous version (if any) stays current; the next run tries again.
            index: old,
            retired: None,
            copied: None,
            failure: Some(Failure {
                key: new.key,
                error: e.to_string(),
            }),
        },
    }
}

async fn copy_with_retries(
    ends: &Ends,
    config: &ObjectsConfig,
    id: &str,
    object: &SourceObject,
) -> Result<Option<u64>> {
    let target = version_key(id, &object.key);
    let options = CopyOptions {
        size: object.size,
        etag: object.etag.clone(),
        storage_class: config.destination.storage_class.clone(),
        part_size: (config.part_size_mib as usize) << 20,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ends
            .dest
            .copy_from(&ends.source, &object.key, &target, &options)
            .await
        {
            Ok(copied) => return Ok(copied),
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!("copying `{}` failed (attempt {attempt}): {e}", object.key);
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
        }
    }
}

/// A compressed index streamed into the destination as it is produced.
struct Upload {
    writer: IndexWriter,
    out: Box<dyn crate::storage::Upload>,
    key: String,
}

impl Upload {
    async fn start(dest: &Storage, key: &str, part_size: usize) -> Result<Upload> {
        Ok(Upload {
            writer: IndexWriter::new()?,
            out: dest
                .upload(key, &UploadOptions::parts(part_size, 1))
                .await?,
            key: key.to_string(),
        })
    }

    async fn push(&mut self, entry: &IndexEntry) -> Result<()> {
        self.writer.push(entry)?;
        if let Some(bytes) = self.writer.take(INDEX_FLUSH) {
            self.out.write(bytes.into()).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        let writer = std::mem::replace(&mut self.writer, IndexWriter::new()?);
        let rest = writer.finish()?;
        self.out.write(rest.into()).await?;
        self.out.close().await
    }

    async fn abort(mut self) {
        if let Err(e) = self.out.abort().await {
            tracing::debug!("aborting the upload of `{}`: {e}", self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::Env;

    fn setup() -> (Context, Ends) {
        let config = Config::parse(
            "[objects.media]\n\
             [objects.media.source]\nurl = \"s3://media\"\n\
             [objects.media.destination]\nurl = \"s3://media-backup/yomira\"\n",
            std::path::Path::new("/etc/lifeboat/lifeboat.toml"),
        )
        .unwrap();
        let ctx = Context::new(config);
        let env = Env::default();
        let ends = Ends {
            source: Storage::memory("media", &env),
            dest: Storage::memory("media-backup", &env),
            env,
        };
        (ctx, ends)
    }

    async fn run(ctx: &Context, ends: &Ends, minute: u32) -> BucketBackupReport {
        let config = &ctx.config.objects["media"];
        let options = BucketBackupOptions {
            dry_run: false,
            now: format!("2026-11-01T02:{minute:02}:00Z").parse().unwrap(),
        };
        backup_between(ctx, "media", config, ends, &options)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn runs_copy_what_is_new_or_changed_and_keep_what_the_source_lost() {
        let (ctx, ends) = setup();
        for (key, body) in [
            ("a.jpg", "one"),
            ("covers/b.jpg", "two"),
            ("z.txt", "three"),
        ] {
            ends.source
                .write(key, body.as_bytes().to_vec())
                .await
                .unwrap();
        }
        let first = run(&ctx, &ends, 0).await;
        assert_eq!((first.summary.copied, first.summary.failed), (3, 0));
        let first_id = first.run.clone().unwrap();
        assert_eq!(
            ends.dest
                .read_opt(&version_key(&first_id, "covers/b.jpg"))
                .await
                .unwrap()
                .unwrap(),
            b"two"
        );

        let again = run(&ctx, &ends, 1).await;
        assert_eq!((again.summary.copied, again.summary.unchanged), (0, 3));

        ends.source
            .write("a.jpg", b"ONE, longer".to_vec())
            .await
            .unwrap();
        ends.source.delete("z.txt").await.unwrap();
        let third = run(&ctx, &ends, 2).await;
        let s = &third.summary;
        assert_eq!((s.copied, s.changed, s.removed, s.to_history), (1, 1, 1, 2));
        // The old bytes of a.jpg are still where the first run put them.
        assert_eq!(
            ends.dest
                .read_opt(&version_key(&first_id, "a.jpg"))
                .await
                .unwrap()
                .unwrap(),
            b"one"
        );
        let runs = list_bucket_runs(&ends.dest).await.unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.complete));
    }

    #[tokio::test]
    async fn a_dry_run_writes_nothing() {
        let (ctx, ends) = setup();
        ends.source.write("a.jpg", b"one".to_vec()).await.unwrap();
        let dry = Ends {
            source: ends.source.clone(),
            dest: Storage::layered(ends.dest.backend().clone(), None, &ends.env.dry()),
            env: ends.env.clone(),
        };
        let config = &ctx.config.objects["media"];
        let options = BucketBackupOptions {
            dry_run: true,
            now: "2026-11-01T02:00:00Z".parse().unwrap(),
        };
        let report = backup_between(&ctx, "media", config, &dry, &options)
            .await
            .unwrap();
        assert_eq!(report.summary.copied, 1);
        assert!(report.run.is_none());
        assert!(ends.dest.list("").await.unwrap().is_empty());
    }
}
