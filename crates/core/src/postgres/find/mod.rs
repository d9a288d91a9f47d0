//! `lifeboat wal find`: what the archived WAL says happened in a window, so that a recovery
//! stops just before the damage: the transactions that changed the tables named (rows
//! inserted, updated, deleted; truncated, rewritten, dropped) or the definitions (`--ddl`),
//! with their commit times, ids and positions, and the restore points among them; and
//! [`find_xid`], the end of one transaction, for `--before-xid`.
//!
//! `pg_waldump` of the cluster generation's major version decodes the segments
//! ([`waldump`] says why), fed to it from the archive ([`scan`]). A table is found by its
//! relation file: from the live catalog, or, for a table the live database no longer has,
//! from a throwaway recovery to the window's start. The window is chosen by when segments
//! were stored (a segment stored after `since` holds every record after it), then each
//! transaction by its commit time.

pub mod scan;
pub mod waldump;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use self::waldump::{Ddl, Effect, Ended, Watch};
use super::conn::ConnInfo;
use super::pitr::throwaway::{self, ThrowawayRequest};
use super::pitr::{Target, TargetTimeline};
use crate::error::{Error, Result};
use crate::process::tools::PgTools;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::wal::{self, WalArchive};
use crate::Context;

#[derive(Debug, Clone)]
pub struct FindRequest {
    /// The cluster (`--db`), when several archive into the repository.
    pub db: Option<String>,
    pub since: Timestamp,
    pub until: Timestamp,
    /// `SCHEMA.NAME` of each table to follow.
    pub tables: Vec<String>,
    /// Also the transactions that changed definitions.
    pub ddl: bool,
    /// List at most this many transactions (the first in the window); count the rest.
    pub limit: usize,
    pub identity: Option<PathBuf>,
}

/// A table followed, and where its file was found.
#[derive(Debug, Clone, Serialize)]
pub struct Followed {
    pub table: String,
    pub oid: u32,
    pub file: u32,
    /// `live`, or `recovered at TIME` for a table the live database no longer has.
    pub found_in: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableEffect {
    pub table: String,
    #[serde(flatten)]
    pub effect: Effect,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    pub xid: u32,
    /// When it committed (or aborted).
    pub at: Option<Timestamp>,
    /// The position of its commit (or abort) record.
    pub lsn: String,
    pub committed: bool,
    pub tables: Vec<TableEffect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddl: Option<Ddl>,
    /// The command that recovers the tables as they were just before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePoint {
    pub name: String,
    pub lsn: String,
    /// The last commit before it, in the WAL.
    pub after_commit_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct FindReport {
    pub cluster: String,
    pub generation: u32,
    pub since: Timestamp,
    pub until: Timestamp,
    pub followed: Vec<Followed>,
    pub transactions: Vec<Transaction>,
    pub restore_points: Vec<RestorePoint>,
    pub segments: u64,
    pub records: u64,
    pub seconds: f64,
    /// When the newest archived segment was stored: later changes are not in the archive yet.
    pub archive_ends: Option<Timestamp>,
    /// Segments missing from the archive inside the window: what they held is not listed.
    pub gaps: Vec<String>,
    /// Transactions found past `--limit`, not listed, and when the first of them ended.
    pub more: u64,
    pub first_more: Option<Timestamp>,
}

/// The archive to read: the cluster's generation live at a moment, the pg_waldump of its
/// major version, and its segment size.
struct Source<'r> {
    archive: WalArchive<'r>,
    tools: PgTools,
    segment_size: u64,
}

/// The cluster's archive generation live at `at`, with what reads it.
async fn archive_at<'r>(
    ctx: &Context,
    repo: &'r Repository,
    db: Option<&str>,
    at: Timestamp,
) -> Result<Source<'r>> {
    let cluster = wal::cluster::which(ctx, db)?;
    let sole = wal::cluster::sole(ctx, &cluster);
    let generations = wal::cluster::generations(repo, &cluster, sole).await?;
    let archive = match generations
        .iter()
        .rev()
        .find(|g| g.since <= at)
        .or(generations.first())
    {
        Some(g) => WalArchive::new(repo, &cluster, g),
        None => {
            return Err(Error::Missing(format!(
                "cluster `{cluster}` has no WAL archive in repository `{}`: archiving has not started (`lifeboat doctor`)",
                repo.location()
            )))
        }
    };
    // Records are read by pg_waldump of the generation's own major version; its newest base
    // backup tells the segment size (and the version, for an archive recorded without one).
    let newest = newest_base(repo, &archive).await?;
    let segment_size = newest
        .as_ref()
        .and_then(|m| m.base.as_ref().map(|b| b.wal_segment_size))
        .unwrap_or(wal::DEFAULT_SEGMENT_SIZE);
    let major = match archive.generation.major {
        Some(major) => major,
        None => newest
            .as_ref()
            .map(|m| crate::process::tools::major(&m.server_version))
            .ok_or_else(|| {
            Error::Missing(format!(
                "the major version of {} is unknown: take a base backup (`lifeboat backup base`) first",
                archive.describe()
            ))
        })?,
    };
    let own = ctx
        .config
        .postgres
        .get(&cluster)
        .map(|pg| ctx.for_server(pg).tools)
        .filter(|t| t.is_major("pg_waldump", major));
    let tools = own.unwrap_or_else(|| ctx.tools.for_major(major));
    tools.require(
        "pg_waldump",
        major,
        true,
        &format!("reading the WAL of {}", archive.describe()),
    )?;
    Ok(Source {
        archive,
        tools,
        segment_size,
    })
}

