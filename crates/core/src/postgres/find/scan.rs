//! One run of archived segments through `pg_waldump`: the segments fed into a scratch folder a
//! few ahead of where it reads (`--follow`), and removed once it is past them, so that disk and
//! memory stay bounded whatever the window; its lines read as they come.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::waldump::{parse_line, Ended, Line, Tracker, Watch};
use crate::error::{Error, Result};
use crate::process::tools::PgTools;
use crate::wal::{self, WalArchive};
use crate::Context;

/// How many segments are fed ahead of the one `pg_waldump` reads.
const AHEAD: u64 = 4;

/// Segments `first..=last` of `timeline`, of `size` bytes each.
#[derive(Debug, Clone, Copy)]
pub struct Segments {
    pub timeline: u32,
    pub first: u64,
    pub last: u64,
    pub size: u64,
}

/// Which transactions a run keeps: those that ended in `window`, at most `most` (the rest only
/// counted, so that memory stays bounded however busy the table), and it stops at the end of
/// `until_xid`.
#[derive(Debug, Clone)]
pub struct Keep {
    pub window: Option<(jiff::Timestamp, jiff::Timestamp)>,
    pub most: usize,
    pub until_xid: Option<u32>,
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Scanned {
    pub ended: Vec<Ended>,
    /// Transactions in the window past `most`: how many, and when the first of them ended.
    pub more: u64,
    pub first_more: Option<jiff::Timestamp>,
    /// Restore points: their name, position, and the commit time last seen before them.
    pub points: Vec<(String, u64, Option<jiff::Timestamp>)>,
    pub in_flight: usize,
    pub records: u64,
}

/// Runs segments `run` (all archived, contiguous) through `pg_waldump`
/// with `watch`, keeping what `keep` says.
pub async fn scan(
    ctx: &Context,
    archive: &WalArchive<'_>,
    tools: &PgTools,
    run: Segments,
    watch: Watch,
    keep: Keep,
    task: &crate::progress::Task,
) -> Result<Scanned> {
    let Segments {
        timeline,
        first,
        last,
        size: segment_size,
    } = run;
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-find-")
        .tempdir()
        .map_err(|e| Error::io("creating a folder for the WAL to read", e))?;
    // pg_waldump needs its first segment before it starts.
    feed_one(
        ctx,
        archive,
        dir.path(),
        timeline,
        first,
        segment_size,
        true,
    )
    .await?;
    task.advance(segment_size);
    let start = first * segment_size;
    let end = (last + 1) * segment_size;
    let reader = tools
        .tool("pg_waldump")
        .env("TZ", "UTC")
        .arg("--path")
        .arg(dir.path())
        .arg("--timeline")
        .arg(timeline.to_string())
        .arg("--start")
        .arg(wal::format_lsn(start))
        .arg("--end")
        .arg(wal::format_lsn(end))
        .arg("--follow")
        .spawn_reader()?;
    let killer = reader.killer();
    let position = Arc::new(AtomicU64::new(start));
    let done = Arc::new(AtomicBool::new(false));
    let ended_here = Arc::new(AtomicBool::new(false));

    let read = {
        let (position, done, ended_here) = (position.clone(), done.clone(), ended_here.clone());
        tokio::task::spawn_blocking(move || {
            let result = read_lines(reader, watch, &position, &ended_here, &keep);
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    let feed = async {
        let mut removed = first;
        // The segment after the run too, where archived: a record that starts in the last one
        // may end there.
        for number in first + 1..=last + 1 {
            // Wait until pg_waldump is within `AHEAD` segments of this one.
            while !done.load(Ordering::SeqCst)
                && position.load(Ordering::SeqCst) / segment_size + AHEAD < number
            {
                if ctx.cancel.is_cancelled() {
                    return Err(Error::Interrupted("the WAL search was stopped".into()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if done.load(Ordering::SeqCst) {
                break;
            }
            let must = number <= last;
            if feed_one(
                ctx,
                archive,
                dir.path(),
                timeline,
                number,
                segment_size,
                must,
            )
            .await?
            {
                task.advance(segment_size);
            }
            // What it is past goes (it reads one segment at a time).
            let reading = position.load(Ordering::SeqCst) / segment_size;
            while removed + 1 < reading {
                let name = wal::segment_name(timeline, removed, segment_size);
                let _ = std::fs::remove_file(dir.path().join(name));
                removed += 1;
            }
        }
        // Everything is fed: pg_waldump ends at `--end`, or waits (`--follow`) for a record
        // that continues past what is archived; once it reads nothing more, that is the end.
        let mut seen = position.load(Ordering::SeqCst);
        let mut still = 0;
        while !done.load(Ordering::SeqCst) {
            if ctx.cancel.is_cancelled() {
                return Err(Error::Interrupted("the WAL search was stopped".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = position.load(Ordering::SeqCst);
            still = if now == seen { still + 1 } else { 0 };
            seen = now;
            if still >= IDLE_TICKS {
                ended_here.store(true, Ordering::SeqCst);
                killer.kill();
                break;
            }
        }
        Ok(())
    };
    let fed = feed.await;
    if let Err(e) = fed {
        ended_here.store(true, Ordering::SeqCst);
        killer.kill();
        let _ = read.await;
        return Err(e);
    }
    read.await
        .map_err(|e| Error::Internal(format!("reading pg_waldump's output: {e}")))?
}

/// How long (in tenths of a second) pg_waldump may read nothing, once every segment is fed,
/// before its run is taken as ended.
const IDLE_TICKS: u32 = 50;

async fn feed_one(
    ctx: &Context,
    archive: &WalArchive<'_>,
    dir: &std::path::Path,
    timeline: u32,
    number: u64,
    segment_size: u64,
    must: bool,
) -> Result<bool> {
    let name = wal::segment_name(timeline, number, segment_size);
    let bytes = wal::read_archived(ctx, archive, &name).await?;
    let bytes = match bytes {
        Some(bytes) => bytes,
        None if !must => return Ok(false),
        None => return Err(Error::Missing(format!(
            "segment `{name}` is not in the archive of {} any more: it was pruned while it was being read; try again",
            archive.describe()
        ))),
    };
    let partial = dir.join(format!("{name}.partial-feed"));
    std::fs::write(&partial, &bytes).map_err(|e| Error::io("writing a segment to read", e))?;
    std::fs::rename(&partial, dir.join(&name))
        .map_err(|e| Error::io("writing a segment to read", e))?;
    Ok(true)
}

fn read_lines(
    reader: crate::process::ChildReader,
    watch: Watch,
    position: &AtomicU64,
    ended_here: &AtomicBool,
    keep: &Keep,
) -> Result<Scanned> {
    let killer = reader.killer();
    let mut lines = std::io::BufReader::with_capacity(1 << 16, reader);
    let mut tracker = Tracker::new(watch);
    let mut out = Scanned::default();
    let mut last_commit = None;
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // Stopped by the feeder: at the end of what is archived, or on its error.
            Err(_) if ended_here.load(Ordering::SeqCst) => break,
            // pg_waldump failed: its own error, with what it said.
            Err(e) => {
                return Err(
                    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                        Some(Ok(error)) => *error,
                        Some(Err(other)) => {
                            Error::Internal(format!("reading pg_waldump's output: {other}"))
                        }
                        None => Error::Internal("reading pg_waldump's output failed".into()),
                    },
                )
            }
        }
        let Some(parsed) = parse_line(&line) else {
            continue;
        };
        out.records += 1;
        if let Some(lsn) = parsed.lsn() {
            position.store(lsn, Ordering::SeqCst);
        }
        if let Line::RestorePoint { lsn, name } = &parsed {
            out.points.push((name.clone(), *lsn, last_commit));
            continue;
        }
        if let Line::End { at: Some(at), .. } = &parsed {
            last_commit = Some(*at);
        }
        let Some(ended) = tracker.feed(parsed) else {
            continue;
        };
        let found = keep.until_xid == Some(ended.xid);
        let in_window = keep
            .window
            .is_none_or(|(since, until)| ended.at.is_some_and(|at| at >= since && at <= until));
        if !(found || in_window) {
            continue;
        }
        if found || out.ended.len() < keep.most {
            out.ended.push(ended);
        } else {
            out.more += 1;
            out.first_more = out.first_more.or(ended.at);
        }
        if found {
            ended_here.store(true, Ordering::SeqCst);
            killer.kill();
            break;
        }
    }
    out.in_flight = tracker.in_flight();
    Ok(out)
}
