//! The repository: a storage with lifeboat's marker, its catalog of manifests, the commit of
//! a backup, and the run lock. Where each thing lives is [`layout`]'s; what a backup is,
//! [`manifest`]'s; the keys that open encrypted backups, [`keys`]'.

pub mod hold;
pub mod keys;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod verifications;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};
use crate::repository::manifest::{BackupKind, Manifest};
use crate::storage::Storage;

use layout::{Area, MARKER};

pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
    created_at: jiff::Timestamp,
    created_by: String,
}

#[derive(Debug)]
pub struct Repository {
    storage: Storage,
    /// When `init` marked the location: with it, one repository is told from another that
    /// was later created at the same location.
    created_at: jiff::Timestamp,
    /// The run lock this process holds (its id) and what to stop if it is found taken over:
    /// every commit checks it first.
    held_lock: std::sync::Mutex<Option<(String, tokio_util::sync::CancellationToken)>>,
    /// S3 Object Lock: how what is committed here is held (`object_lock`), if at all.
    hold: Option<hold::Hold>,
}

/// Every manifest of a repository.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The readable ones, oldest first.
    pub manifests: Vec<Manifest>,
    /// The ones that cannot be read, by id.
    pub damaged: Vec<DamagedManifest>,
}

/// A manifest that cannot be read: never taken for a backup, never deleted by `prune`
/// without `--force`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedManifest {
    /// The backup id its name gives.
    pub id: String,
    /// Where it is.
    pub manifest: String,
    pub reason: String,
}

impl DamagedManifest {
    pub fn describe(&self) -> String {
        format!(
            "manifest of backup `{}` is damaged: `{}` is {}",
            self.id, self.manifest, self.reason
        )
    }
}

/// Which backup a command means.
#[derive(Debug, Clone, Default)]
pub struct Selector<'a> {
    /// A full id, a unique prefix of one, or `latest`.
    pub id: &'a str,
    pub kind: Option<BackupKind>,
    pub database: Option<&'a str>,
}

impl Repository {
    /// Marks the configured location as a repository; refuses one that already is.
    pub async fn init(ctx: &crate::Context) -> Result<Repository> {
        Self::init_in(ctx, &ctx.storage_env()).await
    }

    /// Opens the configured repository; a location without the marker is refused.
    pub async fn open(ctx: &crate::Context) -> Result<Repository> {
        Self::open_in(ctx, &ctx.storage_env()).await
    }

    /// Opens the configured repository through `env` (a dry run's), with its Object Lock.
    pub async fn open_in(ctx: &crate::Context, env: &crate::storage::Env) -> Result<Repository> {
        let repo = Self::open_at(&ctx.config.repository, env).await?;
        Ok(repo.holding(hold::Hold::from_config(&ctx.config)))
    }

    /// Marks the configured location as a repository through `env`; with Object Lock
    /// configured, the bucket must have it, and the marker is locked.
    pub async fn init_in(ctx: &crate::Context, env: &crate::storage::Env) -> Result<Repository> {
        let lock = hold::Hold::from_config(&ctx.config);
        let storage = Storage::open(&ctx.config.repository, true, env)?;
        if lock.is_some() && !storage.backend().hold_enabled().await? {
            return Err(Error::Config(format!(
                "`object_lock` is set but bucket `{}` has no Object Lock: create the bucket with it enabled (`aws s3api create-bucket --object-lock-enabled-for-bucket`), or remove `object_lock`",
                storage.location()
            )));
        }
        let repo = Self::init_on(storage).await?.holding(lock);
        repo.renew_marker_hold(jiff::Timestamp::now()).await?;
        Ok(repo)
    }

    /// Locks what is committed from now on (`None`: nothing).
    pub fn holding(mut self, lock: Option<hold::Hold>) -> Repository {
        self.hold = lock;
        self
    }

    /// How what is committed here is locked, if it is.
    pub fn hold(&self) -> Option<&hold::Hold> {
        self.hold.as_ref()
    }

    /// Locks `keys` (just written) until `until`, when the repository locks; a date already
    /// past locks nothing (a copy of an old backup, or of an old WAL file).
    pub async fn hold_new(&self, keys: &[&str], until: hold::Until) -> Result<()> {
        let Some(lock) = &self.hold else {
            return Ok(());
        };
        if until.date <= jiff::Timestamp::now() {
            return Ok(());
        }
        for key in keys {
            self.storage
                .backend()
                .set_hold(key, lock.mode, until.date)
                .await?;
        }
        Ok(())
    }

