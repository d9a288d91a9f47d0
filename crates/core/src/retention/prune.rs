//! `prune`: the retention plan for the repository and every object backup, shown, then
//! carried out in an order that a cut-off prune never breaks.
//!
//! Order: a backup's manifest goes before its data (a listed backup always has its data);
//! WAL goes only below the oldest kept base backup; leftovers of unfinished backups (data
//! without a manifest) only when older than a day, so that a backup in progress is never
//! touched; promotions last (a copy of the data onto itself with the tier's storage class,
//! then the manifest says so).

use std::collections::{BTreeSet, HashSet};

use futures::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::buckets::history::{self, HistoryOutcome, HistoryPlan};
use crate::error::Result;
use crate::repository::manifest::Manifest;
use crate::repository::{DamagedManifest, Repository};
use crate::retention::held::{hold_locked, plan_locks, remove, Removed};
pub use crate::retention::held::{LockPlan, LockedPlan};
use crate::retention::{self, Decision, Item, Tier, WalPlan};
use crate::storage::LOCAL_STAGING_DIR;
use crate::{wal, Context};

/// Unfinished work younger than this is left alone: it may still be running.
const LEFTOVER_AGE_HOURS: i64 = 24;

#[derive(Debug, Serialize)]
pub struct PrunePlan {
    pub at: Timestamp,
    pub backups: Vec<Decision>,
    /// Each archive's plan: every generation of every cluster.
    pub wal: Vec<ArchivePlan>,
    /// Keys of data without a manifest, older than a day.
    pub leftovers: Vec<String>,
    /// Backups whose manifest cannot be read: kept with their data, unless `--force`.
    pub damaged: Vec<DamagedPlan>,
    pub objects: Vec<ObjectsPlan>,
    /// Backups retention lets go that a lock still holds: kept (and their WAL with them)
    /// until the lock ends.
    pub locked: Vec<LockedPlan>,
    /// Objects of kept backups whose lock is set or moved on (`object_lock`): after a
    /// promotion, a yearly dump's yearly renewal, or a lock that was never set.
    pub locks: Vec<LockPlan>,
}

/// The plan of one generation's WAL archive.
#[derive(Debug, Serialize)]
pub struct ArchivePlan {
    pub cluster: String,
    pub generation: u32,
    /// `generation 1 (PostgreSQL 15, system identifier …)`.
    pub describe: String,
    pub prefix: String,
    #[serde(flatten)]
    pub plan: WalPlan,
    /// The whole generation goes: a later one has a kept base backup, and no kept base backup
    /// needs this one.
    pub whole: bool,
}