/// The archive's newest base backup, which tells its major version and segment size.
async fn newest_base(repo: &Repository, archive: &WalArchive<'_>) -> Result<Option<Manifest>> {
    Ok(repo
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Base && archive.holds(m))
        .max_by_key(|m| m.finished_at))
}

/// The archived segments, per timeline, with when each was stored.
async fn stored_segments(
    archive: &WalArchive<'_>,
    segment_size: u64,
) -> Result<Vec<(u32, u64, Option<Timestamp>)>> {
    let mut out: Vec<(u32, u64, Option<Timestamp>)> = archive
        .storage()
        .list(archive.prefix())
        .await?
        .into_iter()
        .filter_map(|e| {
            let name = archive.name_of_key(&e.path)?;
            let (timeline, number) = wal::segment_of_name(name, segment_size)?;
            Some((timeline, number, e.modified))
        })
        .collect();
    out.sort_by_key(|(t, n, _)| (*t, *n));
    out.dedup_by_key(|(t, n, _)| (*t, *n));
    Ok(out)
}

/// Contiguous runs `(timeline, first, last)` of `segments`.
fn runs(segments: &[(u32, u64)]) -> Vec<(u32, u64, u64)> {
    let mut out: Vec<(u32, u64, u64)> = Vec::new();
    for &(timeline, number) in segments {
        match out.last_mut() {
            Some((t, _, last)) if *t == timeline && *last + 1 == number => *last = number,
            _ => out.push((timeline, number, number)),
        }
    }
    out
}

/// The segments missing between `runs` of one timeline (at most 100 named).
fn gaps(runs: &[(u32, u64, u64)], segment_size: u64) -> Vec<String> {
    runs.windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .flat_map(|w| (w[0].2 + 1..w[1].1).map(move |n| wal::segment_name(w[0].0, n, segment_size)))
        .take(100)
        .collect()
}

/// The segments that can hold a record written between `since` and `until`: per timeline,
/// those stored after `since`, up to the first stored after `until`.
fn in_window(
    stored: &[(u32, u64, Option<Timestamp>)],
    since: Timestamp,
    until: Timestamp,
) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut closed: Option<u32> = None;
    for &(timeline, number, at) in stored {
        if closed == Some(timeline) {
            continue;
        }
        let at = at.unwrap_or(until);
        if at >= since {
            out.push((timeline, number));
            if at > until {
                closed = Some(timeline);
            }
        }
    }
    out
}

const FOLLOW_SQL: &str = "SELECT c.oid::int8, pg_relation_filenode(c.oid)::int8, \
     (SELECT oid FROM pg_database WHERE datname = current_database())::int8, \
     format('%I.%I', n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = to_regclass($1::text)";

