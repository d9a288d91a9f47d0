//! Copies of the repository in another account or region (`[repository.copies.NAME]`): what
//! `lifeboat copy` and the `copy` step send there. Only committed backups are copied (a data
//! object without a manifest is unfinished), each object is read back from the copy and its
//! hash checked against the manifest, the WAL archive follows, and each backup's manifest is
//! written last, so that the copy lists only backups it holds whole. Then the copy is pruned
//! with its own retention.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::repository::layout::Area;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::storage::backend::CopyOptions;
use crate::storage::Storage;
use crate::Context;

/// Bytes per part when an object streams through this machine into the copy, unless the
/// copy's `part_size_mib` says otherwise.
const PART_SIZE: usize = 16 << 20;
/// WAL objects copied at once (each held in memory: at most a segment).
const WAL_AT_ONCE: usize = 4;

/// One stored object a backup needs, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// A backup to copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedBackup {
    pub id: String,
    pub kind: BackupKind,
    pub objects: Vec<Object>,
}

/// What a copy lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyPlan {
    /// Committed backups of the repository the copy does not have, oldest first.
    pub backups: Vec<PlannedBackup>,
    /// Backups the copy has already.
    pub present: usize,
    /// WAL archive keys the copy lacks, and their bytes.
    pub wal: Vec<String>,
    pub wal_bytes: u64,
}

impl CopyPlan {
    pub fn bytes(&self) -> u64 {
        self.backups
            .iter()
            .flat_map(|b| &b.objects)
            .map(|o| o.size)
            .sum::<u64>()
            + self.wal_bytes
    }
}

/// What one copy got.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub copy: String,
    pub location: String,
    pub dry_run: bool,
    pub plan: CopyPlan,
    pub backups_copied: Vec<String>,
    pub wal_copied: usize,
    pub bytes_copied: u64,
    /// Backups or WAL files that could not be copied, and why (the next run tries again).
    pub failed: Vec<String>,
    /// What the copy's retention removed.
    pub pruned: Option<String>,
}

/// Plans what the copy lacks: pure, from both listings.
pub fn plan_copy(
    manifests: &[Manifest],
    in_copy: &HashSet<String>,
    wal: &[crate::storage::Entry],
    wal_in_copy: &HashSet<String>,
) -> CopyPlan {
    let mut out = CopyPlan::default();
    for m in manifests {
        if in_copy.contains(&m.id) {
            out.present += 1;
            continue;
        }
        let objects = m
            .stored_objects()
            .into_iter()
            .map(|(key, size, sha256)| Object {
                key: key.to_string(),
                size,
                sha256: sha256.to_string(),
            })
            .collect();
        out.backups.push(PlannedBackup {
            id: m.id.clone(),
            kind: m.kind,
            objects,
        });
    }
    for entry in wal {
        let name = entry.path.rsplit('/').next().unwrap_or_default();
        // The last refusal of wal-push is the primary's own business.
        if name == "refused.json" || wal_in_copy.contains(&entry.path) {
            continue;
        }
        out.wal.push(entry.path.clone());
        out.wal_bytes += entry.size;
    }
    out
}

