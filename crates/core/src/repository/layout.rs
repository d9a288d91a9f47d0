//! Where everything lives in a repository, in one place: [`Area`] owns every prefix (as
//! rustic's `FileType::dirname()` does), and the functions below name every key.
//!
//! - `lifeboat.json`: the marker written by `init` (format version); nothing else is touched
//!   in a location that lacks it.
//! - `manifests/<id>.json`: one per finished backup, written after its data: the commit.
//! - `data/db/<id>.dump.zst[.age]`, `data/base/<id>.tar.zst[.age]`,
//!   `data/redis/<id>.rdb.zst[.age]`: the stored data of dumps, base backups, Redis snapshots.
//!   A data object without a manifest is an unfinished backup: never listed, cleaned up.
//! - `clusters/<name>.json`: each archiving cluster's generations (system identifier, major
//!   version, where its WAL is stored).
//! - `wal/<name>.zst[.age]`: the WAL archive of the first generation of the first cluster
//!   (`wal/cluster.json` names its system identifier); `wal/clusters/<cluster>/<generation>/`
//!   holds every other generation's, the same way. `wal/refused.json`: the last file
//!   `wal-push` refused.
//! - `locks/run.json`, `locks/run.<id>.beat`: the run lock and its holder's heartbeat.
//! - `verifications/<id>.json`: the last verification of each backup.
//! - `stream/<archive prefix><segment>/<start>-<end>.zst[.age]`: WAL that `wal-stream` received
//!   of a segment not yet whole, in pieces (offsets in hexadecimal), removed once it is.

use super::manifest::BackupKind;

/// The repository's marker.
pub const MARKER: &str = "lifeboat.json";

/// A part of the repository, by what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Manifests,
    /// Every backup's data (all kinds).
    Data,
    /// One kind's data.
    DataOf(BackupKind),
    Wal,
    /// The clusters' records of their generations.
    Clusters,
    Locks,
    Verifications,
    /// WAL streamed (`wal-stream`) and not yet a whole segment: pieces, removed once their
    /// segment is stored (outside `wal/`, which Object Lock may hold).
    Stream,
}

impl Area {
    /// The prefix of the area's keys, with its trailing `/`.
    pub fn dirname(self) -> &'static str {
        match self {
            Area::Manifests => "manifests/",
            Area::Data => "data/",
            Area::DataOf(BackupKind::Db) => "data/db/",
            Area::DataOf(BackupKind::Base) => "data/base/",
            Area::DataOf(BackupKind::Redis) => "data/redis/",
            Area::Wal => "wal/",
            Area::Clusters => "clusters/",
            Area::Locks => "locks/",
            Area::Verifications => "verifications/",
            Area::Stream => "stream/",
        }
    }
}

/// A backup's manifest.
pub fn manifest(id: &str) -> String {
    format!("{}{id}.json", Area::Manifests.dirname())
}

/// A backup's stored data.
pub fn data(kind: BackupKind, id: &str, encrypted: bool) -> String {
    let extension = match kind {
        BackupKind::Db => "dump",
        BackupKind::Base => "tar",
        BackupKind::Redis => "rdb",
    };
    format!(
        "{}{id}.{extension}.zst{}",
        Area::DataOf(kind).dirname(),
        if encrypted { ".age" } else { "" }
    )
}

/// A dump's roles (`pg_dumpall --roles-only`), beside its data (so that prune removes them
/// with it).
pub fn globals(id: &str, encrypted: bool) -> String {
    format!(
        "{}{id}.globals.sql.zst{}",
        Area::DataOf(BackupKind::Db).dirname(),
        if encrypted { ".age" } else { "" }
    )
}

/// A base backup's `backup_manifest` (PostgreSQL's), beside its data; never encrypted.
pub fn backup_manifest(id: &str) -> String {
    format!(
        "{}{id}.backup_manifest.zst",
        Area::DataOf(BackupKind::Base).dirname()
    )
}

/// An archived WAL file, in the archive at `prefix` (`wal/` or a generation's).
pub fn wal(prefix: &str, name: &str, encrypted: bool) -> String {
    format!("{prefix}{name}.zst{}", if encrypted { ".age" } else { "" })
}

/// Where cluster `cluster`'s generation `generation` keeps its WAL (unless it is the first
/// generation of the first cluster, at `wal/`).
pub fn generation_prefix(cluster: &str, generation: u32) -> String {
    format!("{}clusters/{cluster}/{generation}/", Area::Wal.dirname())
}

/// A cluster's record of its generations.
pub fn cluster_record(cluster: &str) -> String {
    format!("{}{cluster}.json", Area::Clusters.dirname())
}

/// The claim of the archive at `wal/`: the system identifier of the cluster it belongs to.
pub fn wal_cluster() -> String {
    format!("{}cluster.json", Area::Wal.dirname())
}

/// The last file `wal-push` refused.
pub fn wal_refused() -> String {
    format!("{}refused.json", Area::Wal.dirname())
}

/// The record of a segment `wal-push` let PostgreSQL drop (`[wal] queue_max_mib`).
pub fn wal_dropped(name: &str) -> String {
    format!("{}dropped/{name}.json", Area::Wal.dirname())
}

/// Where the streamed pieces of segment `segment` of the archive at `prefix` are.
pub fn wal_pieces(prefix: &str, segment: &str) -> String {
    format!("{}{prefix}{segment}/", Area::Stream.dirname())
}

/// One streamed piece: bytes `start..end` of segment `segment`.
pub fn wal_piece(prefix: &str, segment: &str, start: u64, end: u64, encrypted: bool) -> String {
    format!(
        "{}{start:08X}-{end:08X}.zst{}",
        wal_pieces(prefix, segment),
        if encrypted { ".age" } else { "" }
    )
}

/// The run lock.
pub fn lock() -> String {
    format!("{}run.json", Area::Locks.dirname())
}

/// The heartbeat of the run lock `id`.
pub fn lock_beat(id: &str) -> String {
    format!("{}run.{id}.beat", Area::Locks.dirname())
}

/// A backup's last verification.
pub fn verification(id: &str) -> String {
    format!("{}{id}.json", Area::Verifications.dirname())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_where_the_layout_says() {
        assert_eq!(manifest("x"), "manifests/x.json");
        assert_eq!(data(BackupKind::Base, "x", true), "data/base/x.tar.zst.age");
        assert_eq!(data(BackupKind::Db, "x", false), "data/db/x.dump.zst");
        assert_eq!(data(BackupKind::Redis, "x", false), "data/redis/x.rdb.zst");
        assert!(data(BackupKind::Redis, "x", false).starts_with(Area::Data.dirname()));
        assert_eq!(
            wal("wal/", "000000010000000000000001", false),
            "wal/000000010000000000000001.zst"
        );
        assert_eq!(
            wal(&generation_prefix("main", 2), "00000001.history", true),
            "wal/clusters/main/2/00000001.history.zst.age"
        );
        assert_eq!(cluster_record("main"), "clusters/main.json");
        assert_eq!(
            (lock(), lock_beat("a")),
            ("locks/run.json".into(), "locks/run.a.beat".into())
        );
        assert_eq!(verification("x"), "verifications/x.json");
        assert_eq!(
            (wal_cluster(), wal_refused()),
            ("wal/cluster.json".into(), "wal/refused.json".into())
        );
    }
}
