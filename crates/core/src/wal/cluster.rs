//! Clusters in one repository and their generations: which archive a WAL file goes to, and
//! which one a recovery reads.
//!
//! Each archiving `[postgres.NAME]` is a cluster, recorded at `clusters/NAME.json` as a
//! sequence of generations, each one (system identifier, major version) with the prefix its
//! WAL is stored under. `initdb` gives a cluster its system identifier, which every segment's
//! first page carries; `pg_upgrade` gives it a new one and starts its timelines again, so
//! segment names repeat: `lifeboat upgrade` records the new generation under a prefix of its
//! own (`wal/clusters/NAME/GENERATION/`), and `wal-push` stores each segment in the
//! generation of the system identifier it carries, refusing one of no generation.
//!
//! The first generation of the first cluster lives at `wal/`, where a repository written
//! before clusters had records keeps its archive (`wal/cluster.json` names its system
//! identifier, created atomically, so two servers starting together cannot both claim it).
//! Such a repository is read as it is: `wal/` is the first generation of the cluster whose
//! system identifier `wal/cluster.json` records, or, before that cluster has pushed with this
//! release, of the only archiving cluster. Nothing is moved.
//!
//! The spool keeps a copy of the record, so that a push does not read it from storage each
//! time (generations are only ever added: a copy that knows a system identifier is right).

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::name_of_key;
use crate::error::{Error, Result};
use crate::repository::layout;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::Context;

/// One generation of a cluster: its WAL, from `initdb` or a major upgrade on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: u32,
    /// A string: JSON numbers lose the low digits of a 64-bit identifier in many readers.
    pub system_identifier: String,
    /// The PostgreSQL major version, when known (from the segments' page magic, or the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    /// Where its files are stored: `wal/` or `wal/clusters/NAME/GENERATION/`.
    pub prefix: String,
    pub since: Timestamp,
    pub recorded_by: String,
}

impl Generation {
    pub fn system_id(&self) -> Option<u64> {
        self.system_identifier.parse().ok()
    }

    /// `generation 2 (PostgreSQL 17, system identifier 7…)`.
    pub fn describe(&self) -> String {
        match self.major {
            Some(major) => format!(
                "generation {} (PostgreSQL {major}, system identifier {})",
                self.generation, self.system_identifier
            ),
            None => format!(
                "generation {} (system identifier {})",
                self.generation, self.system_identifier
            ),
        }
    }
}

/// A cluster's record: its generations, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster: String,
    pub generations: Vec<Generation>,
}

impl ClusterRecord {
    pub fn of_system(&self, system_id: u64) -> Option<&Generation> {
        self.generations
            .iter()
            .find(|g| g.system_id() == Some(system_id))
    }

    pub fn newest(&self) -> Option<&Generation> {
        self.generations.last()
    }

    fn describe(&self) -> String {
        self.generations
            .iter()
            .map(Generation::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The PostgreSQL major version a WAL page magic belongs to.
pub fn major_of_magic(magic: u16) -> Option<u32> {
    Some(match magic {
        0xD10D => 14,
        0xD110 => 15,
        0xD113 => 16,
        0xD116 => 17,
        0xD118 => 18,
        _ => return None,
    })
}

/// Checks that `name` can name a cluster in keys: letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(Error::Usage(format!(
            "`{name}` cannot name a cluster: use up to 63 letters, digits, `-` or `_` (as in `[postgres.NAME]`)"
        )));
    }
    Ok(())
}

/// Whether `name` is the only archiving cluster the configuration knows (`pitr = true`, or
/// none is marked): the one whose first generation is the archive at `wal/`.
pub fn sole(ctx: &Context, name: &str) -> bool {
    ctx.config
        .postgres
        .iter()
        .filter(|(_, pg)| pg.pitr)
        .all(|(other, _)| other == name)
}