    /// Locks `keys` until `until` where they are not locked that long yet.
    pub async fn hold_at_least(&self, keys: &[&str], until: hold::Until) -> Result<()> {
        let Some(lock) = &self.hold else {
            return Ok(());
        };
        let backend = self.storage.backend();
        for key in keys {
            let current = backend.hold(key).await?.map(|r| r.until);
            if until.extends(current) && backend.stat(key).await?.is_some() {
                backend.set_hold(key, lock.mode, until.date).await?;
            }
        }
        Ok(())
    }

    /// Keeps the marker locked (a year on, renewed monthly), when the repository locks.
    pub async fn renew_marker_hold(&self, at: jiff::Timestamp) -> Result<()> {
        self.hold_at_least(&[MARKER], hold::Until::rolling(at))
            .await
    }

    /// Marks `storage` as a repository, without Object Lock (the drill's scratch folder; unit
    /// tests hand in memory).
    pub async fn init_on(storage: Storage) -> Result<Repository> {
        let marker = Marker {
            format: FORMAT,
            created_at: jiff::Timestamp::now(),
            created_by: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        };
        let body = serde_json::to_vec_pretty(&marker).expect("marker serializes");
        if !storage.write_new(MARKER, body).await? {
            let existing = Self::read_marker(&storage).await?;
            return Err(Error::AlreadyARepository {
                location: storage.location().to_string(),
                format: existing.map_or(0, |m| m.format),
            });
        }
        Ok(Repository {
            storage,
            created_at: marker.created_at,
            held_lock: Default::default(),
            hold: None,
        })
    }

    /// Opens the repository at `config` (without its Object Lock); a location without the
    /// marker is refused.
    async fn open_at(config: &RepositoryConfig, env: &crate::storage::Env) -> Result<Repository> {
        let storage = Storage::open(config, false, env)?;
        match Self::read_marker(&storage).await? {
            None => Err(Error::NotARepository {
                location: storage.location().to_string(),
            }),
            Some(marker) if marker.format > FORMAT => Err(Error::NotReady(format!(
                "repository `{}` has format {}, this lifeboat handles up to {FORMAT}: upgrade lifeboat",
                storage.location(),
                marker.format
            ))),
            Some(marker) => Ok(Repository {
                storage,
                created_at: marker.created_at,
                held_lock: Default::default(),
                hold: None,
            }),
        }
    }

    async fn read_marker(storage: &Storage) -> Result<Option<Marker>> {
        let Some(bytes) = storage.read_opt(MARKER).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Damaged {
                what: format!("repository marker `{}`", storage.display(MARKER)),
                problem: format!("damaged: {e}"),
            })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn location(&self) -> &str {
        self.storage.location()
    }

    /// This repository, told apart from any other, even one created later at its location.
    pub fn instance(&self) -> String {
        format!("{} {}", self.location(), self.created_at)
    }

