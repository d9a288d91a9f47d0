//! The repository: its layout on storage, its marker, and its manifests.
//!
//! Layout (relative to the repository root):
//! - `lifeboat.json`: the marker written by `init` (format version); nothing else is touched
//!   in a location that lacks it.
//! - `data/db/<id>.dump.zst[.age]`: stored data of logical dumps.
//! - `data/base/<id>.tar.zst[.age]`: stored data of base backups (pg_basebackup tar).
//! - `wal/<name>.zst[.age]`: the WAL archive.
//! - `manifests/<id>.json`: one per finished backup, written after its data: the commit.
//!
//! A data object without a manifest is an unfinished backup: never listed, cleaned up.

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};
use crate::manifest::{BackupKind, Manifest};
use crate::storage::Storage;

pub const MARKER: &str = "lifeboat.json";
pub const FORMAT: u32 = 1;
pub const MANIFESTS: &str = "manifests/";

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
    /// Marks a location as a repository; refuses one that already is.
    pub async fn init(config: &RepositoryConfig) -> Result<Repository> {
        let storage = Storage::open(config, true)?;
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
        })
    }

    /// Opens an existing repository; a location without the marker is refused.
    pub async fn open(config: &RepositoryConfig) -> Result<Repository> {
        let storage = Storage::open(config, false)?;
        match Self::read_marker(&storage).await? {
            None => Err(Error::NotARepository {
                location: storage.location().to_string(),
            }),
            Some(marker) if marker.format > FORMAT => Err(Error::invalid(format!(
                "repository `{}` has format {}, this lifeboat handles up to {FORMAT}: upgrade lifeboat",
                storage.location(),
                marker.format
            ))),
            Some(marker) => Ok(Repository {
                storage,
                created_at: marker.created_at,
            }),
        }
    }

    async fn read_marker(storage: &Storage) -> Result<Option<Marker>> {
        let Some(bytes) = storage.read_opt(MARKER).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::invalid(format!(
                "repository marker `{}` is damaged: {e}",
                storage.display(MARKER)
            ))
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

    pub fn manifest_path(id: &str) -> String {
        format!("{MANIFESTS}{id}.json")
    }

    pub fn data_path(kind: BackupKind, id: &str, encrypted: bool) -> String {
        let suffix = if encrypted { ".age" } else { "" };
        match kind {
            BackupKind::Db => format!("data/db/{id}.dump.zst{suffix}"),
            BackupKind::Base => format!("data/base/{id}.tar.zst{suffix}"),
            BackupKind::Redis => format!("data/redis/{id}.rdb.zst{suffix}"),
        }
    }

    /// Every finished backup, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let entries = self.storage.list(MANIFESTS).await?;
        let storage = &self.storage;
        let mut manifests: Vec<Manifest> = futures::stream::iter(entries)
            .filter(|e| futures::future::ready(e.path.ends_with(".json")))
            .map(|entry| async move {
                let bytes = storage.read_opt(&entry.path).await?.ok_or_else(|| {
                    Error::invalid(format!(
                        "manifest `{}` vanished while listing",
                        storage.display(&entry.path)
                    ))
                })?;
                Manifest::from_json(&bytes, &storage.display(&entry.path))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        manifests.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(manifests)
    }

    /// Finds one backup by id, unique id prefix, or `latest`.
    pub async fn find(&self, selector: &Selector<'_>) -> Result<Manifest> {
        let not_found = || Error::BackupNotFound {
            id: selector.id.to_string(),
            location: self.location().to_string(),
        };
        let candidates: Vec<Manifest> = self
            .list()
            .await?
            .into_iter()
            .filter(|m| selector.kind.is_none_or(|k| m.kind == k))
            .filter(|m| selector.database.is_none_or(|d| m.database == d))
            .collect();
        if selector.id == "latest" {
            return candidates.into_iter().next_back().ok_or_else(not_found);
        }
        if selector.id.is_empty() {
            return Err(not_found());
        }
        let mut matching: Vec<Manifest> = candidates
            .into_iter()
            .filter(|m| m.id.starts_with(selector.id))
            .collect();
        match matching.len() {
            0 => Err(not_found()),
            1 => Ok(matching.remove(0)),
            n => Err(Error::invalid(format!(
                "backup id `{}` is ambiguous: {n} backups start with it, give more of the id",
                selector.id
            ))),
        }
    }

    /// Ends a backup: commits its manifest if it was prepared and no stop was asked for;
    /// otherwise, or if the commit fails, removes its data so that nothing unfinished stays.
    pub async fn finish_backup(
        &self,
        data: &str,
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
            if let Err(e) = self.storage.delete(data).await {
                tracing::warn!(path = %data, error = %e, "could not remove the data of a failed backup");
            }
        }
        committed
    }

    /// Commits a backup by writing its manifest; never replaces an existing one.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let path = Self::manifest_path(&manifest.id);
        if self.storage.write_new(&path, manifest.to_json()).await? {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "manifest `{}` already exists: backup ids must be unique",
                self.storage.display(&path)
            )))
        }
    }
}
