//! Object storage backup: a bucket copied into another bucket, keeping what the source lost
//! for `history_days`, and restored as it was at any run.
//!
//! Layout of the destination, below its prefix:
//! - `v/<run>/<key>`: an object's bytes as first copied by run `<run>`; never rewritten, so an
//!   overwrite or a delete in the source cannot reach a copy already made.
//! - `runs/<run>.index.zst`: what the source held at that run, one JSON line per object, sorted
//!   by key, naming the version that holds its bytes.
//! - `runs/<run>.retired.zst`: the versions this run found deleted or overwritten in the source
//!   (history: kept for `history_days`, then removed by prune).
//! - `runs/<run>.json`: the record of the run, written last; a run without it never happened.
//!
//! A run compares the source listing with the previous run's index (two sorted streams), so
//! an unchanged object costs nothing but its share of a listing page.

pub mod history;
pub mod index;
pub mod listing;
mod restore;
mod run;

use futures::stream::BoxStream;
use futures::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use restore::{restore_bucket, BucketRestoreOptions, BucketRestoreReport};
pub use run::{backup_between, backup_bucket, BucketBackupOptions, BucketBackupReport};

use crate::error::{Error, Result};
use crate::storage::{RequestCounts, Storage};
use index::IndexEntry;

pub const RUN_FORMAT: u32 = 1;
const RUNS: &str = "runs/";

/// What one run did, as stored in `runs/<run>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Objects listed in the source.
    pub scanned: u64,
    pub unchanged: u64,
    pub added: u64,
    pub changed: u64,
    /// Objects gone from the source since the previous run (kept in history).
    pub removed: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Versions moved to history: changed plus removed.
    pub to_history: u64,
    pub failed: u64,
    /// What the run's index holds.
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub requests: RequestCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub key: String,
    pub error: String,
}

/// The record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub name: String,
    pub id: String,
    pub source: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// Every object was copied; `false` when some failed (their previous versions, if any,
    /// stay in the index and the next run tries them again).
    pub complete: bool,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    pub client_version: String,
}

fn record_key(id: &str) -> String {
    format!("{RUNS}{id}.json")
}

fn index_key(id: &str) -> String {
    format!("{RUNS}{id}.index.zst")
}

fn retired_key(id: &str) -> String {
    format!("{RUNS}{id}.retired.zst")
}

/// A new run id: the UTC start time to the millisecond (so that ids sort as runs happened,
/// even several a second) and a short random suffix.
/// The next item of `items`, or `Interrupted` (`what` stopped) as soon as a stop is asked for.
async fn next_or_stop<T>(
    items: &mut (impl futures::Stream<Item = T> + Unpin),
    cancel: &tokio_util::sync::CancellationToken,
    what: &str,
) -> Result<Option<T>> {
    use futures::StreamExt;
    tokio::select! {
        next = items.next() => Ok(next),
        () = cancel.cancelled() => Err(Error::Interrupted(format!("{what} stopped"))),
    }
}

pub fn new_run_id(started: Timestamp) -> String {
    let suffix: u16 = rand::random();
    format!("{}Z-{suffix:04x}", started.strftime("%Y%m%dT%H%M%S%3f"))
}

/// Every recorded run in a destination, oldest first.
pub async fn list_bucket_runs(dest: &Storage) -> Result<Vec<RunRecord>> {
    let listed = dest.list(RUNS).await?;
    let mut runs = Vec::new();
    for entry in listed {
        if !entry.path.ends_with(".json") {
            continue;
        }
        let Some(bytes) = dest.read_opt(&entry.path).await? else {
            continue;
        };
        let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
            what: format!("run record `{}`", dest.display(&entry.path)),
            problem: format!("unreadable: {e}"),
        })?;
        runs.push(record);
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runs)
}

/// Streams a stored index (or retired list); empty when `key` does not exist and `missing_ok`.
async fn read_index(
    dest: &Storage,
    key: &str,
    missing_ok: bool,
) -> Result<BoxStream<'static, Result<IndexEntry>>> {
    let display = dest.display(key);
    let mut bytes = match dest.download(key).await {
        Ok(stream) => stream,
        Err(e) if missing_ok && e.is_not_found() => {
            return Ok(futures::stream::empty().boxed());
        }
        Err(e) => return Err(e),
    };
    let (byte_tx, byte_rx) = tokio::sync::mpsc::channel(4);
    let (entry_tx, entry_rx) = tokio::sync::mpsc::channel::<Result<IndexEntry>>(256);
    tokio::spawn(async move {
        while let Some(chunk) = bytes.next().await {
            if byte_tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let reader = crate::pipeline::ChannelReader::new(byte_rx);
        match index::read_entries(reader, &display) {
            Ok(entries) => {
                for entry in entries {
                    if entry_tx.blocking_send(entry).is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = entry_tx.blocking_send(Err(e));
            }
        }
    });
    Ok(receiver_stream(entry_rx))
}

/// The items of a channel, as a stream.
pub(crate) fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Both ends of an object backup, sharing one request count.
pub struct Ends {
    pub source: Storage,
    pub dest: Storage,
    pub env: crate::storage::Env,
}

impl Ends {
    pub fn open(config: &crate::config::ObjectsConfig, env: &crate::storage::Env) -> Result<Ends> {
        Ok(Ends {
            source: Storage::bucket(&config.source, env)?,
            dest: Storage::bucket(&config.destination, env)?,
            env: env.clone(),
        })
    }

    /// Requests sent so far by both ends.
    pub fn requests(&self) -> RequestCounts {
        self.env.requests.counts()
    }
}