/// Copies what copy `name` lacks into it (only shows it with `dry_run`), then prunes it.
pub async fn copy_repository(
    ctx: &Context,
    primary: &Repository,
    name: &str,
    dry_run: bool,
) -> Result<CopyReport> {
    let copy_ctx = ctx.with_config(ctx.config.for_copy(name)?);
    let env = if dry_run {
        copy_ctx.storage_env().dry()
    } else {
        copy_ctx.storage_env()
    };
    let target = match Repository::open_in(&copy_ctx, &env).await {
        Ok(repo) => repo,
        Err(Error::NotARepository { .. }) if !dry_run => {
            let repo = Repository::init_in(&copy_ctx, &env).await?;
            tracing::info!(
                copy = name,
                "marked `{}` as a copy of the repository",
                repo.location()
            );
            repo
        }
        Err(Error::NotARepository { .. }) => {
            // A dry run of a first copy: everything is missing.
            let manifests = primary.list().await?;
            let wal = primary.storage().list(Area::Wal.dirname()).await?;
            let plan = plan_copy(&manifests, &HashSet::new(), &wal, &HashSet::new());
            return Ok(CopyReport {
                copy: name.to_string(),
                location: copy_ctx.config.repository.url.to_string(),
                dry_run,
                plan,
                ..Default::default()
            });
        }
        Err(e) => return Err(e),
    };
    if dry_run {
        // Nothing is written: no lock to take (as `prune --dry-run`).
        return copy_locked(&copy_ctx, primary, &target, name, true).await;
    }
    crate::repository::lock::with_run_lock(&copy_ctx, &target, "copy", async |locked| {
        copy_locked(locked, primary, &target, name, false).await
    })
    .await
}

async fn copy_locked(
    ctx: &Context,
    primary: &Repository,
    target: &Repository,
    name: &str,
    dry_run: bool,
) -> Result<CopyReport> {
    let manifests = primary.list().await?;
    let wal = primary.storage().list(Area::Wal.dirname()).await?;
    let plan = what_to_copy(target, &manifests, &wal).await?;
    let mut report = CopyReport {
        copy: name.to_string(),
        location: target.location().to_string(),
        dry_run,
        plan: plan.clone(),
        ..Default::default()
    };
    tracing::info!(
        copy = name,
        "{} {} backups and {} WAL files ({}) to `{}`; {} there already",
        if dry_run { "would copy" } else { "copying" },
        plan.backups.len(),
        plan.wal.len(),
        crate::units::human_bytes(plan.bytes()),
        target.location(),
        plan.present
    );
    if dry_run {
        return Ok(report);
    }
    // Data first, each object checked by hash once in the copy; then the WAL archive (a base
    // backup in the copy needs its WAL there); manifests last: a backup is in the copy once
    // all of it is.
    let whole = copy_data(ctx, primary, target, name, &plan, &mut report).await?;
    copy_records(primary, target).await?;
    copy_wal(ctx, primary, target, &plan, &wal, &mut report).await?;
    for (backup, class) in whole {
        let Some(manifest) = manifests.iter().find(|m| m.id == backup.id) else {
            continue;
        };
        let mut manifest = manifest.clone();
        manifest.storage_class = class;
        target.commit(&manifest).await?;
        report.backups_copied.push(backup.id.clone());
    }
    // The copy keeps its own retention.
    let retention_at = jiff::Timestamp::now();
    let pruning = crate::retention::prune::plan_prune(ctx, target, retention_at, false).await?;
    let done = crate::retention::prune::execute_prune(ctx, target, &pruning).await?;
    report.pruned = Some(format!(
        "{} backups deleted, {} promoted, {} WAL files and {} leftovers removed",
        done.backups_deleted, done.promoted, done.wal_deleted, done.leftovers_deleted
    ));
    tracing::info!(
        copy = name,
        "copied {} backups and {} WAL files ({}) to `{}`{}",
        report.backups_copied.len(),
        report.wal_copied,
        crate::units::human_bytes(report.bytes_copied),
        target.location(),
        if report.failed.is_empty() {
            String::new()
        } else {
            format!("; {} failed", report.failed.len())
        }
    );
    if !report.failed.is_empty() {
        return Err(Error::Incomplete(format!(
            "copy `{name}`: {} of {} backups and {} WAL files copied; failed: {} (the next run tries again)",
            report.backups_copied.len(),
            plan.backups.len(),
            report.wal_copied,
            report.failed.join("; ")
        )));
    }
    Ok(report)
}

