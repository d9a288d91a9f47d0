//! `run JOB`: a configured job's steps under the run lock, reported and notified; the command
//! fails when a step did.

use lifeboat_core::automation::notify;
use lifeboat_core::{Context, Error, Result};

use crate::output::{emit, print_json};

pub async fn run(ctx: &Context, job: &str, json: bool) -> Result<()> {
    let jobs = ctx.config.jobs();
    let config = jobs.get(job).ok_or_else(|| {
        Error::Config(format!(
            "job `{job}` is not configured: the jobs are {}",
            jobs.keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let report = lifeboat_core::run_job(ctx, job, config).await?;
    if json {
        print_json(&report)?;
    } else {
        emit(&format!("{}\n", notify::summary(&report)))?;
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted(format!("job `{job}` stopped")));
    }
    if let Some(cause) = &report.not_started {
        return Err(Error::NotStarted {
            job: job.to_string(),
            cause: cause.clone(),
        });
    }
    let failed = report.failed();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Incomplete(format!(
            "job `{job}`: {} of {} steps failed: {}",
            failed.len(),
            report.steps.len(),
            failed
                .iter()
                .map(|s| format!("{} ({})", s.step, s.detail))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}