/// The cluster a WAL command serves: `db` as named (`--db NAME`), else the only archiving
/// `[postgres.NAME]` (`pitr = true`), else the only one configured.
pub fn which(ctx: &Context, db: Option<&str>) -> Result<String> {
    if let Some(name) = db {
        check_name(name)?;
        return Ok(name.to_string());
    }
    let archiving: Vec<&String> = ctx
        .config
        .postgres
        .iter()
        .filter(|(_, pg)| pg.pitr)
        .map(|(name, _)| name)
        .collect();
    match archiving.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Ok(ctx.config.database(None)?.0.to_string()),
        several => Err(Error::Usage(format!(
            "several clusters archive into this repository ({}): name one with `--db NAME` (in archive_command: `lifeboat wal-push --db NAME %p`)",
            crate::error::listed(several)
        ))),
    }
}

/// The WAL archive of one generation of one cluster: where every reader and writer of WAL
/// files goes through. It reads as the repository it is in (`Deref`), so that storage, run
/// lock and Object Lock stay the repository's.
#[derive(Debug, Clone)]
pub struct WalArchive<'r> {
    repo: &'r Repository,
    /// The cluster's name (`[postgres.NAME]`).
    pub cluster: String,
    pub generation: Generation,
}

impl<'r> WalArchive<'r> {
    pub fn new(repo: &'r Repository, cluster: &str, generation: &Generation) -> Self {
        WalArchive {
            repo,
            cluster: cluster.to_string(),
            generation: generation.clone(),
        }
    }

    /// The repository the archive is in.
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// The prefix of its keys (`wal/` or `wal/clusters/NAME/GENERATION/`).
    pub fn prefix(&self) -> &str {
        &self.generation.prefix
    }

    /// The key of archived file `name`.
    pub fn key(&self, name: &str, encrypted: bool) -> String {
        crate::repository::layout::wal(self.prefix(), name, encrypted)
    }

    /// The file a key of this archive stores.
    pub fn name_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        name_of_key(self.prefix(), key)
    }

    /// The system identifier its segments must carry, when recorded.
    pub fn system_id(&self) -> Option<u64> {
        self.generation.system_id()
    }

    /// Whether `manifest` is a base backup of this archive's generation: its cluster's, with
    /// its system identifier (the archive at `wal/` of a repository from before clusters also
    /// holds base backups recorded without one, under any name).
    pub fn holds(&self, manifest: &Manifest) -> bool {
        let Some(base) = manifest
            .base
            .as_ref()
            .filter(|_| manifest.kind == BackupKind::Base)
        else {
            return false;
        };
        let legacy = self.prefix() == crate::repository::layout::Area::Wal.dirname();
        let named = manifest.database == self.cluster || legacy;
        let system = base
            .system_identifier
            .as_deref()
            .and_then(|id| id.parse::<u64>().ok());
        match (system, self.system_id()) {
            (Some(id), Some(ours)) => named && id == ours,
            _ => named && self.generation.generation == 1,
        }
    }

    /// `cluster `main`, generation 2 (PostgreSQL 17, …)`.
    pub fn describe(&self) -> String {
        format!("cluster `{}`, {}", self.cluster, self.generation.describe())
    }
}

impl std::ops::Deref for WalArchive<'_> {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        self.repo
    }
}

// ---------------------------------------------------------------------------------------------
// The legacy claim on `wal/`: `wal/cluster.json`.

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    system_identifier: String,
    recorded_at: Timestamp,
    recorded_by: String,
}

async fn read_claim(repo: &Repository) -> Result<Option<(u64, Claim)>> {
    let key = layout::wal_cluster();
    let Some(bytes) = repo.storage().read_opt(&key).await? else {
        return Ok(None);
    };
    let damaged = || {
        Error::Damaged {
        what: format!("`{}`", repo.storage().display(&key)),
        problem: "damaged: it should name the cluster the archive at `wal/` belongs to; restore it from a copy, or remove it to let the next push record it again".into(),
    }
    };
    let claim: Claim = serde_json::from_slice(&bytes).map_err(|_| damaged())?;
    let id = claim.system_identifier.parse().map_err(|_| damaged())?;
    Ok(Some((id, claim)))
}