/// What the copy lacks: the committed backups and the WAL files it has not got.
async fn what_to_copy(
    target: &Repository,
    manifests: &[Manifest],
    wal: &[crate::storage::Entry],
) -> Result<CopyPlan> {
    let in_copy: HashSet<String> = target
        .catalog()
        .await?
        .manifests
        .into_iter()
        .map(|m| m.id)
        .collect();
    let wal_in_copy: HashSet<String> = target
        .storage()
        .list(Area::Wal.dirname())
        .await?
        .into_iter()
        .map(|e| e.path)
        .collect();
    Ok(plan_copy(manifests, &in_copy, wal, &wal_in_copy))
}

/// Each planned backup's data, in its storage class there; the backups copied whole, with
/// their class. A backup that fails is reported and left out; a stop ends it all.
async fn copy_data<'p>(
    ctx: &Context,
    primary: &Repository,
    target: &Repository,
    name: &str,
    plan: &'p CopyPlan,
    report: &mut CopyReport,
) -> Result<Vec<(&'p PlannedBackup, Option<String>)>> {
    let classes = &ctx.config.repository.storage_class;
    let part_size = ctx
        .config
        .repository
        .part_size_mib
        .map_or(PART_SIZE, |mib| (mib as usize) << 20);
    let mut whole = Vec::new();
    for backup in &plan.backups {
        let class = match backup.kind {
            BackupKind::Db | BackupKind::Redis => classes.db.clone(),
            BackupKind::Base => classes.base.clone(),
        };
        match copy_backup(
            primary.storage(),
            target.storage(),
            backup,
            class.clone(),
            part_size,
        )
        .await
        {
            Ok(bytes) => {
                report.bytes_copied += bytes;
                whole.push((backup, class));
            }
            Err(e) if ctx.cancel.is_cancelled() => return Err(e),
            Err(e) => {
                tracing::warn!(copy = name, backup = %backup.id, error = %e, "not copied");
                report.failed.push(format!("backup `{}`: {e}", backup.id));
            }
        }
    }
    Ok(whole)
}

/// The planned WAL files, a few at once, each held (`object_lock`) from when it was pushed,
/// as in the repository.
/// The clusters' records of their generations, as the primary has them now (`upgrade` adds
/// generations: a record is replaced, never merged), before the WAL they place and the prune
/// that reads them.
async fn copy_records(primary: &Repository, target: &Repository) -> Result<()> {
    for entry in primary.storage().list(Area::Clusters.dirname()).await? {
        let Some(bytes) = primary.storage().read_opt(&entry.path).await? else {
            continue;
        };
        if target.storage().read_opt(&entry.path).await?.as_deref() != Some(&bytes[..]) {
            target.storage().write(&entry.path, bytes).await?;
        }
    }
    Ok(())
}

async fn copy_wal(
    ctx: &Context,
    primary: &Repository,
    target: &Repository,
    plan: &CopyPlan,
    wal: &[crate::storage::Entry],
    report: &mut CopyReport,
) -> Result<()> {
    let pushed: std::collections::HashMap<&str, jiff::Timestamp> = wal
        .iter()
        .filter_map(|e| Some((e.path.as_str(), e.modified?)))
        .collect();
    let wal_results: Vec<(String, Result<u64>)> = futures::stream::iter(plan.wal.iter())
        .map(|key| {
            let pushed = pushed.get(key.as_str()).copied();
            async move {
                let copied = copy_small(primary.storage(), target.storage(), key).await;
                let held = match (&copied, target.hold()) {
                    (Ok(_), Some(hold)) => {
                        let until = hold.wal(pushed.unwrap_or_else(jiff::Timestamp::now));
                        target.hold_new(&[key], until).await
                    }
                    _ => Ok(()),
                };
                (key.clone(), held.and(copied))
            }
        })
        .buffer_unordered(WAL_AT_ONCE)
        .collect()
        .await;
    for (key, result) in wal_results {
        match result {
            Ok(bytes) => {
                report.wal_copied += 1;
                report.bytes_copied += bytes;
            }
            Err(e) if ctx.cancel.is_cancelled() => return Err(e),
            Err(e) => report.failed.push(format!("`{key}`: {e}")),
        }
    }
    Ok(())
}