/// `(table, oid, file, database oid)` of each name found through `client`.
async fn look_up(
    client: &tokio_postgres::Client,
    names: &[String],
    what: &str,
) -> Result<(Vec<Option<(String, u32, u32)>>, u32)> {
    let db: i64 = client
        .query_one(
            "SELECT oid::int8 FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::postgres(format!("reading {what}'s catalog"), &e))?
        .get(0);
    let mut out = Vec::new();
    for name in names {
        let row = client
            .query_opt(FOLLOW_SQL, &[name])
            .await
            .map_err(|e| Error::postgres(format!("finding table `{name}` in {what}"), &e))?;
        out.push(row.and_then(|r| {
            let file: Option<i64> = r.get(1);
            Some((
                r.get::<_, String>(3),
                r.get::<_, i64>(0) as u32,
                file? as u32,
            ))
        }));
    }
    Ok((out, db as u32))
}

/// What to watch for `request`: each table's file, from the live catalog or (a table gone
/// since) a throwaway recovery to the window's start.
async fn follow(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    request: &FindRequest,
) -> Result<(Watch, Vec<Followed>)> {
    let pg = ctx.config.database(Some(cluster))?.1;
    let conn = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    let client = conn.connect(&format!("database `{cluster}`")).await?;
    let (live, db) = look_up(&client, &request.tables, "the live database").await?;
    drop(client);
    let mut followed: Vec<Option<Followed>> = live
        .into_iter()
        .map(|found| {
            found.map(|(table, oid, file)| Followed {
                table,
                oid,
                file,
                found_in: "live".into(),
            })
        })
        .collect();
    let gone: Vec<String> = request
        .tables
        .iter()
        .zip(&followed)
        .filter(|(_, f)| f.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if !gone.is_empty() {
        tracing::info!(
            "{} not in the live database: recovering the catalog as it was at {} on a throwaway server",
            crate::error::listed(&gone),
            request.since
        );
        let recovered = throwaway::recover(
            ctx,
            repo,
            &ThrowawayRequest {
                target: Target::Time(request.since),
                timeline: TargetTimeline::Latest,
                base: None,
                db: Some(cluster.to_string()),
                identity: request.identity.clone(),
                work_dir: None,
                prefix: "lifeboat-find-",
            },
        )
        .await?;
        let user = crate::postgres::table::backup_role(ctx, cluster);
        let (client, _) = recovered.connect_superuser(conn.dbname(), &user).await?;
        let at = format!("recovered at {}", request.since);
        let (then, _) = look_up(&client, &gone, "the recovered database").await?;
        drop(client);
        let mut then = then.into_iter();
        for slot in followed.iter_mut().filter(|f| f.is_none()) {
            *slot = then.next().flatten().map(|(table, oid, file)| Followed {
                table,
                oid,
                file,
                found_in: at.clone(),
            });
        }
    }
    let mut watch = Watch {
        ddl_in: request.ddl.then_some(db),
        ..Watch::default()
    };
    let mut out = Vec::new();
    for (name, found) in request.tables.iter().zip(followed) {
        let found = found.ok_or_else(|| {
            Error::Usage(format!(
                "no table `{name}` in database `{}`, live or at {}: name it as `SCHEMA.NAME` (`--ddl` lists the transactions that dropped tables)",
                conn.dbname(),
                request.since
            ))
        })?;
        watch.files.insert((db, found.file), out.len());
        watch.oids.insert(found.oid, out.len());
        out.push(found);
    }
    Ok((watch, out))
}

/// Lists what the archived WAL of `request`'s window says happened.
pub async fn find(ctx: &Context, repo: &Repository, request: &FindRequest) -> Result<FindReport> {
    if request.tables.is_empty() && !request.ddl {
        return Err(Error::Usage(
            "name what to look for: `--table SCHEMA.NAME` (several allowed), or `--ddl`".into(),
        ));
    }
    if request.since >= request.until {
        return Err(Error::Usage(format!(
            "`--since {}` is not before `--until {}`",
            request.since, request.until
        )));
    }
    let begun = Instant::now();
    let Source {
        archive,
        tools,
        segment_size,
    } = archive_at(ctx, repo, request.db.as_deref(), request.since).await?;
    let (watch, followed) = follow(ctx, repo, &archive.cluster, request).await?;
    let stored = stored_segments(&archive, segment_size).await?;
    let archive_ends = stored.iter().filter_map(|s| s.2).max();
    let chosen = in_window(&stored, request.since, request.until);
    let mut report = FindReport {
        cluster: archive.cluster.clone(),
        generation: archive.generation.generation,
        since: request.since,
        until: request.until,
        followed,
        transactions: Vec::new(),
        restore_points: Vec::new(),
        segments: chosen.len() as u64,
        records: 0,
        seconds: 0.0,
        archive_ends,
        gaps: gaps(&runs(&chosen), segment_size),
        more: 0,
        first_more: None,
    };
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    let task = ctx
        .progress
        .start("reading WAL", Some(chosen.len() as u64 * segment_size));
    for (timeline, first, last) in runs(&chosen) {
        task.note(&format!("timeline {timeline}"));
        let scanned = scan::scan(
            ctx,
            &archive,
            &tools,
            scan::Segments {
                timeline,
                first,
                last,
                size: segment_size,
            },
            watch.clone(),
            scan::Keep {
                window: Some((request.since, request.until)),
                most: request.limit.saturating_sub(report.transactions.len()),
                until_xid: None,
            },
            &task,
        )
        .await?;
        report.records += scanned.records;
        report.more += scanned.more;
        report.first_more = report.first_more.or(scanned.first_more);
        for ended in scanned.ended {
            // The segment a timeline forked in is read on both timelines.
            if seen.insert((ended.xid, ended.lsn)) {
                report.transactions.push(transaction(
                    ctx,
                    &report.followed,
                    &archive.cluster,
                    ended,
                ));
            }
        }
        for (name, lsn, after) in scanned.points {
            let in_window = after.is_none_or(|at| at >= request.since && at <= request.until);
            if in_window
                && !report
                    .restore_points
                    .iter()
                    .any(|p| p.lsn == wal::format_lsn(lsn))
            {
                report.restore_points.push(RestorePoint {
                    name,
                    lsn: wal::format_lsn(lsn),
                    after_commit_at: after,
                });
            }
        }
    }
    report.transactions.sort_by_key(|t| (t.at, t.xid));
    report.seconds = begun.elapsed().as_secs_f64();
    Ok(report)
}

fn transaction(ctx: &Context, followed: &[Followed], cluster: &str, ended: Ended) -> Transaction {
    let tables: Vec<TableEffect> = ended
        .tables
        .into_iter()
        .map(|(i, effect)| TableEffect {
            table: followed[i].table.clone(),
            summary: effect.describe(),
            effect,
        })
        .collect();
    let db = if wal::cluster::sole(ctx, cluster) {
        String::new()
    } else {
        format!(" --db {cluster}")
    };
    let undo = ended.committed.then(|| {
        if tables.is_empty() || tables.iter().any(|t| t.effect.dropped) {
            format!(
                "lifeboat restore pitr{db} --before-xid {} --pgdata NEW_FOLDER",
                ended.xid
            )
        } else {
            format!(
                "lifeboat restore table{db} {} --before-xid {}",
                tables
                    .iter()
                    .map(|t| t.table.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                ended.xid
            )
        }
    });
    Transaction {
        xid: ended.xid,
        at: ended.at,
        lsn: wal::format_lsn(ended.lsn),
        committed: ended.committed,
        tables,
        ddl: ended.ddl,
        undo,
    }
}

/// Where transaction `xid` ended, for `--before-xid`.
#[derive(Debug, Clone)]
pub struct XidEnd {
    pub xid: u32,
    pub lsn: u64,
    pub at: Option<Timestamp>,
    pub committed: bool,
    pub timeline: u32,
}

/// How many segments each step of [`find_xid`]'s backward search reads.
const STEP: u64 = 16;

/// Finds where transaction `xid` of cluster `db` committed (or aborted), reading the archive
/// backwards from its newest segment, [`STEP`] segments at a time.
pub async fn find_xid(
    ctx: &Context,
    repo: &Repository,
    db: Option<&str>,
    xid: u32,
) -> Result<XidEnd> {
    let Source {
        archive,
        tools,
        segment_size,
    } = archive_at(ctx, repo, db, Timestamp::now()).await?;
    let stored = stored_segments(&archive, segment_size).await?;
    let all: Vec<(u32, u64)> = stored.iter().map(|(t, n, _)| (*t, *n)).collect();
    let mut read = 0u64;
    // Newest timeline first, each run from its end backwards.
    let task = ctx
        .progress
        .start(&format!("looking for transaction {xid}"), None);
    let mut spans = runs(&all);
    spans.sort_by_key(|(t, first, _)| std::cmp::Reverse((*t, *first)));
    for (timeline, first, last) in spans {
        let mut end = last;
        loop {
            let start = end.saturating_sub(STEP - 1).max(first);
            task.note(&format!(
                "segments {} to {}",
                wal::segment_name(timeline, start, segment_size),
                wal::segment_name(timeline, end, segment_size)
            ));
            let watch = Watch {
                xid: Some(xid),
                ..Watch::default()
            };
            let scanned = scan::scan(
                ctx,
                &archive,
                &tools,
                scan::Segments {
                    timeline,
                    first: start,
                    last: end,
                    size: segment_size,
                },
                watch,
                scan::Keep {
                    window: None,
                    most: 0,
                    until_xid: Some(xid),
                },
                &task,
            )
            .await?;
            read += end - start + 1;
            if let Some(found) = scanned.ended.iter().find(|e| e.xid == xid) {
                return Ok(XidEnd {
                    xid,
                    lsn: found.lsn,
                    at: found.at,
                    committed: found.committed,
                    timeline,
                });
            }
            if start == first {
                break;
            }
            end = start - 1;
        }
    }
    Err(Error::Missing(format!(
        "transaction {xid} ends in none of the {read} archived segment(s) of {}: `lifeboat wal find` lists the transactions of a window",
        archive.describe()
    )))
}

/// Where transaction `xid` committed, for a recovery to just before it; refused when it
/// aborted (it changed nothing).
pub async fn committed_xid(
    ctx: &Context,
    repo: &Repository,
    db: Option<&str>,
    xid: u32,
) -> Result<XidEnd> {
    let end = find_xid(ctx, repo, db, xid).await?;
    if !end.committed {
        return Err(Error::Usage(format!(
            "transaction {xid} aborted{}: it changed nothing, so there is nothing to recover before it",
            end.at.map_or(String::new(), |at| format!(" at {at}"))
        )));
    }
    tracing::info!(
        "transaction {xid} committed at {} ({}): recovering to just before it",
        end.at.map_or("an unknown time".into(), |at| at.to_string()),
        wal::format_lsn(end.lsn)
    );
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_window_takes_the_segments_that_can_hold_it() {
        let stored = vec![
            (1, 1, Some(at("2026-01-01T10:00:00Z"))),
            (1, 2, Some(at("2026-01-01T11:00:00Z"))),
            (1, 3, Some(at("2026-01-01T12:00:00Z"))),
            (1, 4, Some(at("2026-01-01T13:00:00Z"))),
            (2, 4, Some(at("2026-01-01T12:30:00Z"))),
            (2, 5, Some(at("2026-01-01T14:00:00Z"))),
        ];
        let chosen = in_window(
            &stored,
            at("2026-01-01T10:30:00Z"),
            at("2026-01-01T11:30:00Z"),
        );
        // Segment 2 was stored in the window; segment 3, stored after it, holds its end.
        assert_eq!(chosen, vec![(1, 2), (1, 3), (2, 4)]);
        let found = runs(&[(1, 2), (1, 3), (1, 5), (2, 5)]);
        assert_eq!(found, vec![(1, 2, 3), (1, 5, 5), (2, 5, 5)]);
        let size = wal::DEFAULT_SEGMENT_SIZE;
        assert_eq!(gaps(&found, size), vec![wal::segment_name(1, 4, size)]);
    }
}