    /// Every finished backup whose manifest is readable, oldest first (a damaged manifest is
    /// left out, with a warning: [`Repository::catalog`] lists those too).
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let catalog = self.catalog().await?;
        for damaged in &catalog.damaged {
            tracing::warn!("{}", damaged.describe());
        }
        Ok(catalog.manifests)
    }

    /// Every manifest: the readable ones, oldest first, and the damaged ones, which stop
    /// nothing that does not need them. A manifest that cannot be read from storage at all is
    /// an error.
    pub async fn catalog(&self) -> Result<Catalog> {
        self.catalog_of("").await
    }

    /// [`Repository::catalog`] of the backups whose id starts with `prefix`: only their
    /// manifests are read.
    async fn catalog_of(&self, prefix: &str) -> Result<Catalog> {
        let dir = Area::Manifests.dirname();
        let entries = self.storage.list(dir).await?;
        let storage = &self.storage;
        let read: Vec<(String, std::result::Result<Manifest, String>)> =
            futures::stream::iter(entries)
                .filter(|e| {
                    let id = e.path.strip_prefix(dir).unwrap_or(&e.path);
                    futures::future::ready(e.path.ends_with(".json") && id.starts_with(prefix))
                })
                .map(|entry| async move {
                    let bytes = storage.read_opt(&entry.path).await?.ok_or_else(|| {
                        Error::Missing(format!(
                            "manifest `{}` vanished while listing: was a prune running? try again",
                            storage.display(&entry.path)
                        ))
                    })?;
                    Ok::<_, Error>((entry.path.clone(), Manifest::parse(&bytes)))
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
        let mut catalog = Catalog::default();
        for (path, parsed) in read {
            let id = path
                .strip_prefix(Area::Manifests.dirname())
                .and_then(|name| name.strip_suffix(".json"))
                .unwrap_or(&path)
                .to_string();
            match parsed {
                Ok(manifest) if manifest.id == id => catalog.manifests.push(manifest),
                Ok(manifest) => catalog.damaged.push(DamagedManifest {
                    id,
                    manifest: storage.display(&path),
                    reason: format!("it describes backup `{}`", manifest.id),
                }),
                Err(reason) => catalog.damaged.push(DamagedManifest {
                    id,
                    manifest: storage.display(&path),
                    reason,
                }),
            }
        }
        // By start: ids name only the second, and two backups can start within one.
        catalog
            .manifests
            .sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        catalog.damaged.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(catalog)
    }

    /// Finds one backup by id, unique id prefix, or `latest` (the newest readable one).
    pub async fn find(&self, selector: &Selector<'_>) -> Result<Manifest> {
        let not_found = || Error::BackupNotFound {
            id: selector.id.to_string(),
            location: self.location().to_string(),
        };
        // An id (or its start) names the manifests to read; `latest` needs them all.
        let prefix = if selector.id == "latest" {
            ""
        } else {
            selector.id
        };
        let catalog = self.catalog_of(prefix).await?;
        let candidates: Vec<Manifest> = catalog
            .manifests
            .into_iter()
            .filter(|m| selector.kind.is_none_or(|k| m.kind == k))
            .filter(|m| selector.database.is_none_or(|d| m.database == d))
            .collect();
        if selector.id == "latest" {
            let latest = candidates.into_iter().next_back().ok_or_else(not_found)?;
            for damaged in catalog.damaged.iter().filter(|d| d.id > latest.id) {
                tracing::warn!("{}; using `{}`", damaged.describe(), latest.id);
            }
            return Ok(latest);
        }
        if selector.id.is_empty() {
            return Err(not_found());
        }
        let mut matching: Vec<Manifest> = candidates
            .into_iter()
            .filter(|m| m.id.starts_with(selector.id))
            .collect();
        let damaged: Vec<&DamagedManifest> = catalog
            .damaged
            .iter()
            .filter(|d| d.id.starts_with(selector.id))
            .collect();
        match (matching.len(), damaged.as_slice()) {
            (0, [one]) => Err(Error::Integrity {
                id: one.id.clone(),
                detail: format!("its manifest `{}` is {}", one.manifest, one.reason),
            }),
            (0, []) => Err(not_found()),
            (1, []) => Ok(matching.remove(0)),
            (n, d) => Err(Error::Usage(format!(
                "backup id `{}` is ambiguous: {} backups start with it, give more of the id",
                selector.id,
                n + d.len()
            ))),
        }
    }

    /// Ends a backup: commits its manifest if it was prepared and no stop was asked for;
    /// otherwise, or if the commit fails, removes its data so that nothing unfinished stays.
    pub async fn finish_backup(
        &self,
        data: &[&str],
        prepared: Result<Manifest>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Manifest> {
        let committed = match prepared {
            Ok(_) if cancel.is_cancelled() => Err(Error::Interrupted(
                "backup stopped before its commit".into(),
            )),
            Ok(manifest) => self.commit(&manifest).await.map(|()| manifest),
            Err(e) => Err(e),
        };
        if committed.is_err() {
            // Cleaning up is not stopped by the stop request that may have caused it.
            for key in data {
                if let Err(e) = self.storage.without_cancel().delete(key).await {
                    tracing::warn!(path = %key, error = %e, "could not remove the data of a failed backup");
                }
            }
        }
        committed
    }

    /// Takes the run lock for `job` (waiting as `ctx` allows) and makes every later commit
    /// first check that it is still this run's; `lost` is cancelled when it is not.
    pub async fn lock(
        &self,
        ctx: &crate::Context,
        job: &str,
        lost: tokio_util::sync::CancellationToken,
    ) -> Result<lock::RunLock> {
        let lock = lock::RunLock::acquire(
            &self.storage,
            lock::LockRequest {
                job,
                wait: ctx.lock_wait,
                stale_minutes: ctx.config.daemon.lock_stale_minutes,
                cancel: ctx.cancel.clone(),
                lost: lost.clone(),
            },
        )
        .await?;
        self.hold_lock(lock.id(), lost);
        Ok(lock)
    }

    /// Makes every later commit first check that run lock `id` is still this process's;
    /// `lost` is cancelled when it is not.
    fn hold_lock(&self, id: &str, lost: tokio_util::sync::CancellationToken) {
        *self.held_lock.lock().expect("lock state poisoned") = Some((id.to_string(), lost));
    }

    /// Checks the run lock this process holds, if any, before something is committed.
    pub async fn check_run_lock(&self) -> Result<()> {
        let held = self.held_lock.lock().expect("lock state poisoned").clone();
        if let Some((id, lost)) = held {
            if let Err(e) = lock::check_held(&self.storage, &id).await {
                if matches!(e, Error::LockLost { .. }) {
                    lost.cancel();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Commits a backup by writing its manifest; never replaces an existing one. With Object
    /// Lock, its data is locked first (a backup whose data cannot be locked is not
    /// committed), and the manifest after (a failure there is left to `prune` to mend:
    /// the backup is committed).
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        self.check_run_lock().await?;
        // A copy's manifest carries the tier the repository kept it for.
        let until = self.hold.as_ref().map(|lock| {
            lock.backup(
                manifest.kind,
                manifest.started_at,
                manifest.finished_at,
                manifest.tier.as_deref().and_then(hold::Tier::parse),
                jiff::Timestamp::now(),
            )
        });
        if let Some(until) = until {
            let data: Vec<&str> = manifest.objects();
            self.hold_new(&data, until).await?;
            // An incremental is worth nothing without its chain: each backup it is built on
            // stays locked at least as long.
            let mut parent = manifest.parent().map(str::to_string);
            while let Some(id) = parent {
                let path = layout::manifest(&id);
                let Some(bytes) = self.storage.read_opt(&path).await? else {
                    break;
                };
                let link = Manifest::from_json(&bytes, &self.storage.display(&path))?;
                let mut keys = link.objects();
                keys.push(&path);
                self.hold_at_least(&keys, until).await?;
                parent = link.parent().map(str::to_string);
            }
        }
        let path = layout::manifest(&manifest.id);
        if self.storage.write_new(&path, manifest.to_json()).await? {
            if let Some(until) = until {
                if let Err(e) = self.hold_new(&[&path], until).await {
                    tracing::warn!("backup `{}` is committed but its manifest is not locked yet (prune will lock it): {e}", manifest.id);
                }
            }
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "manifest `{}` already exists: backup ids must be unique",
                self.storage.display(&path)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Env, Storage};

    fn dump(id: &str, started: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "kind": "db", "database": "main", "dbname": "yomira",
            "options": {"schema_only": false, "schemas": []},
            "server_version": "15", "client_version": "15",
            "started_at": started, "finished_at": started,
            "data": layout::data(BackupKind::Db, id, false),
            "raw_size": 3, "stored_size": 3, "sha256": "x",
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": null, "storage_class": null, "tool_version": "0",
            "tables": []
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn backups_started_within_one_second_list_in_the_order_they_started() {
        let repo = Repository::init_on(Storage::memory("repo", &Env::default()))
            .await
            .unwrap();
        // The later one's random suffix sorts first.
        let earlier = dump("20261202T053341Z-f000", "2026-12-02T05:33:41.100Z");
        let later = dump("20261202T053341Z-0001", "2026-12-02T05:33:41.900Z");
        for m in [&later, &earlier] {
            repo.commit(m).await.unwrap();
        }
        let ids: Vec<String> = repo
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [earlier.id.clone(), later.id.clone()]);
        let latest = repo
            .find(&Selector {
                id: "latest",
                ..Selector::default()
            })
            .await
            .unwrap();
        assert_eq!(latest.id, later.id);
    }
}