#[derive(Debug, Serialize)]
pub struct DamagedPlan {
    #[serde(flatten)]
    pub manifest: DamagedManifest,
    /// Removed with its data (`--force`), else kept.
    pub delete: bool,
    /// Its data objects, found by its id.
    pub data: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ObjectsPlan {
    pub name: String,
    pub history_days: u32,
    pub plan: HistoryPlan,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneOutcome {
    pub backups_deleted: u64,
    pub promoted: u64,
    pub wal_deleted: u64,
    pub leftovers_deleted: u64,
    pub damaged_deleted: u64,
    pub objects: Vec<(String, HistoryOutcome)>,
    /// Backups, WAL files and leftovers a lock kept from being deleted.
    pub locked: u64,
    /// Objects whose lock was set or moved on.
    pub locks_set: u64,
    /// Objects the storage refused to delete (kept): the prune fails, naming them.
    pub refused: Vec<String>,
}

/// The series a backup competes in for keeping: its kind, database and dump options.
fn series(m: &Manifest) -> String {
    let mut s = format!("{} {}", m.kind.as_str(), m.database);
    if m.options.schema_only {
        s.push_str(" schema-only");
    }
    if !m.options.schemas.is_empty() {
        s.push_str(&format!(" schemas {}", m.options.schemas.join(",")));
    }
    s
}

fn item(m: &Manifest) -> Item {
    Item {
        id: m.id.clone(),
        kind: m.kind,
        series: series(m),
        started: m.started_at,
        finished: m.finished_at,
        tier: m.tier.as_deref().and_then(Tier::parse),
        first_wal: m.base.as_ref().map(|b| b.first_wal.clone()),
        parent: m.parent().map(str::to_string),
    }
}

/// Plans the prune as it would be at `at`; with `force`, damaged manifests and their data
/// are removed too.
pub async fn plan_prune(
    ctx: &Context,
    repo: &Repository,
    at: Timestamp,
    force: bool,
) -> Result<PrunePlan> {
    let policy = crate::retention::Policy::from(&ctx.config.retention);
    let catalog = repo.catalog().await?;
    let manifests = catalog.manifests;
    let items: Vec<Item> = manifests.iter().map(item).collect();
    let mut backups = retention::plan_backups(&items, &policy, at);
    let locked = hold_locked(repo, &manifests, &mut backups, at).await?;
    // A backup a lock keeps keeps its chain.
    retention::keep_chains(&items, &mut backups);
    let locks = match repo.hold() {
        Some(lock) => plan_locks(repo, lock, &manifests, &backups, at).await?,
        None => Vec::new(),
    };
    let wal = plan_archives(ctx, repo, &manifests, &items, &backups).await?;
    let data: Vec<String> = repo
        .storage()
        .list_stream(crate::repository::layout::Area::Data.dirname())
        .await?
        .map_ok(|e| e.path)
        .try_collect()
        .await?;
    let damaged: Vec<DamagedPlan> = catalog
        .damaged
        .into_iter()
        .map(|manifest| DamagedPlan {
            data: data
                .iter()
                .filter(|key| id_of_data(key) == Some(manifest.id.as_str()))
                .cloned()
                .collect(),
            manifest,
            delete: force,
        })
        .collect();
    let leftovers = leftovers(repo, &manifests, &damaged, &data, at).await?;
    let mut objects = Vec::new();
    for (name, config) in &ctx.config.objects {
        let dest = crate::storage::Storage::bucket(&config.destination, &ctx.storage_env())?;
        let plan = history::plan_for(&dest, config.history_days, at).await?;
        objects.push(ObjectsPlan {
            name: name.clone(),
            history_days: config.history_days,
            plan,
        });
    }
    Ok(PrunePlan {
        at,
        backups,
        wal,
        leftovers,
        damaged,
        objects,
        locked,
        locks,
    })
}

/// Each generation's WAL plan: below the oldest kept base backup of that generation goes; a
/// generation that no kept base backup needs goes whole once a later one has one.
async fn plan_archives(
    ctx: &Context,
    repo: &Repository,
    manifests: &[Manifest],
    items: &[Item],
    backups: &[Decision],
) -> Result<Vec<ArchivePlan>> {
    let kept = |m: &Manifest| backups.iter().any(|d| d.id == m.id && d.keep);
    let mut out = Vec::new();
    for (cluster, archives) in wal::cluster::every_archive(ctx, repo, manifests).await? {
        let mut later_kept = false;
        let mut plans = Vec::new();
        // Newest first: whether a later generation keeps a base backup.
        for archive in archives.iter().rev() {
            let names = wal::archived_names(archive).await?;
            let own: Vec<Item> = items
                .iter()
                .zip(manifests)
                .filter(|(_, m)| archive.holds(m))
                .map(|(i, _)| i.clone())
                .collect();
            let mut plan = retention::plan_wal(&own, backups, &names);
            let keeps = manifests.iter().any(|m| archive.holds(m) && kept(m));
            let whole = later_kept && !keeps && !names.is_empty();
            if whole {
                plan.delete = names;
                plan.kept = 0;
            }
            later_kept |= keeps;
            plans.push(ArchivePlan {
                cluster: cluster.clone(),
                generation: archive.generation.generation,
                describe: archive.generation.describe(),
                prefix: archive.prefix().to_string(),
                plan,
                whole,
            });
        }
        plans.reverse();
        out.extend(plans);
    }
    Ok(out)
}

/// The backup id a data key names (`data/db/<id>.dump.zst`).
fn id_of_data(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let id = name.split('.').next()?;
    crate::repository::manifest::is_backup_id(id).then_some(id)
}

/// Data files without a manifest whose id says they started over a day before `at` (never
/// those of a damaged manifest), and (in a local repository) staged files older than a day.
async fn leftovers(
    repo: &Repository,
    manifests: &[Manifest],
    damaged: &[DamagedPlan],
    data: &[String],
    at: Timestamp,
) -> Result<Vec<String>> {
    let known: HashSet<&str> = manifests.iter().flat_map(Manifest::objects).collect();
    let kept: HashSet<&str> = damaged.iter().map(|d| d.manifest.id.as_str()).collect();
    let cutoff = at
        .checked_sub(SignedDuration::from_hours(LEFTOVER_AGE_HOURS))
        .unwrap_or(Timestamp::MIN);
    let mut out = Vec::new();
    let storage = repo.storage();
    for key in data {
        if known.contains(key.as_str()) {
            continue;
        }
        let Some(id) = id_of_data(key) else { continue };
        if kept.contains(id) {
            continue;
        }
        if crate::repository::manifest::id_time(id).is_some_and(|t| t < cutoff) {
            out.push(key.clone());
        }
    }
    if storage.is_local() {
        let staged: Vec<_> = storage
            .list_stream(&format!("{LOCAL_STAGING_DIR}/"))
            .await?
            .try_collect()
            .await?;
        for entry in staged {
            if storage
                .modified(&entry.path)
                .await?
                .is_some_and(|t| t < cutoff)
            {
                out.push(entry.path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Carries out a plan.
pub async fn execute_prune(
    ctx: &Context,
    repo: &Repository,
    plan: &PrunePlan,
) -> Result<PruneOutcome> {
    // Nothing is deleted by a run whose lock was taken over.
    repo.check_run_lock().await?;
    let mut outcome = PruneOutcome::default();
    let manifests = repo.list().await?;
    delete_backups(repo, plan, &manifests, &mut outcome).await?;
    delete_wal(repo, plan, &mut outcome).await?;
    delete_leftovers(repo, plan, &mut outcome).await?;
    delete_damaged(repo, plan, &mut outcome).await?;
    for decision in &plan.backups {
        let Some(tier) = decision.promote else {
            continue;
        };
        let Some(manifest) = manifests.iter().find(|m| m.id == decision.id) else {
            continue;
        };
        promote(ctx, repo, manifest, tier).await?;
        outcome.promoted += 1;
    }
    outcome.locked += plan.locked.len() as u64;
    set_holds(repo, plan, &mut outcome).await?;
    expire_bucket_history(ctx, repo, plan, &mut outcome).await?;
    if let Some(first) = outcome.refused.first() {
        return Err(crate::error::Error::Incomplete(format!(
            "prune did the rest, but the storage refused to delete {} objects, which are kept (`{}`{}): an R2 bucket lock rule longer than retention (check them with `lifeboat lifecycle --check-locks`), or a key without the right to delete",
            outcome.refused.len(),
            repo.storage().display(first),
            if outcome.refused.len() > 1 { ", ..." } else { "" }
        )));
    }
    Ok(outcome)
}

/// The backups the plan lets go: each manifest first (a backup whose manifest is kept keeps
/// its data too), then its data.
async fn delete_backups(
    repo: &Repository,
    plan: &PrunePlan,
    manifests: &[Manifest],
    outcome: &mut PruneOutcome,
) -> Result<()> {
    let storage = repo.storage();
    // Newest first: a chain goes from its newest end, so a prune stopped half-way never leaves
    // an incremental without the backup it is built on.
    for decision in plan.backups.iter().rev().filter(|d| !d.keep) {
        let Some(manifest) = manifests.iter().find(|m| m.id == decision.id) else {
            continue;
        };
        let manifest_key = crate::repository::layout::manifest(&manifest.id);
        match remove(repo, &manifest_key).await? {
            Removed::Deleted => {}
            Removed::Locked(until) => {
                tracing::warn!(
                    "backup `{}` is locked until {until}: kept until then",
                    manifest.id
                );
                outcome.locked += 1;
                continue;
            }
            Removed::Refused => {
                outcome.refused.push(manifest_key);
                continue;
            }
        }
        for key in manifest.objects() {
            match remove(repo, key).await? {
                Removed::Deleted => {}
                Removed::Locked(until) => tracing::warn!(
                    "`{}` is locked until {until}: it goes with the first prune after that",
                    storage.display(key)
                ),
                Removed::Refused => outcome.refused.push(key.to_string()),
            }
        }
        tracing::info!(
            "deleted backup `{}`: {}",
            manifest.id,
            decision.reasons.join("; ")
        );
        outcome.backups_deleted += 1;
    }
    Ok(())
}

/// The WAL no kept base backup needs, archive by archive.
async fn delete_wal(repo: &Repository, plan: &PrunePlan, outcome: &mut PruneOutcome) -> Result<()> {
    for archive in &plan.wal {
        delete_archived(repo, archive, outcome).await?;
    }
    Ok(())
}

async fn delete_archived(
    repo: &Repository,
    archive: &ArchivePlan,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    if archive.plan.delete.is_empty() {
        return Ok(());
    }
    let doomed: BTreeSet<&str> = archive.plan.delete.iter().map(String::as_str).collect();
    let entries: Vec<_> = repo
        .storage()
        .list_stream(&archive.prefix)
        .await?
        .try_collect()
        .await?;
    let mut locked: Option<(u64, Timestamp)> = None;
    for entry in entries {
        if wal::name_of_key(&archive.prefix, &entry.path).is_some_and(|n| doomed.contains(n)) {
            match remove(repo, &entry.path).await? {
                Removed::Deleted => outcome.wal_deleted += 1,
                Removed::Locked(until) => {
                    let (count, last) = locked.get_or_insert((0, until));
                    *count += 1;
                    *last = (*last).max(until);
                }
                Removed::Refused => outcome.refused.push(entry.path.clone()),
            }
        }
    }
    if let Some((count, last)) = locked {
        tracing::warn!("{count} WAL files are locked (the last until {last}): kept until then");
        outcome.locked += count;
    }
    Ok(())
}

/// What killed backups left without a manifest, over a day old.
async fn delete_leftovers(
    repo: &Repository,
    plan: &PrunePlan,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    for path in &plan.leftovers {
        match remove(repo, path).await? {
            Removed::Deleted => outcome.leftovers_deleted += 1,
            Removed::Locked(until) => {
                tracing::warn!("leftover `{path}` is locked until {until}: kept until then");
                outcome.locked += 1;
            }
            Removed::Refused => outcome.refused.push(path.clone()),
        }
    }
    Ok(())
}

/// Backups whose manifest is damaged, with `--force` only.
async fn delete_damaged(
    repo: &Repository,
    plan: &PrunePlan,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    for damaged in plan.damaged.iter().filter(|d| d.delete) {
        repo.check_run_lock().await?;
        let manifest = crate::repository::layout::manifest(&damaged.manifest.id);
        match remove(repo, &manifest).await? {
            Removed::Deleted => {}
            Removed::Locked(until) => {
                tracing::warn!(
                    "backup `{}` (damaged manifest) is locked until {until}: kept until then",
                    damaged.manifest.id
                );
                outcome.locked += 1;
                continue;
            }
            Removed::Refused => {
                outcome.refused.push(manifest);
                continue;
            }
        }
        for key in &damaged.data {
            if let Removed::Refused = remove(repo, key).await? {
                outcome.refused.push(key.clone());
            }
        }
        tracing::info!(
            "removed backup `{}`, whose manifest was damaged (`--force`)",
            damaged.manifest.id
        );
        outcome.damaged_deleted += 1;
    }
    Ok(())
}

/// The Object Lock holds kept backups need (after a promotion, a yearly dump's renewal, or a
/// hold never set), and the marker's.
async fn set_holds(repo: &Repository, plan: &PrunePlan, outcome: &mut PruneOutcome) -> Result<()> {
    let Some(hold) = repo.hold() else {
        return Ok(());
    };
    for planned in &plan.locks {
        for key in &planned.keys {
            repo.storage()
                .backend()
                .set_hold(key, hold.mode, planned.until)
                .await?;
            outcome.locks_set += 1;
        }
        tracing::info!("backup `{}` is locked until {}", planned.id, planned.until);
    }
    repo.renew_marker_hold(plan.at).await
}

/// Each bucket backup's history past its window, the way the repository goes: for real, or
/// as a dry run.
async fn expire_bucket_history(
    ctx: &Context,
    repo: &Repository,
    plan: &PrunePlan,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    let env = if repo.storage().backend().info().dry_run {
        ctx.storage_env().dry()
    } else {
        ctx.storage_env()
    };
    for objects in &plan.objects {
        let config = &ctx.config.objects[&objects.name];
        let dest = crate::storage::Storage::bucket(&config.destination, &env)?;
        let done = history::execute(&dest, &objects.plan, plan.at, config.checkers).await?;
        outcome.objects.push((objects.name.clone(), done));
    }
    Ok(())
}

/// Moves a backup's data to its tier's storage class (S3 repositories) and records the tier.
async fn promote(ctx: &Context, repo: &Repository, manifest: &Manifest, tier: Tier) -> Result<()> {
    let retention = &ctx.config.retention;
    let class = match tier {
        Tier::Yearly => retention.yearly_class.clone(),
        Tier::Monthly => retention.monthly_class.clone(),
        Tier::Daily => None,
    };
    let mut updated = manifest.clone();
    let storage = repo.storage();
    if let (false, Some(class)) = (storage.is_local(), &class) {
        storage.set_class(&manifest.data, class).await?;
        updated.storage_class = Some(class.clone());
    }
    updated.tier = Some(tier.as_str().to_string());
    repo.storage()
        .write(
            &crate::repository::layout::manifest(&manifest.id),
            updated.to_json(),
        )
        .await?;
    tracing::info!(
        "backup `{}` is kept as a {} backup{}",
        manifest.id,
        tier.as_str(),
        class.map(|c| format!(", now in `{c}`")).unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::repository::manifest::BackupKind;
    use crate::storage::{Env, Storage};

    fn dump(id: &str) -> Manifest {
        let t: Timestamp = crate::repository::manifest::id_time(id).unwrap();
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "kind": "db", "database": "main", "dbname": "yomira",
            "options": {"schema_only": false, "schemas": []},
            "server_version": "15", "client_version": "15",
            "started_at": t, "finished_at": t,
            "data": crate::repository::layout::data(BackupKind::Db, id, false),
            "raw_size": 3, "stored_size": 3, "sha256": "x",
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": null, "storage_class": null, "tool_version": "0",
            "tables": []
        }))
        .unwrap();
        m.id = id.to_string();
        m
    }

    #[tokio::test]
    async fn a_plan_is_carried_out_on_storage_data_after_manifests() {
        let ctx = crate::Context::new(Config::default());
        let repo = Repository::init_on(Storage::memory("repo", &Env::default()))
            .await
            .unwrap();
        // Daily dumps through January and February; a leftover without a manifest.
        let mut ids = Vec::new();
        for day in 1..=28 {
            for month in [1, 2] {
                ids.push(format!(
                    "2026{month:02}{day:02}T020000Z-00{month}{}",
                    day % 10
                ));
            }
        }
        for id in &ids {
            let m = dump(id);
            repo.storage()
                .write(&m.data, b"abc".to_vec())
                .await
                .unwrap();
            repo.commit(&m).await.unwrap();
        }
        repo.storage()
            .write("data/db/20260101T030000Z-dead.dump.zst", b"x".to_vec())
            .await
            .unwrap();
        let at: Timestamp = "2026-03-10T00:00:00Z".parse().unwrap();
        let plan = plan_prune(&ctx, &repo, at, false).await.unwrap();
        let deleted: Vec<&str> = plan
            .backups
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.id.as_str())
            .collect();
        // Kept: February from the 8th (30 days), and the first of each month.
        assert!(!deleted.contains(&"20260101T020000Z-0011"), "{deleted:?}");
        assert!(!deleted.contains(&"20260201T020000Z-0021"), "{deleted:?}");
        assert!(deleted.contains(&"20260115T020000Z-0015"));
        assert!(!deleted.contains(&"20260220T020000Z-0020"));
        assert_eq!(plan.leftovers, ["data/db/20260101T030000Z-dead.dump.zst"]);
        let done = execute_prune(&ctx, &repo, &plan).await.unwrap();
        assert_eq!(done.backups_deleted, deleted.len() as u64);
        let left = repo.list().await.unwrap();
        assert_eq!(left.len(), ids.len() - deleted.len());
        // No listed backup lost its data; no deleted one kept any.
        for m in &left {
            assert!(repo.storage().exists(&m.data).await.unwrap(), "{}", m.id);
        }
        for id in deleted {
            let data = crate::repository::layout::data(BackupKind::Db, id, false);
            assert!(!repo.storage().exists(&data).await.unwrap(), "{id}");
        }
        assert!(!repo
            .storage()
            .exists("data/db/20260101T030000Z-dead.dump.zst")
            .await
            .unwrap());
    }
}
