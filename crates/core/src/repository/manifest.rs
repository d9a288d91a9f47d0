//! Backup manifests: what a backup is, written last as its commit.
//!
//! A manifest is versioned JSON. Readers accept unknown fields (a newer minor writer may add
//! some) but refuse a newer `format`, so an old lifeboat never misreads a new backup.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest format this lifeboat writes and the newest it reads.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// A logical dump (`pg_dump` custom format).
    Db,
    /// A physical copy of the cluster (`pg_basebackup` tar), the base of point-in-time recovery.
    Base,
    /// A Redis RDB snapshot (only when `[redis] backup = true`).
    Redis,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Db => "db",
            BackupKind::Base => "base",
            BackupKind::Redis => "redis",
        }
    }
}

/// What a base backup needs from the WAL archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInfo {
    pub start_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    pub first_wal: String,
    pub last_wal: String,
    pub wal_segment_size: u64,
    /// The cluster's system identifier (a string: too large for many JSON readers' numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// For an incremental base backup: the backup (full or incremental) it holds the changes
    /// since. Restoring it needs every backup of its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub kind: BackupKind,
    /// The configured name of the database (`[postgres.NAME]`).
    pub database: String,
    /// The database's own name on the server.
    pub dbname: String,
    pub options: DumpOptions,
    pub server_version: String,
    /// Version of the program that took it (pg_dump or pg_basebackup).
    pub client_version: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// Key of the stored data, relative to the repository root.
    pub data: String,
    /// Bytes produced by pg_dump.
    pub raw_size: u64,
    /// Bytes stored (compressed, encrypted).
    pub stored_size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    pub storage_class: Option<String>,
    pub tool_version: String,
    /// Exact row count of every table, counted in the snapshot pg_dump read.
    /// Empty for a schema-only dump.
    pub tables: Vec<TableRows>,
    /// For a base backup: its place in the WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseInfo>,
    /// Set by prune when the backup is kept only as the first of its month or year and its
    /// data moved to that tier's storage class (`monthly`, `yearly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// For a dump: the cluster's roles and the database's properties, stored beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsInfo>,
    /// For a base backup: PostgreSQL's `backup_manifest`, stored beside it (compressed, never
    /// encrypted: a backup host that holds only the public key reads it to take the next
    /// incremental; it names files and sizes, no data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_manifest: Option<SideObject>,
}

/// A small object stored beside a backup's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideObject {
    /// Key, relative to the repository root.
    pub key: String,
    pub stored_size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpOptions {
    pub schema_only: bool,
    /// Only these schemas were dumped; empty means all.
    pub schemas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub algorithm: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub name: String,
    pub rows: u64,
}

impl TableRows {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

impl Manifest {
    /// What the stored data must be, for the download that reads it.
    pub fn expected(&self) -> crate::pipeline::Expected {
        crate::pipeline::Expected {
            backup_id: self.id.clone(),
            sha256: self.sha256.clone(),
            stored_size: self.stored_size,
            encrypted: self.is_encrypted(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Manifest> {
        Manifest::parse(bytes).map_err(|problem| Error::Damaged {
            what: format!("manifest `{origin}`"),
            problem,
        })
    }

    /// Reads a manifest; the error says why it cannot be (`not readable: ...`).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("not readable: {e}"))?;
        if head.format > MANIFEST_FORMAT {
            return Err(format!(
                "of format {}, and this lifeboat reads up to {MANIFEST_FORMAT}: upgrade lifeboat",
                head.format
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not readable: {e}"))
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The keys of the backup's stored objects: its data, and a dump's roles.
    pub fn objects(&self) -> Vec<&str> {
        self.stored_objects().into_iter().map(|o| o.0).collect()
    }

    /// Each stored object with its size and SHA-256: the data, a dump's roles, a base
    /// backup's `backup_manifest`.
    pub fn stored_objects(&self) -> Vec<(&str, u64, &str)> {
        std::iter::once((self.data.as_str(), self.stored_size, self.sha256.as_str()))
            .chain(
                self.globals
                    .as_ref()
                    .map(|g| (g.key.as_str(), g.stored_size, g.sha256.as_str())),
            )
            .chain(
                self.backup_manifest
                    .as_ref()
                    .map(|o| (o.key.as_str(), o.stored_size, o.sha256.as_str())),
            )
            .collect()
    }

    /// The backup this incremental base backup depends on.
    pub fn parent(&self) -> Option<&str> {
        self.base.as_ref().and_then(|b| b.parent.as_deref())
    }

    /// Total rows recorded.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// A new backup id: the UTC start time (sortable) and a short random suffix (unique).
pub fn new_backup_id(started: Timestamp) -> String {
    let suffix: u16 = rand::random();
    format!("{}-{suffix:04x}", started.strftime("%Y%m%dT%H%M%SZ"))
}

/// The start time (to the second) written at the head of a backup or run id.
pub fn id_time(id: &str) -> Option<Timestamp> {
    let stamp = id.get(..15)?;
    jiff::fmt::strtime::parse("%Y%m%dT%H%M%S", stamp)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Whether `text` has the shape of a backup id.
pub fn is_backup_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 21
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[16] == b'-'
        && text[..8].bytes().all(|b| b.is_ascii_digit())
        && text[9..15].bytes().all(|b| b.is_ascii_digit())
        && text[17..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The database's own properties, read in the dump's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbProperties {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `name=value`, as `pg_db_role_setting` keeps them.
    #[serde(default)]
    pub settings: Vec<String>,
}

/// Where a backup's roles are, as its manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsInfo {
    /// Key of the sealed SQL, relative to the repository root.
    pub key: String,
    pub stored_size: u64,
    pub sha256: String,
    /// Whether password hashes are in it (read as a superuser).
    pub role_passwords: bool,
    pub database: DbProperties,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let t: Timestamp = "2026-02-22T02:00:00Z".parse().unwrap();
        Manifest {
            format: MANIFEST_FORMAT,
            id: new_backup_id(t),
            kind: BackupKind::Db,
            database: "main".into(),
            dbname: "yomira".into(),
            options: DumpOptions::default(),
            server_version: "15.18".into(),
            client_version: "15.18".into(),
            started_at: t,
            finished_at: t,
            data: "data/db/x".into(),
            raw_size: 10,
            stored_size: 5,
            sha256: "ab".into(),
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            storage_class: None,
            tool_version: "0.1.0".into(),
            tables: vec![TableRows {
                schema: "core".into(),
                name: "comic".into(),
                rows: 7,
            }],
            base: None,
            tier: None,
            globals: None,
            backup_manifest: None,
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_recognised() {
        let a = new_backup_id("2026-02-22T02:00:00Z".parse().unwrap());
        let b = new_backup_id("2026-02-22T02:00:01Z".parse().unwrap());
        assert!(a < b);
        assert!(a.starts_with("20260222T020000Z-"));
        assert!(is_backup_id(&a) && is_backup_id(&b));
        assert!(!is_backup_id("latest") && !is_backup_id("20260222T020000Z"));
    }

    #[test]
    fn round_trip_and_newer_format_refused() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json(), "m").unwrap(), m);
        let mut newer: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        newer["format"] = serde_json::json!(MANIFEST_FORMAT + 1);
        newer["added_later"] = serde_json::json!(true);
        let err = Manifest::from_json(newer.to_string().as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains("upgrade lifeboat"), "{err}");
        assert!(Manifest::parse(b"{\"format\": 1, \"id\":")
            .unwrap_err()
            .starts_with("not readable: "));
        assert_eq!(m.total_rows(), 7);
    }
}
