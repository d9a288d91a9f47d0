//! The daemon: runs the configured jobs on their cron schedules in the configured time zone,
//! one at a time (a job due while another runs starts when it ends), and serves `/metrics`
//! (Prometheus text) and `/healthz`. `/metrics` answers from memory: the assets' status is read
//! from the repository every `status_interval_seconds` and after each job, never per scrape
//! (on R2 a listing is a paid operation, and storage that hangs must not hang the scrape). A stop request (SIGTERM) ends the running step the way
//! an interrupted command does (children stopped, nothing half-done committed), releases the
//! lock, notifies, and exits. The clusters of `[daemon] wal_stream` have their WAL streamed
//! beside the jobs, all the time ([`crate::postgres::stream`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use tokio::sync::Notify;

use super::metrics::{JobRun, Render, Snapshot};
use crate::config::{JobConfig, Schedule};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::storage::Requests;
use crate::Context;

/// What `/metrics` shows: the assets' status as last collected, and each job's runs.
#[derive(Default)]
struct Shared {
    snapshot: Mutex<Snapshot>,
    runs: Mutex<Vec<JobRun>>,
    /// Asks the collector to read the repository now (after a job).
    collect_now: Notify,
}

/// The longest one collection of the assets' status may take.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run_daemon(ctx: &Context, run_at_start: bool) -> Result<()> {
    let tz = ctx.config.daemon.time_zone.zone().clone();
    let mut scheduled: Vec<(String, JobConfig, Schedule)> = Vec::new();
    for (name, job) in ctx.config.jobs() {
        if let Some(schedule) = job.schedule.clone() {
            scheduled.push((name, job, schedule));
        }
    }
    if scheduled.is_empty() && ctx.config.daemon.wal_stream.is_empty() {
        return Err(Error::Config(
            "no job has a `schedule`: add one, e.g. `[jobs.daily] schedule = \"0 2 * * *\"`".into(),
        ));
    }
    let mut streams = Vec::new();
    for name in &ctx.config.daemon.wal_stream {
        ctx.config.database(Some(name))?;
        streams.push(tokio::spawn(stream(
            ctx.with_cancel(ctx.cancel.clone()),
            name.clone(),
        )));
    }
    let shared: Arc<Shared> = Arc::default();
    if let Some(address) = &ctx.config.daemon.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| Error::io(format!("listening on `{address}` (daemon.listen)"), e))?;
        tracing::info!("serving /metrics and /healthz on {address}");
        let collector = Arc::new(ctx.with_cancel(ctx.cancel.child_token()));
        let every = Duration::from_secs(ctx.config.daemon.status_interval_seconds.max(1));
        tokio::spawn(collect(collector, shared.clone(), every));
        let metrics = metrics_source(shared.clone(), ctx.requests.clone());
        tokio::spawn(super::http::serve(listener, metrics, ctx.cancel.clone()));
    }
    let mut next: BTreeMap<String, Timestamp> = BTreeMap::new();
    let now = Timestamp::now();
    for (name, _, cron) in &scheduled {
        let at = if run_at_start {
            now
        } else {
            cron.next_after(now, &tz).unwrap_or(Timestamp::MAX)
        };
        tracing::info!(job = %name, schedule = %cron, "next run at {}", at.to_zoned(tz.clone()));
        next.insert(name.clone(), at);
    }
    loop {
        let Some((name, due)) = next
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(n, at)| (n.clone(), *at))
        else {
            // Streams only.
            ctx.cancel.cancelled().await;
            break;
        };
        let wait = due.duration_since(Timestamp::now());
        if wait.is_positive() {
            // Wake at least every minute, so that a clock change is noticed.
            let nap = wait.unsigned_abs().min(Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(nap) => continue,
                () = ctx.cancel.cancelled() => break,
            }
        }
        let (_, job, cron) = scheduled
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("scheduled job");
        tracing::info!(job = %name, "starting");
        let started = Timestamp::now();
        match crate::automation::jobs::run_job(ctx, &name, job).await {
            Ok(report) => {
                tracing::info!(job = %name, ok = report.ok, "finished in {}", crate::units::human_duration(report.seconds));
                let stored = report
                    .steps
                    .iter()
                    .filter(|s| s.ok)
                    .filter_map(|s| s.bytes)
                    .sum();
                record_run(&shared, &name, started, report.ok, report.seconds, stored);
            }
            Err(e) => {
                tracing::error!(job = %name, "did not run: {e}");
                let seconds = Timestamp::now().duration_since(started).as_secs_f64();
                record_run(&shared, &name, started, false, seconds, 0);
            }
        }
        if ctx.cancel.is_cancelled() {
            break;
        }
        let after = Timestamp::now();
        let at = cron.next_after(after, &tz).unwrap_or(Timestamp::MAX);
        tracing::info!(job = %name, "next run at {}", at.to_zoned(tz.clone()));
        next.insert(name, at);
    }
    for stream in streams {
        // Each stores what it received on the way out (the storage is not stopped).
        let _ = tokio::time::timeout(Duration::from_secs(30), stream).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Streams the WAL of cluster `name` until the daemon stops; a stream that cannot run (its
/// server refuses, or is older than 15) is tried again every minute, the reason logged.
async fn stream(ctx: Context, name: String) {
    // The storage is not stopped by the signal: what was received is stored on the way out.
    let storing = ctx.with_cancel(tokio_util::sync::CancellationToken::new());
    loop {
        let ran = async {
            crate::postgres::stream::preflight::preflight(&ctx, &name, Duration::ZERO).await?;
            let repo = Repository::open(&storing).await?;
            crate::postgres::stream::Streamer::new(&ctx, &repo, &name)?
                .run()
                .await
        };
        match ran.await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(db = %name, "the WAL stream cannot run: {e}; trying again in a minute")
            }
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Counts a job's run.
fn record_run(shared: &Shared, job: &str, started: Timestamp, ok: bool, seconds: f64, stored: u64) {
    let mut runs = shared.runs.lock().expect("runs poisoned");
    let index = match runs.iter().position(|r| r.job == job) {
        Some(index) => index,
        None => {
            runs.push(JobRun {
                job: job.to_string(),
                started,
                ok: true,
                seconds: 0.0,
                runs: 0,
                failures: 0,
                stored_bytes: 0,
            });
            runs.len() - 1
        }
    };
    let run = &mut runs[index];
    run.started = started;
    run.ok = ok;
    run.seconds = seconds;
    run.runs += 1;
    run.failures += u64::from(!ok);
    run.stored_bytes += stored;
    drop(runs);
    shared.collect_now.notify_one();
}

/// Reads the assets' status every `every`, and when asked, until the daemon stops; a read
/// that fails or takes too long keeps the last good status and marks the repository down.
async fn collect(ctx: Arc<Context>, shared: Arc<Shared>, every: Duration) {
    loop {
        let read = async {
            let repo = Repository::open(&ctx).await?;
            super::status::status(&ctx, &repo, Timestamp::now()).await
        };
        let outcome = match tokio::time::timeout(COLLECT_TIMEOUT, read).await {
            Ok(outcome) => outcome.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "reading the repository took more than {} s",
                COLLECT_TIMEOUT.as_secs()
            )),
        };
        {
            let mut snapshot = shared.snapshot.lock().expect("snapshot poisoned");
            match outcome {
                Ok(assets) => *snapshot = Snapshot::collected(assets, Timestamp::now()),
                Err(e) => {
                    tracing::warn!("cannot read the assets' status for /metrics: {e}");
                    snapshot.failed(e);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shared.collect_now.notified() => {},
            () = ctx.cancel.cancelled() => return,
        }
    }
}

/// What `/metrics` answers: the last collected status and the job runs, at once.
fn metrics_source(shared: Arc<Shared>, requests: Arc<Requests>) -> super::http::Metrics {
    Arc::new(move || {
        let snapshot = shared.snapshot.lock().expect("snapshot poisoned").clone();
        let runs = shared.runs.lock().expect("runs poisoned").clone();
        let counts = requests.counts();
        let text = super::metrics::render(&Render {
            snapshot: &snapshot,
            runs: &runs,
            requests: Some(&counts),
            now: Timestamp::now(),
        });
        Box::pin(std::future::ready(Ok(text)))
    })
}