/// Copies a backup's objects and checks each in the copy; a failure removes what it copied.
async fn copy_backup(
    from: &Storage,
    to: &Storage,
    backup: &PlannedBackup,
    storage_class: Option<String>,
    part_size: usize,
) -> Result<u64> {
    let mut bytes = 0;
    for object in &backup.objects {
        let copied = copy_checked(from, to, object, storage_class.clone(), part_size).await;
        if let Err(e) = copied {
            for done in &backup.objects {
                let _ = to.without_cancel().delete(&done.key).await;
            }
            return Err(e);
        }
        bytes += object.size;
    }
    Ok(bytes)
}

async fn copy_checked(
    from: &Storage,
    to: &Storage,
    object: &Object,
    storage_class: Option<String>,
    part_size: usize,
) -> Result<()> {
    let options = CopyOptions {
        size: object.size,
        etag: None,
        storage_class,
        part_size,
    };
    if to
        .copy_from(from, &object.key, &object.key, &options)
        .await?
        .is_none()
    {
        return Err(Error::Missing(format!(
            "`{}` is missing from the repository",
            from.display(&object.key)
        )));
    }
    let (size, sha256) = stored_hash(to, &object.key).await?;
    if size != object.size || sha256 != object.sha256 {
        return Err(Error::Integrity {
            id: to.display(&object.key),
            detail: format!(
                "the copy holds {size} bytes with sha256 {sha256}, the manifest says {} bytes with sha256 {}",
                object.size, object.sha256
            ),
        });
    }
    Ok(())
}

/// The size and sha256 of a stored object, read whole.
pub async fn stored_hash(storage: &Storage, key: &str) -> Result<(u64, String)> {
    let mut body = storage.download(key).await?;
    let mut hashing = crate::pipeline::HashingWriter::new(std::io::sink());
    while let Some(chunk) = body.try_next().await? {
        std::io::Write::write_all(&mut hashing, &chunk)
            .map_err(|e| Error::io("hashing the copy", e))?;
    }
    let (_, size, sha256) = hashing.finish();
    Ok((size, sha256))
}