/// Claims `wal/` for `system_id` unless another claimed it first; the system identifier that
/// holds it after.
async fn claim_legacy(repo: &Repository, system_id: u64, by: &str) -> Result<(u64, Claim)> {
    let mine = Claim {
        system_identifier: system_id.to_string(),
        recorded_at: Timestamp::now(),
        recorded_by: by.to_string(),
    };
    let json = serde_json::to_vec_pretty(&mine).expect("records serialize");
    if repo
        .storage()
        .write_new(&layout::wal_cluster(), json)
        .await?
    {
        return Ok((system_id, mine));
    }
    read_claim(repo).await?.ok_or_else(|| {
        Error::Missing(format!(
            "`{}` vanished while it was being recorded: try again",
            repo.storage().display(&layout::wal_cluster())
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Records.

/// Cluster `name`'s record, if it has one.
pub async fn record(repo: &Repository, name: &str) -> Result<Option<ClusterRecord>> {
    let key = layout::cluster_record(name);
    let Some(bytes) = repo.storage().read_opt(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Damaged {
            what: format!("`{}`", repo.storage().display(&key)),
            problem: format!(
                "damaged ({e}): it lists the cluster's generations; restore it from a copy"
            ),
        })
}

/// Every cluster's record, by name.
pub async fn records(repo: &Repository) -> Result<Vec<ClusterRecord>> {
    let mut out: Vec<ClusterRecord> = repo
        .storage()
        .read_records(layout::Area::Clusters.dirname(), "cluster record")
        .await?;
    out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    Ok(out)
}

/// The archive at `wal/` as the first generation of `name`, when no record claims it and
/// either `wal/cluster.json` or `sole` (`name` is the only archiving cluster) gives it to
/// `name`.
async fn legacy_generation(
    repo: &Repository,
    name: &str,
    sole: bool,
    system_id: Option<u64>,
) -> Result<Option<Generation>> {
    let others = records(repo).await?;
    if others
        .iter()
        .any(|r| r.cluster != name && r.generations.iter().any(|g| g.prefix == "wal/"))
    {
        return Ok(None);
    }
    let claim = read_claim(repo).await?;
    let ours = match (&claim, system_id) {
        (Some((claimed, _)), Some(id)) => *claimed == id,
        _ => sole,
    };
    if !ours {
        return Ok(None);
    }
    Ok(Some(match claim {
        Some((id, claim)) => Generation {
            generation: 1,
            system_identifier: id.to_string(),
            major: None,
            prefix: layout::Area::Wal.dirname().into(),
            since: claim.recorded_at,
            recorded_by: claim.recorded_by,
        },
        None => Generation {
            generation: 1,
            system_identifier: String::new(),
            major: None,
            prefix: layout::Area::Wal.dirname().into(),
            since: Timestamp::now(),
            recorded_by: String::new(),
        },
    }))
}

/// Cluster `name`'s generations: its record's, else the archive at `wal/` read as its first
/// (see the module header), else none.
pub async fn generations(repo: &Repository, name: &str, sole: bool) -> Result<Vec<Generation>> {
    if let Some(record) = record(repo, name).await? {
        return Ok(record.generations);
    }
    Ok(legacy_generation(repo, name, sole, None)
        .await?
        .into_iter()
        .collect())
}

/// The archive of cluster `name`'s generation `generation` (by default its newest). A
/// cluster with nothing recorded gets the archive its first push would use.
pub async fn archive<'r>(
    repo: &'r Repository,
    name: &str,
    sole: bool,
    generation: Option<u32>,
) -> Result<WalArchive<'r>> {
    let all = generations(repo, name, sole).await?;
    let chosen = match generation {
        Some(number) => all.iter().find(|g| g.generation == number).ok_or_else(|| {
            Error::Missing(format!(
                "cluster `{name}` has no generation {number} in repository `{}`: `lifeboat list wal` shows its generations",
                repo.location()
            ))
        })?,
        None => match all.last() {
            Some(newest) => newest,
            None => return Ok(WalArchive::new(repo, name, &unrecorded(name, sole))),
        },
    };
    Ok(WalArchive::new(repo, name, chosen))
}

/// The archive of the generation whose system identifier is `system_id`, if `name` has one.
pub async fn archive_of_system<'r>(
    repo: &'r Repository,
    name: &str,
    sole: bool,
    system_id: u64,
) -> Result<Option<WalArchive<'r>>> {
    let all = generations(repo, name, sole).await?;
    let found = all
        .iter()
        .find(|g| g.system_id() == Some(system_id))
        // A legacy archive whose claim is not written yet belongs to the sole cluster.
        .or_else(|| all.iter().find(|g| g.system_identifier.is_empty()));
    Ok(found.map(|g| WalArchive::new(repo, name, g)))
}

/// Every archive in the repository, cluster by cluster (by name), each cluster's generations
/// oldest first: those of every record, and the archive at `wal/` of a repository from before
/// clusters had records, named for the configuration's archiving cluster (else the cluster its
/// base backups name).
pub async fn every_archive<'r>(
    ctx: &Context,
    repo: &'r Repository,
    manifests: &[Manifest],
) -> Result<Vec<(String, Vec<WalArchive<'r>>)>> {
    let all = records(repo).await?;
    let mut out: Vec<(String, Vec<WalArchive<'r>>)> = all
        .iter()
        .map(|r| {
            let archives = r
                .generations
                .iter()
                .map(|g| WalArchive::new(repo, &r.cluster, g))
                .collect();
            (r.cluster.clone(), archives)
        })
        .collect();
    let legacy_claimed = all.iter().any(|r| {
        r.generations
            .iter()
            .any(|g| g.prefix == layout::Area::Wal.dirname())
    });
    if !legacy_claimed {
        let named = which(ctx, None).ok().or_else(|| {
            manifests
                .iter()
                .find(|m| m.kind == BackupKind::Base)
                .map(|m| m.database.clone())
        });
        if let Some(name) = named.filter(|n| !all.iter().any(|r| &r.cluster == n)) {
            if let Some(g) = legacy_generation(repo, &name, true, None).await? {
                out.push((name.clone(), vec![WalArchive::new(repo, &name, &g)]));
            }
        }
    }
    Ok(out)
}

/// The archive a base backup is recovered with: its cluster's generation of its system
/// identifier (the first, for a base backup recorded without one).
pub async fn archive_of_base<'r>(
    ctx: &Context,
    repo: &'r Repository,
    base: &Manifest,
) -> Result<WalArchive<'r>> {
    let name = &base.database;
    let sole = sole(ctx, name);
    let system = base
        .base
        .as_ref()
        .and_then(|b| b.system_identifier.as_deref())
        .and_then(|id| id.parse().ok());
    if let Some(system) = system {
        if let Some(archive) = archive_of_system(repo, name, sole, system).await? {
            return Ok(archive);
        }
    }
    let first = generations(repo, name, sole).await?.into_iter().next();
    match first {
        Some(g) => Ok(WalArchive::new(repo, name, &g)),
        None => archive(repo, name, sole, None).await,
    }
}

