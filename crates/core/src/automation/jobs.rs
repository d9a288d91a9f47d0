//! Jobs: named lists of steps (`backup db`, `backup objects`, `prune`, `verify`...) run in
//! order under the repository's run lock. A failing step does not stop the others; the run's
//! report says what each did, how big and how long, and is what notifications carry.

use std::time::Instant;

use jiff::Timestamp;

use super::notify;
use super::report::{tenths, RunReport, StepReport};
use super::steps::{run_step, StepRun};
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::Context;

/// Runs a job's steps under the run lock, then notifies.
pub async fn run_job(ctx: &Context, name: &str, job: &JobConfig) -> Result<RunReport> {
    notify::ping(&ctx.config.notify, notify::Ping::Start).await;
    let started = Timestamp::now();
    let clock = Instant::now();
    let report = |repository: String, steps: Vec<StepReport>, stopped: bool| RunReport {
        job: name.to_string(),
        repository,
        host: crate::process::host_name(),
        started,
        seconds: tenths(clock.elapsed().as_secs_f64()),
        ok: steps.iter().all(|s| s.ok) && !stopped,
        steps,
        not_started: None,
    };
    // The run stops when asked to, and when its lock is found taken over.
    let run_ctx = ctx.with_cancel(ctx.cancel.child_token());
    // A run that cannot start (repository unreachable, another run holding the lock) is a
    // failed run: it is reported and notified like any other.
    let opened = async {
        let repo = Repository::open(ctx).await?;
        let lock = repo.lock(&run_ctx, name, run_ctx.cancel.clone()).await?;
        Ok::<_, Error>((repo, lock))
    }
    .await;
    let (repo, lock) = match opened {
        Ok(both) => both,
        Err(e) => {
            tracing::error!("job `{name}` cannot start: {e}");
            let mut failed = report(
                ctx.config.repository.url.to_string(),
                vec![failed_step("start", &e)],
                false,
            );
            notify::send(&ctx.config.notify, &failed).await;
            failed.not_started = Some(std::sync::Arc::new(e));
            return Ok(failed);
        }
    };
    let lost = || lock.lost().is_cancelled() && !ctx.cancel.is_cancelled();
    let mut steps = Vec::new();
    for step in &job.steps {
        for StepRun {
            label,
            outcome,
            seconds,
        } in run_step(&run_ctx, &repo, step).await
        {
            // A step stopped because the lock was taken over failed for that reason.
            let outcome = match outcome {
                Err(Error::Interrupted(_)) if lost() => {
                    Err(crate::repository::lock::lost_lock(&repo).await)
                }
                other => other,
            };
            steps.push(match outcome {
                Ok(done) => {
                    tracing::info!(
                        "{label}: ok in {}: {}",
                        crate::units::human_duration(seconds),
                        done.detail
                    );
                    StepReport {
                        step: label,
                        ok: true,
                        detail: done.detail,
                        bytes: done.bytes,
                        seconds: tenths(seconds),
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "{label}: failed after {}: {e}",
                        crate::units::human_duration(seconds)
                    );
                    StepReport {
                        seconds: tenths(seconds),
                        ..failed_step(&label, &e)
                    }
                }
            });
        }
        if run_ctx.cancel.is_cancelled() {
            break;
        }
    }
    if lost() {
        let e = crate::repository::lock::lost_lock(&repo).await;
        if !steps.iter().any(|s| s.detail == e.to_string()) {
            tracing::error!("{e}");
            steps.push(failed_step("lock", &e));
        }
    }
    let report = report(
        repo.location().to_string(),
        steps,
        run_ctx.cancel.is_cancelled(),
    );
    lock.release().await;
    notify::send(&ctx.config.notify, &report).await;
    Ok(report)
}

fn failed_step(step: &str, e: &Error) -> StepReport {
    StepReport {
        step: step.to_string(),
        ok: false,
        detail: e.to_string(),
        bytes: None,
        seconds: 0.0,
    }
}
