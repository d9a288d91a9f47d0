//! `lifeboat upgrade`: after `pg_upgrade`, the cluster's new generation recorded, so that its
//! archiving resumes, and the generation's first base backup taken.
//!
//! `pg_upgrade` makes a new cluster: a new system identifier, timelines from 1 again, segment
//! names that repeat the old ones'. Until this runs, `wal-push` refuses its segments (naming
//! this command) and PostgreSQL keeps them in `pg_wal`. It checks that the running server is a
//! newer major version than the cluster's newest generation, records the generation under a
//! prefix of its own, and takes a base backup of it: without one no moment of the new
//! generation can be recovered. Running it again resumes: a recorded generation without a
//! base backup gets one, and one with a base backup is left as it is.

use serde::Serialize;

use super::conn::ConnInfo;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::repository::manifest::BackupKind;
use crate::repository::Repository;
use crate::wal::cluster::{self, Generation};
use crate::Context;

#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    pub cluster: String,
    /// The generation the server's WAL now goes to.
    pub generation: Generation,
    /// The one before it, if any.
    pub previous: Option<Generation>,
    /// False when the generation was recorded already (a second run).
    pub recorded: bool,
    /// The base backup taken of it, if one was.
    pub base_backup: Option<String>,
    /// A base backup of this generation that was there already.
    pub existing_base_backup: Option<String>,
    pub dry_run: bool,
}

/// Records the new generation of cluster `name` for its running server, and (with `backup`)
/// takes its first base backup.
pub async fn upgrade(
    ctx: &Context,
    repo: &Repository,
    name: &str,
    pg: &PostgresConfig,
    backup: bool,
    dry_run: bool,
) -> Result<UpgradeReport> {
    let conn = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    let client = conn.connect(&format!("database `{name}`")).await?;
    let row = client
        .query_one(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), \
             current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the server's identity", &e))?;
    drop(client);
    let system_id: u64 = row
        .get::<_, String>(0)
        .parse()
        .map_err(|_| Error::Internal("the server's system identifier is not a number".into()))?;
    let major = (row.get::<_, i32>(1) / 10000) as u32;
    let sole = cluster::sole(ctx, name);
    let (record, recorded) =
        cluster::add_generation(repo, name, sole, system_id, major, dry_run).await?;
    let position = record
        .generations
        .iter()
        .position(|g| g.system_id() == Some(system_id))
        .ok_or_else(|| Error::Internal("the recorded generation is missing".into()))?;
    let generation = record.generations[position].clone();
    let previous = position
        .checked_sub(1)
        .map(|i| record.generations[i].clone());
    if recorded {
        tracing::info!(
            "{} `{name}`: {} recorded{}; its WAL goes to `{}`",
            if dry_run {
                "would record for"
            } else {
                "cluster"
            },
            generation.describe(),
            previous
                .as_ref()
                .map_or(String::new(), |p| format!(" after {}", p.describe())),
            generation.prefix
        );
    } else {
        tracing::info!(
            "cluster `{name}`: the server is {} already",
            generation.describe()
        );
    }
    let existing = repo
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Base && m.database == name)
        .find(|m| {
            m.base
                .as_ref()
                .and_then(|b| b.system_identifier.as_deref())
                .is_some_and(|id| id == generation.system_identifier)
        })
        .map(|m| m.id);
    let mut report = UpgradeReport {
        cluster: name.to_string(),
        generation,
        previous,
        recorded,
        base_backup: None,
        existing_base_backup: existing,
        dry_run,
    };
    if backup && !dry_run && report.existing_base_backup.is_none() {
        let manifest = super::base::backup_base(ctx, repo, name, pg, false).await?;
        tracing::info!(
            "base backup `{}`: the first of {}",
            manifest.id,
            report.generation.describe()
        );
        report.base_backup = Some(manifest.id);
    }
    Ok(report)
}
