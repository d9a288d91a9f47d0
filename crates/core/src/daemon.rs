//! The daemon: runs the configured jobs on their cron schedules in the configured time zone,
//! one at a time (a job due while another runs starts when it ends), and serves `/metrics`
//! (Prometheus text) and `/healthz`. A stop request (SIGTERM) ends the running step the way
//! an interrupted command does (children stopped, nothing half-done committed), releases the
//! lock, notifies, and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Config, JobConfig};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::schedule::Cron;
use crate::Context;

/// The last run of each job: (job, start, ok, seconds).
type Runs = Arc<Mutex<Vec<(String, Timestamp, bool, f64)>>>;

pub async fn run_daemon(ctx: &Context, run_at_start: bool) -> Result<()> {
    let tz = TimeZone::get(&ctx.config.daemon.time_zone)
        .map_err(|_| Error::Config("`daemon.time_zone` is not a time zone".into()))?;
    let mut scheduled: Vec<(String, JobConfig, Cron)> = Vec::new();
    for (name, job) in ctx.config.jobs() {
        if let Some(text) = &job.schedule {
            let cron = Cron::parse(text).map_err(Error::Config)?;
            scheduled.push((name, job, cron));
        }
    }
    if scheduled.is_empty() {
        return Err(Error::Config(
            "no job has a `schedule`: add one, e.g. `[jobs.daily] schedule = \"0 2 * * *\"`".into(),
        ));
    }
    let runs: Runs = Arc::default();
    if let Some(address) = &ctx.config.daemon.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| Error::io(format!("listening on `{address}` (daemon.listen)"), e))?;
        tracing::info!("serving /metrics and /healthz on {address}");
        tokio::spawn(serve(listener, ctx.config.clone(), runs.clone()));
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
        let (name, due) = next
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(n, at)| (n.clone(), *at))
            .expect("at least one scheduled job");
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
        match crate::jobs::run_job(ctx, &name, job).await {
            Ok(report) => {
                tracing::info!(job = %name, ok = report.ok, "finished in {:.1}s", report.seconds);
                let mut runs = runs.lock().expect("runs poisoned");
                runs.retain(|(j, ..)| *j != name);
                runs.push((name.clone(), started, report.ok, report.seconds));
            }
            Err(e) => tracing::error!(job = %name, "did not run: {e}"),
        }
        if ctx.cancel.is_cancelled() {
            break;
        }
        let after = Timestamp::now();
        let at = cron.next_after(after, &tz).unwrap_or(Timestamp::MAX);
        tracing::info!(job = %name, "next run at {}", at.to_zoned(tz.clone()));
        next.insert(name, at);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, config: Config, runs: Runs) {
    let ctx = Arc::new(Context::new(config));
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        let runs = runs.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&request);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = match path.as_str() {
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/metrics" => match metrics(&ctx, &runs).await {
                    Ok(text) => ("200 OK", text),
                    Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                },
                _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

async fn metrics(ctx: &Context, runs: &Runs) -> Result<String> {
    let repo = Repository::open(ctx).await?;
    let assets = crate::status::status(ctx, &repo, Timestamp::now()).await?;
    let runs = runs.lock().expect("runs poisoned").clone();
    Ok(crate::status::metrics(&assets, &runs))
}
