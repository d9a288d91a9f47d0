//! The queue of WAL that PostgreSQL waits to archive (`pg_wal/archive_status/*.ready`), and
//! the limit on it that keeps a storage outage from filling `pg_wal` (`[wal] queue_max_mib`,
//! pgBackRest's `archive-push-queue-max`).
//!
//! While `wal-push` fails, PostgreSQL keeps every segment; hours of outage fill the disk and
//! the database stops. Past the limit, `wal-push` reports the oldest segment archived without
//! storing it, so that PostgreSQL removes it: the server keeps running, and the archive has a
//! gap from that segment until the next base backup. The gap is never silent: a record in a
//! local journal at once (the storage is likely down), copied into the repository at
//! `wal/dropped/NAME.json` as soon as the storage answers (by this push if it can, else by
//! the next push that succeeds), an error in PostgreSQL's log, a notification (sent by the
//! caller), and `status` breached until a base backup starts after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::spool::spool_base;
use super::WalName;
use crate::error::{Error, Result};
use crate::repository::layout;
use crate::repository::Repository;
use crate::Context;

/// How long a dropping push spends trying to record the gap in the repository and notify.
const RECORD_WAIT: Duration = Duration::from_secs(10);

/// What waits to be archived beside a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub segments: u64,
    pub bytes: u64,
}

impl Queue {
    /// The ready files of the `pg_wal` that `path` (a file in it) is in, and their sizes.
    pub fn of(path: &Path) -> Queue {
        let Some(wal_dir) = path.parent() else {
            return Queue::default();
        };
        let Ok(entries) = std::fs::read_dir(wal_dir.join("archive_status")) else {
            return Queue::default();
        };
        let mut queue = Queue::default();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| n.strip_suffix(".ready")) else {
                continue;
            };
            queue.segments += 1;
            queue.bytes += std::fs::metadata(wal_dir.join(name)).map_or(0, |m| m.len());
        }
        queue
    }

    /// Whether a push of `name` must let PostgreSQL drop it: it is a segment (never a history
    /// file), and more than `max_mib` waits.
    pub fn over(&self, name: &str, max_mib: Option<u64>) -> Option<u64> {
        let max = max_mib? * 1024 * 1024;
        let segment = matches!(WalName::parse(name), Some(WalName::Segment { .. }));
        (segment && self.bytes > max).then_some(max)
    }
}

/// A segment PostgreSQL dropped because the queue passed its limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dropped {
    pub name: String,
    pub at: Timestamp,
    pub queue_segments: u64,
    pub queue_bytes: u64,
    pub queue_max_bytes: u64,
    pub host: String,
}

impl Dropped {
    /// One line for logs, notifications and `status`.
    pub fn describe(&self) -> String {
        format!(
            "wal-push let PostgreSQL drop `{}` unarchived at {} ({} segments, {} waited, more than `[wal] queue_max_mib` {}): point-in-time recovery is broken from that segment until the next base backup",
            self.name,
            self.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            self.queue_segments,
            crate::units::human_bytes(self.queue_bytes),
            self.queue_max_bytes / (1024 * 1024)
        )
    }
}

/// The local journal of dropped segments not yet recorded in the repository (made by the
/// first drop).
fn journal(ctx: &Context) -> Result<PathBuf> {
    Ok(spool_base(ctx)?.0.join("dropped"))
}

/// Lets PostgreSQL drop segment `name`: journals the gap (durably, before PostgreSQL is told),
/// says it in PostgreSQL's log, and, within [`RECORD_WAIT`], records it in the repository.
/// Returns the record (for the caller's notification) once PostgreSQL may remove the segment.
pub async fn drop_segment(ctx: &Context, name: &str, queue: Queue, max: u64) -> Result<Dropped> {
    let dropped = Dropped {
        name: name.to_string(),
        at: Timestamp::now(),
        queue_segments: queue.segments,
        queue_bytes: queue.bytes,
        queue_max_bytes: max,
        host: crate::process::host_name(),
    };
    let json = serde_json::to_vec_pretty(&dropped).expect("records serialize");
    let dir = journal(ctx)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating `{}`", dir.display()), e))?;
    super::spool::write_atomically(&dir.join(format!("{name}.json")), &json, true)?;
    tracing::error!("{}", dropped.describe());
    let record = async {
        let repo = Repository::open(ctx).await?;
        flush(ctx, &repo).await
    };
    match tokio::time::timeout(RECORD_WAIT, record).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            "the gap is journalled locally; the next push that reaches the repository records it there: {e}"
        ),
        Err(_) => tracing::warn!(
            "the storage did not answer: the gap is journalled locally; the next push that reaches the repository records it there"
        ),
    }
    Ok(dropped)
}

/// Copies the journalled gaps into the repository, each removed from the journal once there.
pub async fn flush(ctx: &Context, repo: &Repository) -> Result<()> {
    let dir = journal(ctx)?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?;
        repo.storage()
            .write(&layout::wal_dropped(name), bytes)
            .await?;
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// Every dropped segment recorded in the repository, oldest first.
pub async fn list_dropped(repo: &Repository) -> Result<Vec<Dropped>> {
    let prefix = layout::wal_dropped("");
    let prefix = prefix.trim_end_matches(".json");
    let mut out: Vec<Dropped> = repo
        .storage()
        .read_records(prefix, "record of a dropped segment")
        .await?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_what_is_ready_and_only_segments_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path();
        std::fs::create_dir(wal.join("archive_status")).unwrap();
        for (name, ready) in [
            ("000000010000000000000001", false),
            ("000000010000000000000002", true),
            ("000000010000000000000003", true),
        ] {
            std::fs::write(wal.join(name), vec![0u8; 1024 * 1024]).unwrap();
            let status = if ready { "ready" } else { "done" };
            std::fs::write(wal.join(format!("archive_status/{name}.{status}")), b"").unwrap();
        }
        let queue = Queue::of(&wal.join("000000010000000000000002"));
        assert_eq!(
            queue,
            Queue {
                segments: 2,
                bytes: 2 * 1024 * 1024
            }
        );
        assert_eq!(queue.over("000000010000000000000002", None), None);
        assert_eq!(queue.over("000000010000000000000002", Some(2)), None);
        assert_eq!(
            queue.over("000000010000000000000002", Some(1)),
            Some(1024 * 1024)
        );
        assert_eq!(queue.over("00000002.history", Some(1)), None);
    }
}