/// Where a cluster with nothing recorded will have its first generation (placeholder: the
/// first push decides).
fn unrecorded(name: &str, sole: bool) -> Generation {
    Generation {
        generation: 1,
        system_identifier: String::new(),
        major: None,
        prefix: if sole {
            layout::Area::Wal.dirname().into()
        } else {
            layout::generation_prefix(name, 1)
        },
        since: Timestamp::now(),
        recorded_by: String::new(),
    }
}

const CACHE: &str = "cluster-";

fn cached(spool: Option<&Path>, name: &str) -> Option<ClusterRecord> {
    let text = std::fs::read(spool?.join(format!("{CACHE}{name}.json"))).ok()?;
    serde_json::from_slice(&text).ok()
}

fn remember(spool: Option<&Path>, record: &ClusterRecord) {
    if let Some(spool) = spool {
        let json = serde_json::to_vec(record).expect("records serialize");
        if let Err(e) = super::spool::write_atomically(
            &spool.join(format!("{CACHE}{}.json", record.cluster)),
            &json,
            false,
        ) {
            tracing::debug!(error = %e, "cannot remember the cluster's generations");
        }
    }
}

/// The archive a pushed file goes to: a segment (whose first page carries `system_id` and
/// `magic`) to its generation, anything else to the newest. The first push of a cluster
/// records it; a segment of no generation is refused, naming `lifeboat upgrade`.
pub async fn route<'r>(
    repo: &'r Repository,
    spool: Option<&Path>,
    name: &str,
    sole: bool,
    segment: Option<(u64, u16)>,
    by: &str,
) -> Result<WalArchive<'r>> {
    // A remembered record that knows a segment's system identifier is right (generations are
    // only added); the newest generation, for a file without one, is read afresh.
    if let (Some(record), Some((id, _))) = (cached(spool, name), segment) {
        if let Some(g) = record.of_system(id) {
            return Ok(WalArchive::new(repo, name, g));
        }
    }
    let record = match record(repo, name).await? {
        Some(record) => record,
        None => match segment {
            Some((id, magic)) => first_record(repo, name, sole, id, magic, by).await?,
            None => return archive(repo, name, sole, None).await,
        },
    };
    let found = match segment {
        Some((id, _)) => record.of_system(id),
        None => record.newest(),
    };
    match found {
        Some(g) => {
            remember(spool, &record);
            Ok(WalArchive::new(repo, name, g))
        }
        None => Err(Error::ForeignCluster {
            what: by.trim_start_matches("wal-push of ").to_string(),
            system_id: segment.map_or(0, |(id, _)| id),
            cluster: name.to_string(),
            location: repo.location().to_string(),
            known: record.describe(),
        }),
    }
}

