//! Object Lock in `prune`: which backups a lock still holds (kept, with their WAL, and
//! reported), which locks kept backups need (after a promotion, a yearly dump's renewal, or
//! a lock never set), and deletions for good that meet a lock (kept, not failed).

use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result, StorageFailure};
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::retention::{Decision, Tier};

#[derive(Debug, Serialize)]
pub struct LockedPlan {
    pub id: String,
    /// The latest lock among its objects.
    pub until: Timestamp,
}

#[derive(Debug, Serialize)]
pub struct LockPlan {
    pub id: String,
    pub until: Timestamp,
    /// Its objects (the manifest last).
    pub keys: Vec<String>,
}

/// Every key of a backup: its objects, then its manifest.
fn keys_of(m: &Manifest) -> Vec<String> {
    m.objects()
        .into_iter()
        .map(str::to_string)
        .chain(std::iter::once(crate::repository::layout::manifest(&m.id)))
        .collect()
}

/// Backups to delete that an object lock still holds (S3 Object Lock, found from each
/// object's HEAD) are kept instead, saying until when: deleting them would fail, or leave
/// a backup in pieces.
pub(super) async fn hold_locked(
    repo: &Repository,
    manifests: &[Manifest],
    backups: &mut [Decision],
    at: Timestamp,
) -> Result<Vec<LockedPlan>> {
    let mut locked = Vec::new();
    if repo.storage().is_local() {
        return Ok(locked);
    }
    let backend = repo.storage().backend();
    for decision in backups.iter_mut().filter(|d| !d.keep) {
        let Some(manifest) = manifests.iter().find(|m| m.id == decision.id) else {
            continue;
        };
        let mut until: Option<Timestamp> = None;
        for key in keys_of(manifest) {
            if let Some(r) = backend.hold(&key).await? {
                if r.until > at {
                    until = until.max(Some(r.until));
                }
            }
        }
        if let Some(until) = until {
            decision.keep = true;
            decision.promote = None;
            decision.reasons = vec![format!(
                "retention lets it go, but it is locked until {until}"
            )];
            locked.push(LockedPlan {
                id: decision.id.clone(),
                until,
            });
        }
    }
    Ok(locked)
}

/// The locks kept backups need: each object locked until its tier's date (after this
/// prune's promotions); a promoted backup's manifest, rewritten, always.
pub(super) async fn plan_locks(
    repo: &Repository,
    lock: &crate::repository::hold::Hold,
    manifests: &[Manifest],
    backups: &[Decision],
    at: Timestamp,
) -> Result<Vec<LockPlan>> {
    let backend = repo.storage().backend();
    let mut out = Vec::new();
    for decision in backups.iter().filter(|d| d.keep) {
        let Some(m) = manifests.iter().find(|m| m.id == decision.id) else {
            continue;
        };
        let tier = decision
            .promote
            .or_else(|| m.tier.as_deref().and_then(Tier::parse));
        let until = lock.backup(m.kind, m.started_at, m.finished_at, tier, at);
        // A lock that would already have ended protects nothing (and S3 refuses it).
        if until.date <= at.max(Timestamp::now()) {
            continue;
        }
        let manifest_key = crate::repository::layout::manifest(&m.id);
        let mut keys = Vec::new();
        for key in keys_of(m) {
            let rewritten = decision.promote.is_some() && key == manifest_key;
            if rewritten || until.extends(backend.hold(&key).await?.map(|r| r.until)) {
                keys.push(key);
            }
        }
        if !keys.is_empty() {
            out.push(LockPlan {
                id: m.id.clone(),
                until: until.date,
                keys,
            });
        }
    }
    Ok(out)
}

/// What became of a deletion.
pub(super) enum Removed {
    Deleted,
    /// An Object Lock holds it until then.
    Locked(Timestamp),
    /// The storage refused it (403) for a reason it does not give: an R2 bucket lock rule,
    /// or a key without the right to delete.
    Refused,
}

/// Deletes an object for good (every version, where the bucket keeps versions).
pub(super) async fn remove(repo: &Repository, key: &str) -> Result<Removed> {
    let storage = repo.storage();
    let deleted = if repo.hold().is_none() {
        storage.delete(key).await.map(|()| Removed::Deleted)
    } else {
        storage
            .backend()
            .delete_versions(key)
            .await
            .map(|deletion| match deletion {
                crate::storage::backend::Deletion::Deleted => Removed::Deleted,
                crate::storage::backend::Deletion::Locked { until } => Removed::Locked(until),
            })
    };
    match deleted {
        Err(Error::Storage {
            kind: StorageFailure::Denied,
            message,
            ..
        }) => {
            tracing::warn!("deleting `{}` was refused: {message}", storage.display(key));
            Ok(Removed::Refused)
        }
        other => other,
    }
}
