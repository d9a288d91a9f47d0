//! Jobs: named lists of steps (`backup db`, `backup objects`, `prune`, `verify`...) run in
//! order under the repository's run lock. A failing step does not stop the others; the run's
//! report says what each did, how big and how long, and is what notifications carry.

use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::BackupKind;
use crate::postgres::dump::{backup_db, DumpRequest};
use crate::repository::Repository;
use crate::Context;

/// One configured step, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    BackupDb(Option<String>),
    BackupBase(Option<String>),
    BackupObjects(Option<String>),
    BackupRedis,
    Prune,
    Verify(Option<BackupKind>),
}

impl Step {
    pub fn parse(text: &str) -> std::result::Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let name = |i: usize| words.get(i).map(|s| s.to_string());
        match words.as_slice() {
            ["backup", "db", ..] if words.len() <= 3 => Ok(Step::BackupDb(name(2))),
            ["backup", "base", ..] if words.len() <= 3 => Ok(Step::BackupBase(name(2))),
            ["backup", "objects", ..] if words.len() <= 3 => Ok(Step::BackupObjects(name(2))),
            ["backup", "redis"] => Ok(Step::BackupRedis),
            ["prune"] => Ok(Step::Prune),
            ["verify"] => Ok(Step::Verify(None)),
            ["verify", "db"] => Ok(Step::Verify(Some(BackupKind::Db))),
            ["verify", "base"] => Ok(Step::Verify(Some(BackupKind::Base))),
            _ => Err(format!(
                "unknown step `{text}`: use `backup db [NAME]`, `backup base [NAME]`, `backup objects [NAME]`, `backup redis`, `prune` or `verify [db|base]`"
            )),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub ok: bool,
    /// The backup or run id, the plan's outcome...
    pub detail: String,
    pub bytes: Option<u64>,
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job: String,
    pub repository: String,
    pub host: String,
    pub started: Timestamp,
    pub seconds: f64,
    pub ok: bool,
    pub steps: Vec<StepReport>,
}

impl RunReport {
    pub fn failed(&self) -> Vec<&StepReport> {
        self.steps.iter().filter(|s| !s.ok).collect()
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs a job's steps under the run lock, then notifies.
pub async fn run_job(ctx: &Context, name: &str, job: &JobConfig) -> Result<RunReport> {
    crate::notify::ping(&ctx.config.notify, crate::notify::Ping::Start).await;
    let started = Timestamp::now();
    let clock = Instant::now();
    // The run stops when asked to, and when its lock is found taken over.
    let run_ctx = ctx.with_cancel(ctx.cancel.child_token());
    // A run that cannot start (repository unreachable, another run holding the lock) is a
    // failed run: it is reported and notified like any other.
    let opened = async {
        let repo = Repository::open(ctx).await?;
        let lock =
            crate::lock::RunLock::acquire(&run_ctx, &repo, name, run_ctx.cancel.clone()).await?;
        Ok::<_, Error>((repo, lock))
    }
    .await;
    let (repo, lock) = match opened {
        Ok(both) => both,
        Err(e) => {
            tracing::error!("job `{name}` cannot start: {e}");
            let report = RunReport {
                job: name.to_string(),
                repository: ctx.config.repository.url.to_string(),
                host: host_name(),
                started,
                seconds: (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                ok: false,
                steps: vec![StepReport {
                    step: "start".into(),
                    ok: false,
                    detail: e.to_string(),
                    bytes: None,
                    seconds: 0.0,
                }],
            };
            crate::notify::send(&ctx.config.notify, &report).await;
            return Ok(report);
        }
    };
    let mut steps = Vec::new();
    for text in &job.steps {
        let step = Step::parse(text).map_err(Error::Config)?;
        for (label, outcome, seconds) in run_step(&run_ctx, &repo, &step).await {
            // A step stopped because the lock was taken over failed for that reason.
            let outcome = match outcome {
                Err(Error::Interrupted(_))
                    if lock.lost().is_cancelled() && !ctx.cancel.is_cancelled() =>
                {
                    Err(lost_lock(&repo).await)
                }
                other => other,
            };
            match &outcome {
                Ok((detail, _)) => tracing::info!("{label}: ok in {seconds:.1}s: {detail}"),
                Err(e) => tracing::error!("{label}: failed after {seconds:.1}s: {e}"),
            }
            let ok = outcome.is_ok();
            let (detail, bytes) = match outcome {
                Ok((detail, bytes)) => (detail, bytes),
                Err(e) => (e.to_string(), None),
            };
            steps.push(StepReport {
                step: label,
                ok,
                detail,
                bytes,
                seconds: (seconds * 10.0).round() / 10.0,
            });
        }
        if run_ctx.cancel.is_cancelled() {
            break;
        }
    }
    if lock.lost().is_cancelled() && !ctx.cancel.is_cancelled() {
        let e = lost_lock(&repo).await;
        if !steps.iter().any(|s| s.detail == e.to_string()) {
            tracing::error!("{e}");
            steps.push(StepReport {
                step: "lock".into(),
                ok: false,
                detail: e.to_string(),
                bytes: None,
                seconds: 0.0,
            });
        }
    }
    let report = RunReport {
        job: name.to_string(),
        repository: repo.location().to_string(),
        host: host_name(),
        started,
        seconds: (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        ok: steps.iter().all(|s| s.ok) && !run_ctx.cancel.is_cancelled(),
        steps,
    };
    lock.release().await;
    crate::notify::send(&ctx.config.notify, &report).await;
    Ok(report)
}

/// The error of a run whose lock was taken over, naming who took it.
async fn lost_lock(repo: &Repository) -> Error {
    match crate::lock::read(repo.storage()).await {
        Ok(Some(held)) => held.taken_over(),
        _ => Error::LockLost {
            job: "(none: the lock was removed)".into(),
            host: "?".into(),
            pid: 0,
        },
    }
}

/// Runs `work` under the repository's run lock, as a command that writes (`backup`, `prune`)
/// does outside a job: refused while a run holds it, unless `--wait` gives time.
pub async fn with_run_lock<T>(
    ctx: &Context,
    repo: &Repository,
    what: &str,
    work: impl AsyncFnOnce(&Context) -> Result<T>,
) -> Result<T> {
    let locked_ctx = ctx.with_cancel(ctx.cancel.child_token());
    let lock =
        crate::lock::RunLock::acquire(&locked_ctx, repo, what, locked_ctx.cancel.clone()).await?;
    let outcome = work(&locked_ctx).await;
    let lost = lock.lost().is_cancelled() && !ctx.cancel.is_cancelled();
    lock.release().await;
    match outcome {
        Err(Error::Interrupted(_)) if lost => Err(lost_lock(repo).await),
        other => other,
    }
}

type Outcome = Result<(String, Option<u64>)>;

/// Runs one step, expanded over what is configured: `backup db` is one backup per database.
async fn run_step(ctx: &Context, repo: &Repository, step: &Step) -> Vec<(String, Outcome, f64)> {
    let mut out = Vec::new();
    let config = &ctx.config;
    let pick = |name: &Option<String>, all: Vec<String>| match name {
        Some(n) => vec![n.clone()],
        None => all,
    };
    match step {
        Step::BackupDb(name) => {
            for db in pick(name, config.postgres.keys().cloned().collect()) {
                let clock = Instant::now();
                let outcome = async {
                    let (name, pg) = config.database(Some(&db))?;
                    let m = backup_db(ctx, repo, name, pg, &DumpRequest::default()).await?;
                    Ok((m.id.clone(), Some(m.stored_size)))
                }
                .await;
                out.push((
                    format!("backup db {db}"),
                    outcome,
                    clock.elapsed().as_secs_f64(),
                ));
            }
        }
        Step::BackupBase(name) => {
            let pitr: Vec<String> = config
                .postgres
                .iter()
                .filter(|(_, pg)| pg.pitr)
                .map(|(k, _)| k.clone())
                .collect();
            for db in pick(name, pitr) {
                let clock = Instant::now();
                let outcome = async {
                    let (name, pg) = config.database(Some(&db))?;
                    let m = crate::postgres::base::backup_base(ctx, repo, name, pg).await?;
                    Ok((m.id.clone(), Some(m.stored_size)))
                }
                .await;
                out.push((
                    format!("backup base {db}"),
                    outcome,
                    clock.elapsed().as_secs_f64(),
                ));
            }
        }
        Step::BackupObjects(name) => {
            for objects in pick(name, config.objects.keys().cloned().collect()) {
                let clock = Instant::now();
                let outcome = async {
                    let (name, cfg) = config.objects(Some(&objects))?;
                    let options = crate::objects::BackupOptions {
                        dry_run: false,
                        now: Timestamp::now(),
                    };
                    let report = crate::objects::backup_objects(ctx, name, cfg, &options).await?;
                    let s = &report.summary;
                    let detail = format!(
                        "run {}: {} objects, {} copied, {} moved to history",
                        report.run.clone().unwrap_or_default(),
                        s.objects,
                        s.copied,
                        s.to_history
                    );
                    if s.failed > 0 {
                        return Err(Error::Incomplete(format!(
                            "{detail}; {} objects failed (the next run retries them)",
                            s.failed
                        )));
                    }
                    Ok((detail, Some(s.copied_bytes)))
                }
                .await;
                out.push((
                    format!("backup objects {objects}"),
                    outcome,
                    clock.elapsed().as_secs_f64(),
                ));
            }
        }
        Step::BackupRedis => {
            if let Some(redis) = config.redis.as_ref().filter(|r| r.backup) {
                let clock = Instant::now();
                let outcome = crate::redis::backup(ctx, repo, redis).await;
                out.push((
                    "backup redis".into(),
                    outcome,
                    clock.elapsed().as_secs_f64(),
                ));
            }
        }
        Step::Prune => {
            let clock = Instant::now();
            let outcome = async {
                let plan = crate::prune::plan(ctx, repo, Timestamp::now(), false).await?;
                let done = crate::prune::execute(ctx, repo, &plan).await?;
                Ok((
                    format!(
                        "{} backups deleted, {} promoted, {} WAL files and {} leftovers removed",
                        done.backups_deleted,
                        done.promoted,
                        done.wal_deleted,
                        done.leftovers_deleted
                    ),
                    None,
                ))
            }
            .await;
            out.push(("prune".into(), outcome, clock.elapsed().as_secs_f64()));
        }
        Step::Verify(kind) => {
            let manifests = match repo.list().await {
                Ok(m) => m,
                Err(e) => {
                    out.push(("verify".into(), Err(e), 0.0));
                    return out;
                }
            };
            // The newest backup of each database and kind.
            let mut newest: std::collections::BTreeMap<(String, &str), String> = Default::default();
            for m in manifests
                .iter()
                .filter(|m| kind.is_none_or(|k| m.kind == k))
            {
                newest.insert((m.database.clone(), m.kind.as_str()), m.id.clone());
            }
            for ((database, kind), id) in newest {
                let clock = Instant::now();
                let outcome = async {
                    let v = crate::verify::verify(
                        ctx,
                        repo,
                        &crate::verify::VerifyRequest {
                            backup: id.clone(),
                            jobs: 2,
                            ..Default::default()
                        },
                    )
                    .await?;
                    match v.failures().first() {
                        None => Ok((
                            format!(
                                "{id} restores in {:.1}s",
                                v.recovery_seconds.unwrap_or_default()
                            ),
                            None,
                        )),
                        Some(check) => Err(Error::Mismatch {
                            id: id.clone(),
                            detail: format!("{}: {}", check.name, check.detail),
                        }),
                    }
                }
                .await;
                out.push((
                    format!("verify {kind} {database}"),
                    outcome,
                    clock.elapsed().as_secs_f64(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!(Step::parse("backup db"), Ok(Step::BackupDb(None)));
        assert_eq!(
            Step::parse("backup  objects media"),
            Ok(Step::BackupObjects(Some("media".into())))
        );
        assert_eq!(
            Step::parse("verify base"),
            Ok(Step::Verify(Some(BackupKind::Base)))
        );
        let err = Step::parse("backup everything now").unwrap_err();
        assert!(
            err.contains("unknown step `backup everything now`"),
            "{err}"
        );
    }
}
