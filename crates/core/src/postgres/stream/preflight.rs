//! What is checked before a stream starts (and shown by `wal-stream --dry-run`): the server
//! can stream (PostgreSQL 15 or later), its slot cannot fill `pg_wal` past the limit lifeboat
//! keeps archiving to (`[wal] queue_max_mib` against `max_slot_wal_keep_size`), a synchronous
//! stream is one the server waits for and not one it would wait for forever
//! (`synchronous_commit = remote_apply`), and what the stream will cost in requests.

use serde::Serialize;

use super::{forecast, Forecast};
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;
use crate::Context;

/// What a stream finds on its server.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub cluster: String,
    pub slot: String,
    pub server_version_num: i32,
    /// The slot's `wal_status` (`reserved`, `extended`, `unreserved`, `lost`), if it exists.
    pub slot_status: Option<String>,
    /// WAL the slot keeps in `pg_wal`, in bytes.
    pub slot_retained_bytes: Option<i64>,
    pub sync: bool,
    /// The slot is named in `synchronous_standby_names`: commits wait for the stream.
    pub synchronous: bool,
    pub synchronous_commit: String,
    /// `max_slot_wal_keep_size` in MB; -1: no limit.
    pub max_slot_wal_keep_size_mb: i64,
    pub warnings: Vec<String>,
    pub forecast: Forecast,
}

/// Whether `names` (`synchronous_standby_names`) names `slot`.
pub fn names_standby(names: &str, slot: &str) -> bool {
    let list = names.trim();
    // `FIRST n (a, b)`, `ANY n (a, b)`, `n (a, b)` or `a, b`.
    let inner = match (list.find('('), list.rfind(')')) {
        (Some(open), Some(close)) if open < close => &list[open + 1..close],
        _ => list,
    };
    inner
        .split(',')
        .map(|n| n.trim().trim_matches('"'))
        .any(|n| n == "*" || n.eq_ignore_ascii_case(slot))
}

/// Checks the server of `cluster` for a stream through `slot`; WAL written is measured over
/// `measure` for the forecast (none: no measurement).
pub async fn preflight(
    ctx: &Context,
    cluster: &str,
    measure: std::time::Duration,
) -> Result<Preflight> {
    let (_, pg) = ctx.config.database(Some(cluster))?;
    let info = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    let client = info.connect("the server to stream from").await?;
    let what = |q: &str| format!("reading {q}");
    let one = |q: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(q, &[])
                .await
                .map_err(|e| Error::postgres(what(q), &e))
        }
    };
    let slot = ctx.config.wal.stream_slot.clone();
    let version: i32 = one("SELECT current_setting('server_version_num')::int")
        .await?
        .get(0);
    if version < 150_000 {
        return Err(Error::Usage(format!(
            "`wal-stream` needs PostgreSQL 15 or later; `{}` runs {}: archive with `archive_command` only",
            info.redacted(),
            version / 10_000
        )));
    }
    let row = one(
        "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names'), \
         pg_size_bytes(CASE current_setting('max_slot_wal_keep_size') WHEN '-1' THEN '-1MB' ELSE current_setting('max_slot_wal_keep_size') END) / 1048576, \
         pg_size_bytes(current_setting('wal_segment_size'))",
    )
    .await?;
    let synchronous_commit: String = row.get(0);
    let standby_names: String = row.get(1);
    let keep_mb: i64 = row.get(2);
    let segment_size: i64 = row.get(3);
    let slot_row = client
        .query_opt(
            "SELECT wal_status, (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::postgres("reading the replication slot", &e))?;
    let (slot_status, slot_retained_bytes) = match &slot_row {
        Some(r) => (r.get::<_, Option<String>>(0), r.get::<_, Option<i64>>(1)),
        None => (None, None),
    };
    let sync = ctx.config.wal.stream_sync;
    let synchronous = names_standby(&standby_names, &slot);
    if sync && synchronous && synchronous_commit == "remote_apply" {
        return Err(Error::Config(format!(
            "`synchronous_commit = remote_apply` on `{}` makes every commit wait for a replay that a stream never does: set it to `on` (or `remote_write`)",
            info.redacted()
        )));
    }
    let mut warnings = Vec::new();
    match (ctx.config.wal.queue_max_mib, keep_mb) {
        (Some(max), -1) => {
            return Err(Error::Config(format!(
                "`[wal] queue_max_mib` ({max}) limits the WAL kept for archiving, but `max_slot_wal_keep_size` on `{}` is unlimited, so a stopped stream would fill pg_wal: run `ALTER SYSTEM SET max_slot_wal_keep_size = '{max}MB'; SELECT pg_reload_conf()`",
                info.redacted()
            )))
        }
        (Some(max), keep) if keep > max as i64 => {
            return Err(Error::Config(format!(
                "`max_slot_wal_keep_size` on `{}` ({keep} MB) is more than `[wal] queue_max_mib` ({max}): run `ALTER SYSTEM SET max_slot_wal_keep_size = '{max}MB'; SELECT pg_reload_conf()`",
                info.redacted()
            )))
        }
        (None, -1) => warnings.push(
            "`max_slot_wal_keep_size` is unlimited: a stream that stops keeps WAL in pg_wal until the disk fills; set it (and `[wal] queue_max_mib`)".to_string(),
        ),
        _ => {}
    }
    if sync && !synchronous {
        warnings.push(format!(
            "`[wal] stream_sync` is on but `synchronous_standby_names` does not name `{slot}`: commits do not wait for the stream (set synchronous_standby_names = '{slot}')"
        ));
    }
    if slot_status.as_deref() == Some("lost") {
        warnings.push(format!(
            "the replication slot `{slot}` was invalidated: it will be made again, and the WAL since it stopped comes from archive_command only"
        ));
    }
    let rate = if measure.is_zero() {
        0.0
    } else {
        let lsn = "SELECT (pg_current_wal_lsn() - '0/0')::float8";
        let first: f64 = one(lsn).await?.get(0);
        let began = std::time::Instant::now();
        tokio::time::sleep(measure).await;
        let second: f64 = one(lsn).await?.get(0);
        (second - first) / began.elapsed().as_secs_f64()
    };
    Ok(Preflight {
        cluster: cluster.to_string(),
        slot,
        server_version_num: version,
        slot_status,
        slot_retained_bytes,
        sync,
        synchronous,
        synchronous_commit,
        max_slot_wal_keep_size_mb: keep_mb,
        warnings,
        forecast: forecast(
            rate,
            ctx.config.wal.stream_flush_ms,
            segment_size.max(1) as u64,
            sync,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names_are_read_in_every_form() {
        assert!(names_standby("lifeboat", "lifeboat"));
        assert!(names_standby("FIRST 1 (replica, \"lifeboat\")", "lifeboat"));
        assert!(names_standby("ANY 1 (a, b, LIFEBOAT)", "lifeboat"));
        assert!(names_standby("*", "lifeboat"));
        assert!(!names_standby("", "lifeboat"));
        assert!(!names_standby("replica1, replica2", "lifeboat"));
    }
}