/// Copies a small object (a WAL file) through memory and checks it in the copy against what
/// was read.
async fn copy_small(from: &Storage, to: &Storage, key: &str) -> Result<u64> {
    let bytes = from.read_opt(key).await?.ok_or_else(|| {
        Error::Missing(format!(
            "`{}` vanished from the repository",
            from.display(key)
        ))
    })?;
    let expected = crate::pipeline::sha256_hex(&bytes);
    let size = bytes.len() as u64;
    to.write(key, bytes).await?;
    let (copied_size, sha256) = stored_hash(to, key).await?;
    if copied_size != size || sha256 != expected {
        let _ = to.without_cancel().delete(key).await;
        return Err(Error::Integrity {
            id: to.display(key),
            detail: format!("the copy holds {copied_size} bytes with sha256 {sha256}, the repository {size} bytes with sha256 {expected}"),
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, globals: bool) -> Manifest {
        let text = format!(
            r#"{{"format":1,"id":"{id}","kind":"db","database":"yomira","dbname":"yomira",
            "options":{{"schema_only":false,"schemas":[]}},"server_version":"15","client_version":"15",
            "started_at":"2026-12-01T02:00:00Z","finished_at":"2026-12-01T02:01:00Z",
            "data":"data/db/{id}.dump.zst","raw_size":100,"stored_size":40,"sha256":"ab",
            "compression":{{"algorithm":"zstd","level":3}},"encryption":null,"storage_class":null,
            "tool_version":"x","tables":[]{}}}"#,
            if globals {
                format!(
                    r#","globals":{{"key":"data/db/{id}.globals.sql.zst","stored_size":7,"sha256":"cd","role_passwords":true,
                    "database":{{"owner":"o","encoding":"UTF8","collate":"C","ctype":"C","settings":[]}}}}"#
                )
            } else {
                String::new()
            }
        );
        Manifest::from_json(text.as_bytes(), "test").unwrap()
    }

    fn entry(path: &str, size: u64) -> crate::storage::Entry {
        crate::storage::Entry {
            path: path.into(),
            size,
            etag: None,
            modified: None,
        }
    }

    #[test]
    fn the_plan_is_what_the_copy_lacks_manifests_by_id_and_wal_by_key() {
        let a = "20261201T020000Z-aaaa";
        let b = "20261202T020000Z-bbbb";
        let manifests = [manifest(a, false), manifest(b, true)];
        let in_copy = HashSet::from([a.to_string()]);
        let wal = [
            entry("wal/000000010000000000000001.zst", 10),
            entry("wal/000000010000000000000002.zst", 20),
            entry("wal/cluster.json", 3),
            entry("wal/refused.json", 4),
        ];
        let wal_in_copy = HashSet::from(["wal/000000010000000000000001.zst".to_string()]);
        let plan = plan_copy(&manifests, &in_copy, &wal, &wal_in_copy);
        assert_eq!(plan.present, 1);
        assert_eq!(plan.backups.len(), 1);
        assert_eq!(plan.backups[0].id, b);
        let keys: Vec<&str> = plan.backups[0]
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                format!("data/db/{b}.dump.zst"),
                format!("data/db/{b}.globals.sql.zst")
            ]
        );
        assert_eq!(
            plan.wal,
            ["wal/000000010000000000000002.zst", "wal/cluster.json"]
        );
        assert_eq!(plan.wal_bytes, 23);
        assert_eq!(plan.bytes(), 40 + 7 + 23);
    }

    #[test]
    fn an_incremental_goes_with_its_chain_and_each_backup_manifest() {
        let base = |id: &str, parent: Option<&str>| -> Manifest {
            serde_json::from_value(serde_json::json!({
                "format": 1, "id": id, "kind": "base", "database": "main", "dbname": "yomira",
                "options": {"schema_only": false, "schemas": []},
                "server_version": "17", "client_version": "17",
                "started_at": "2026-12-01T02:00:00Z", "finished_at": "2026-12-01T02:01:00Z",
                "data": format!("data/base/{id}.tar.zst"), "raw_size": 9, "stored_size": 5, "sha256": "ab",
                "compression": {"algorithm": "zstd", "level": 3}, "encryption": null,
                "storage_class": null, "tool_version": "x", "tables": [],
                "base": {"start_lsn": "0/1", "end_lsn": "0/2", "timeline": 1, "first_wal": "a",
                         "last_wal": "a", "wal_segment_size": 16777216, "parent": parent},
                "backup_manifest": {"key": format!("data/base/{id}.backup_manifest.zst"),
                                    "stored_size": 2, "sha256": "cd"},
            }))
            .unwrap()
        };
        let (full, one) = ("20261201T020000Z-aaaa", "20261202T020000Z-bbbb");
        let manifests = [base(full, None), base(one, Some(full))];
        let plan = plan_copy(&manifests, &HashSet::new(), &[], &HashSet::new());
        let copied: Vec<(&str, Vec<&str>)> = plan
            .backups
            .iter()
            .map(|b| {
                (
                    b.id.as_str(),
                    b.objects.iter().map(|o| o.key.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            copied,
            [
                (
                    full,
                    vec![
                        "data/base/20261201T020000Z-aaaa.tar.zst",
                        "data/base/20261201T020000Z-aaaa.backup_manifest.zst"
                    ]
                ),
                (
                    one,
                    vec![
                        "data/base/20261202T020000Z-bbbb.tar.zst",
                        "data/base/20261202T020000Z-bbbb.backup_manifest.zst"
                    ]
                ),
            ]
        );
        assert_eq!(plan.bytes(), 2 * (5 + 2));
    }
}