/// Checks that a base backup of the server `system_id` (`what`) can be recovered with cluster
/// `name`'s archive: its system identifier is one of the cluster's generations, or the
/// cluster has none recorded yet (its first push will record it).
pub async fn check_base(
    repo: &Repository,
    name: &str,
    sole: bool,
    system_id: u64,
    what: &str,
) -> Result<()> {
    let known = generations(repo, name, sole).await?;
    let recorded: Vec<&Generation> = known
        .iter()
        .filter(|g| !g.system_identifier.is_empty())
        .collect();
    if recorded.is_empty() || recorded.iter().any(|g| g.system_id() == Some(system_id)) {
        return Ok(());
    }
    Err(Error::ForeignCluster {
        what: what.to_string(),
        system_id,
        cluster: name.to_string(),
        location: repo.location().to_string(),
        known: recorded
            .iter()
            .map(|g| g.describe())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Records cluster `name` on its first push, of a segment from `system_id`.
async fn first_record(
    repo: &Repository,
    name: &str,
    sole: bool,
    system_id: u64,
    magic: u16,
    by: &str,
) -> Result<ClusterRecord> {
    let mut generation = match legacy_generation(repo, name, sole, Some(system_id)).await? {
        // `wal/` is unclaimed, or claimed by this very cluster: it holds generation 1.
        Some(g) if g.system_identifier.is_empty() || g.system_id() == Some(system_id) => {
            let (holder, claim) = claim_legacy(repo, system_id, by).await?;
            if holder == system_id {
                Generation {
                    since: claim.recorded_at,
                    recorded_by: claim.recorded_by,
                    ..g
                }
            } else {
                nested(name, system_id, by)
            }
        }
        // The sole cluster, and `wal/` holds another system's WAL: a major upgrade not
        // recorded yet (or another cluster in the wrong configuration).
        Some(g) => {
            return Err(Error::ForeignCluster {
                what: by.trim_start_matches("wal-push of ").to_string(),
                system_id,
                cluster: name.to_string(),
                location: repo.location().to_string(),
                known: g.describe(),
            })
        }
        None => nested(name, system_id, by),
    };
    generation.system_identifier = system_id.to_string();
    generation.major = major_of_magic(magic);
    let record = ClusterRecord {
        cluster: name.to_string(),
        generations: vec![generation],
    };
    let json = serde_json::to_vec_pretty(&record).expect("records serialize");
    if repo
        .storage()
        .write_new(&layout::cluster_record(name), json)
        .await?
    {
        tracing::info!(
            "cluster `{name}` archives into `{}` from now on: {}",
            repo.location(),
            record.generations[0].describe()
        );
        return Ok(record);
    }
    // Another push recorded it first.
    self::record(repo, name).await?.ok_or_else(|| {
        Error::Missing(format!(
            "`{}` vanished while it was being recorded: try again",
            repo.storage().display(&layout::cluster_record(name))
        ))
    })
}

fn nested(name: &str, system_id: u64, by: &str) -> Generation {
    Generation {
        generation: 1,
        system_identifier: system_id.to_string(),
        major: None,
        prefix: layout::generation_prefix(name, 1),
        since: Timestamp::now(),
        recorded_by: by.to_string(),
    }
}

/// Adds a generation to cluster `name` for the server `system_id` of major version `major`
/// (after `pg_upgrade`), adopting the archive at `wal/` as the first when the cluster has no
/// record yet. Returns the record as it is now. `dry_run` writes nothing.
pub async fn add_generation(
    repo: &Repository,
    name: &str,
    sole: bool,
    system_id: u64,
    major: u32,
    dry_run: bool,
) -> Result<(ClusterRecord, bool)> {
    let mut record = match record(repo, name).await? {
        Some(record) => record,
        None => ClusterRecord {
            cluster: name.to_string(),
            generations: legacy_generation(repo, name, sole, None)
                .await?
                .filter(|g| !g.system_identifier.is_empty())
                .into_iter()
                .collect(),
        },
    };
    if record.of_system(system_id).is_some() {
        return Ok((record, false));
    }
    if let Some(newest) = record.newest() {
        if newest.major.is_some_and(|m| m >= major) {
            return Err(Error::Usage(format!(
                "the server of `{name}` is PostgreSQL {major} with a new system identifier {system_id}, but {} is PostgreSQL {}: `lifeboat upgrade` follows a major upgrade (pg_upgrade); a cluster made again with initdb needs its own `[postgres.NAME]`",
                newest.describe(),
                newest.major.unwrap_or_default()
            )));
        }
    }
    let number = record.newest().map_or(1, |g| g.generation + 1);
    record.generations.push(Generation {
        generation: number,
        system_identifier: system_id.to_string(),
        major: Some(major),
        prefix: if number == 1 && sole {
            layout::Area::Wal.dirname().into()
        } else {
            layout::generation_prefix(name, number)
        },
        since: Timestamp::now(),
        recorded_by: format!("lifeboat upgrade --db {name}"),
    });
    if !dry_run {
        let json = serde_json::to_vec_pretty(&record).expect("records serialize");
        repo.storage()
            .write(&layout::cluster_record(name), json)
            .await?;
    }
    Ok((record, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(number: u32, system: &str, major: Option<u32>) -> Generation {
        Generation {
            generation: number,
            system_identifier: system.into(),
            major,
            prefix: layout::generation_prefix("main", number),
            since: Timestamp::UNIX_EPOCH,
            recorded_by: "test".into(),
        }
    }

    #[test]
    fn a_segment_finds_the_generation_of_its_system_identifier() {
        let record = ClusterRecord {
            cluster: "main".into(),
            generations: vec![
                generation(1, "7300000000000000001", Some(15)),
                generation(2, "7400000000000000002", Some(17)),
            ],
        };
        assert_eq!(
            record
                .of_system(7_300_000_000_000_000_001)
                .unwrap()
                .generation,
            1
        );
        assert_eq!(
            record
                .of_system(7_400_000_000_000_000_002)
                .unwrap()
                .generation,
            2
        );
        assert!(record.of_system(42).is_none());
        assert_eq!(record.newest().unwrap().generation, 2);
        assert_eq!(
            record.describe(),
            "generation 1 (PostgreSQL 15, system identifier 7300000000000000001), \
             generation 2 (PostgreSQL 17, system identifier 7400000000000000002)"
        );
        assert_eq!(
            record.generations[1].prefix, "wal/clusters/main/2/",
            "a generation's files stay apart from the others'"
        );
    }

    #[test]
    fn page_magic_names_the_major_version_and_names_are_plain() {
        assert_eq!(major_of_magic(0xD110), Some(15));
        assert_eq!(major_of_magic(0xD116), Some(17));
        assert_eq!(major_of_magic(0xD118), Some(18));
        assert_eq!(major_of_magic(0xD000), None);
        assert!(check_name("main").is_ok() && check_name("staging-2_b").is_ok());
        for bad in ["", "a/b", "..", "a b"] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("cannot name a cluster"), "{err}");
        }
    }
}
