//! What a server says of its own WAL archiving: `pg_stat_archiver` (archived and failed
//! attempts) and the WAL waiting in `pg_wal` to be archived (`pg_ls_archive_statusdir()`,
//! which needs `pg_monitor` or a superuser; without it, the waiting WAL is unknown); and the
//! restore points made on it.

use serde::Serialize;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Archiver {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    /// `.ready` files in `pg_wal/archive_status`, and the size of their segments.
    pub waiting_segments: Option<u64>,
    pub waiting_bytes: Option<u64>,
    /// `[wal] queue_max_mib`, in bytes.
    pub queue_max_bytes: Option<u64>,
    /// The last attempt failed: no segment archived since the last failure.
    pub last_failed_is_newest: bool,
    /// `wal-stream`'s replication slot, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSlot>,
}

/// `wal-stream`'s slot as the server sees it (`pg_replication_slots`, `pg_stat_replication`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamSlot {
    pub slot: String,
    /// A stream reads it now.
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` or `lost` (invalidated).
    pub wal_status: Option<String>,
    /// WAL the slot keeps in `pg_wal`.
    pub retained_bytes: Option<i64>,
    /// WAL written and not yet stored by the stream.
    pub lag_bytes: Option<i64>,
    /// How long the last stored WAL took to be stored after it was written (`flush_lag`; 0
    /// once the stream has caught up, which PostgreSQL shows as no lag at all).
    pub lag_seconds: Option<f64>,
}

impl Archiver {
    /// Failing now: the last attempt failed (no success since the last failure).
    pub fn failing(&self) -> bool {
        self.last_failed_wal.is_some() && self.last_failed_is_newest
    }
}

/// Reads the archiver's state of the server of `pg`.
pub async fn read(pg: &PostgresConfig, queue_max_mib: Option<u64>, slot: &str) -> Result<Archiver> {
    let client = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?
        .connect("the server, for its archiver")
        .await?;
    let row = client
        .query_one(
            "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal, \
             last_failed_time::text, \
             coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) \
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading pg_stat_archiver", &e))?;
    let waiting = client
        .query_one(
            "SELECT count(*), count(*) * pg_size_bytes(current_setting('wal_segment_size')) \
             FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
            &[],
        )
        .await
        .ok()
        .and_then(|row| {
            let segments: i64 = row.try_get(0).ok()?;
            let bytes: i64 = row.try_get(1).ok()?;
            Some((segments as u64, bytes as u64))
        });
    let stream = client
        .query_opt(
            "SELECT s.active, s.wal_status, (pg_current_wal_lsn() - s.restart_lsn)::bigint, \
             (pg_current_wal_lsn() - r.flush_lsn)::bigint, \
             CASE WHEN r.pid IS NOT NULL THEN coalesce(extract(epoch FROM r.flush_lag), 0)::float8 END \
             FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .ok()
        .flatten()
        .map(|row| StreamSlot {
            slot: slot.to_string(),
            active: row.get(0),
            wal_status: row.get(1),
            retained_bytes: row.get(2),
            lag_bytes: row.get(3),
            lag_seconds: row.get(4),
        });
    Ok(Archiver {
        stream,
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        failed_count: row.get(2),
        last_failed_wal: row.get(3),
        last_failed_time: row.get(4),
        last_failed_is_newest: row.get(5),
        waiting_segments: waiting.map(|w| w.0),
        waiting_bytes: waiting.map(|w| w.1),
        queue_max_bytes: queue_max_mib.map(|m| m * 1024 * 1024),
    })
}

/// Creates restore point `name` on the server of `pg` (`pg_create_restore_point`); its LSN.
pub async fn restore_point(pg: &PostgresConfig, name: &str) -> Result<String> {
    let client = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?
        .connect("the server, for a restore point")
        .await?;
    Ok(client
        .query_one("SELECT pg_create_restore_point($1)::text", &[&name])
        .await
        .map_err(|e| Error::postgres(format!("creating restore point `{name}`"), &e))?
        .get(0))
}
