//! The cluster a repository's WAL archive belongs to: the system identifier that `initdb`
//! gave it, which every segment's first page carries. The first push records it (created
//! atomically, so two servers starting together cannot both record theirs); every push then
//! refuses segments of another cluster, every fetch refuses to hand one over, and a base
//! backup of another cluster is refused.
//! The spool keeps a copy, so that a push does not read it from storage each time.

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::Repository;

/// Where the archive's cluster is recorded.
pub fn key() -> String {
    crate::repository::layout::wal_cluster()
}

const CACHE: &str = "cluster-id";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recorded {
    /// A string: JSON numbers lose the low digits of a 64-bit identifier in many readers.
    system_identifier: String,
    recorded_at: Timestamp,
    recorded_by: String,
}

/// The system identifier recorded for the archive, if any.
pub async fn recorded(repo: &Repository) -> Result<Option<u64>> {
    Ok(read(repo).await?.map(|(id, _)| id))
}

async fn read(repo: &Repository) -> Result<Option<(u64, Recorded)>> {
    let Some(bytes) = repo.storage().read_opt(&key()).await? else {
        return Ok(None);
    };
    let damaged = || {
        Error::Damaged {
        what: format!("`{}`", repo.storage().display(&key())),
        problem: "damaged: it should name the cluster the archive belongs to; restore it from a copy, or remove it to let the next push record it again".into(),
    }
    };
    let recorded: Recorded = serde_json::from_slice(&bytes).map_err(|_| damaged())?;
    let id = recorded.system_identifier.parse().map_err(|_| damaged())?;
    Ok(Some((id, recorded)))
}

/// Checks that `system_id` is the archive's cluster, recording it when none is yet; `what`
/// names the file or backup in the error, `by` what records it. With `spool`, a match is
/// remembered there.
pub async fn check_or_record(
    repo: &Repository,
    spool: Option<&Path>,
    system_id: u64,
    what: &str,
    by: &str,
) -> Result<()> {
    if cached(spool) == Some(system_id) {
        return Ok(());
    }
    let recorded = match read(repo).await? {
        Some(found) => found,
        None => {
            let mine = Recorded {
                system_identifier: system_id.to_string(),
                recorded_at: Timestamp::now(),
                recorded_by: by.to_string(),
            };
            let json = serde_json::to_vec_pretty(&mine).expect("records serialize");
            if repo.storage().write_new(&key(), json).await? {
                tracing::info!(
                    "the WAL archive of `{}` now belongs to the cluster with system identifier {system_id}",
                    repo.location()
                );
                remember(spool, system_id);
                return Ok(());
            }
            read(repo).await?.ok_or_else(|| {
                Error::Missing(format!(
                    "`{}` vanished while it was being recorded: try again",
                    repo.storage().display(&key())
                ))
            })?
        }
    };
    let (archived, record) = recorded;
    if archived != system_id {
        return Err(foreign(repo, what, system_id, archived, &record));
    }
    remember(spool, system_id);
    Ok(())
}

fn foreign(
    repo: &Repository,
    what: &str,
    system_id: u64,
    archived: u64,
    record: &Recorded,
) -> Error {
    Error::ForeignCluster {
        what: what.to_string(),
        system_id,
        archived,
        location: repo.location().to_string(),
        recorded_by: format!(
            "{} at {}",
            record.recorded_by,
            record.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
    }
}

/// Checks that `system_id` is the archive's cluster when one is recorded (a base backup:
/// recording is left to the first push, made by the user the server runs as, so that a
/// local archive's folders are created by that user).
pub async fn check_recorded(repo: &Repository, system_id: u64, what: &str) -> Result<()> {
    match read(repo).await? {
        Some((archived, record)) if archived != system_id => {
            Err(foreign(repo, what, system_id, archived, &record))
        }
        _ => Ok(()),
    }
}

/// Checks a fetched segment's system identifier against the archive's, when one is recorded.
pub async fn check_fetched(
    repo: &Repository,
    spool: Option<&Path>,
    system_id: u64,
    name: &str,
) -> Result<()> {
    if cached(spool) == Some(system_id) {
        return Ok(());
    }
    match recorded(repo).await? {
        Some(archived) if archived != system_id => Err(Error::DamagedWal {
            name: name.to_string(),
            detail: format!(
                "it comes from the cluster with system identifier {system_id}, but the archive is the cluster's with system identifier {archived}"
            ),
        }),
        Some(archived) => {
            remember(spool, archived);
            Ok(())
        }
        None => Ok(()),
    }
}

fn cached(spool: Option<&Path>) -> Option<u64> {
    std::fs::read_to_string(spool?.join(CACHE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn remember(spool: Option<&Path>, system_id: u64) {
    if let Some(spool) = spool {
        if let Err(e) = super::spool::write_atomically(
            &spool.join(CACHE),
            system_id.to_string().as_bytes(),
            false,
        ) {
            tracing::debug!(error = %e, "cannot remember the archive's cluster");
        }
    }
}
