//! The steps of a job, each expanded over what is configured (`backup db` is one backup per
//! database, `verify` one verification per database and kind) and timed.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use jiff::Timestamp;

use crate::config::{Step, StepKind};
use crate::error::{Error, Result};
use crate::postgres::dump::{backup_db, DumpRequest};
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::Context;

/// What a step that succeeded says about itself.
pub struct Done {
    pub detail: String,
    pub bytes: Option<u64>,
}

impl Done {
    fn backup(manifest: &Manifest) -> Done {
        Done {
            detail: manifest.id.clone(),
            bytes: Some(manifest.stored_size),
        }
    }
}

/// One expanded step, run.
pub struct StepRun {
    pub label: String,
    pub outcome: Result<Done>,
    pub seconds: f64,
}

async fn timed(label: String, work: impl Future<Output = Result<Done>>) -> StepRun {
    let clock = Instant::now();
    let outcome = work.await;
    StepRun {
        label,
        outcome,
        seconds: clock.elapsed().as_secs_f64(),
    }
}

/// Runs one step, expanded over what is configured.
pub async fn run_step(ctx: &Context, repo: &Repository, step: &Step) -> Vec<StepRun> {
    let config = &ctx.config;
    let pick = |name: &Option<String>, all: Vec<String>| match name {
        Some(n) => vec![n.clone()],
        None => all,
    };
    let mut out = Vec::new();
    match step {
        Step::BackupDb(name) => {
            for db in pick(name, config.postgres.keys().cloned().collect()) {
                out.push(
                    timed(format!("backup db {db}"), async {
                        let (name, pg) = config.database(Some(&db))?;
                        let m = backup_db(ctx, repo, name, pg, &DumpRequest::default()).await?;
                        Ok(Done::backup(&m))
                    })
                    .await,
                );
            }
        }
        Step::BackupBase(name, incremental) => {
            let archiving = config.postgres.iter().filter(|(_, pg)| pg.pitr);
            for db in pick(name, archiving.map(|(k, _)| k.clone()).collect()) {
                out.push(
                    timed(format!("{} {db}", step_name(*incremental)), async {
                        let (name, pg) = config.database(Some(&db))?;
                        let m =
                            crate::postgres::base::backup_base(ctx, repo, name, pg, *incremental)
                                .await?;
                        Ok(Done::backup(&m))
                    })
                    .await,
                );
            }
        }
        Step::BackupObjects(name) => {
            for objects in pick(name, config.objects.keys().cloned().collect()) {
                let label = format!("backup objects {objects}");
                out.push(timed(label, backup_bucket(ctx, &objects)).await);
            }
        }
        Step::BackupRedis => {
            if let Some(redis) = config.redis.as_ref().filter(|r| r.backup) {
                out.push(
                    timed("backup redis".into(), async {
                        let m = crate::redis::backup_redis(ctx, repo, redis).await?;
                        Ok(Done::backup(&m))
                    })
                    .await,
                );
            }
        }
        Step::Copy(name) => {
            for copy in pick(name, config.repository.copies.keys().cloned().collect()) {
                out.push(
                    timed(format!("copy {copy}"), async {
                        let report =
                            crate::copies::copy_repository(ctx, repo, &copy, false).await?;
                        Ok(Done {
                            detail: format!(
                                "{} backups and {} WAL files copied to `{}`; {}",
                                report.backups_copied.len(),
                                report.wal_copied,
                                report.location,
                                report.pruned.unwrap_or_default()
                            ),
                            bytes: Some(report.bytes_copied),
                        })
                    })
                    .await,
                );
            }
        }
        Step::Prune => out.push(timed("prune".into(), prune(ctx, repo)).await),
        Step::Verify(kind) => out.extend(verify(ctx, repo, *kind).await),
    }
    out
}

async fn backup_bucket(ctx: &Context, objects: &str) -> Result<Done> {
    let (name, cfg) = ctx.config.objects(Some(objects))?;
    let options = crate::buckets::BucketBackupOptions {
        dry_run: false,
        now: Timestamp::now(),
    };
    let report = crate::buckets::backup_bucket(ctx, name, cfg, &options).await?;
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
    Ok(Done {
        detail,
        bytes: Some(s.copied_bytes),
    })
}

async fn prune(ctx: &Context, repo: &Repository) -> Result<Done> {
    let plan = crate::retention::prune::plan_prune(ctx, repo, Timestamp::now(), false).await?;
    let done = crate::retention::prune::execute_prune(ctx, repo, &plan).await?;
    Ok(Done {
        detail: format!(
            "{} backups deleted, {} promoted, {} WAL files and {} leftovers removed",
            done.backups_deleted, done.promoted, done.wal_deleted, done.leftovers_deleted
        ),
        bytes: None,
    })
}

/// Verifies the newest backup of each database and kind (of `kind` only, if given).
async fn verify(ctx: &Context, repo: &Repository, kind: Option<StepKind>) -> Vec<StepRun> {
    let kind = kind.map(|k| match k {
        StepKind::Db => BackupKind::Db,
        StepKind::Base => BackupKind::Base,
    });
    let manifests = match repo.list().await {
        Ok(m) => m,
        Err(e) => {
            return vec![StepRun {
                label: "verify".into(),
                outcome: Err(e),
                seconds: 0.0,
            }]
        }
    };
    let mut newest: BTreeMap<(String, &str), String> = BTreeMap::new();
    for m in manifests
        .iter()
        .filter(|m| kind.is_none_or(|k| m.kind == k))
    {
        newest.insert((m.database.clone(), m.kind.as_str()), m.id.clone());
    }
    let mut out = Vec::new();
    for ((database, kind), id) in newest {
        let label = format!("verify {kind} {database}");
        out.push(timed(label, verify_one(ctx, repo, id)).await);
    }
    out
}

async fn verify_one(ctx: &Context, repo: &Repository, id: String) -> Result<Done> {
    let request = crate::verify::VerifyRequest {
        backup: id.clone(),
        jobs: 2,
        ..Default::default()
    };
    let v = crate::verify::verify_backup(ctx, repo, &request).await?;
    match v.failures().first() {
        None => Ok(Done {
            detail: format!(
                "{id} restores in {}",
                crate::units::human_duration(v.recovery_seconds.unwrap_or_default())
            ),
            bytes: None,
        }),
        Some(check) => Err(Error::Mismatch {
            id,
            detail: format!("{}: {}", check.name, check.detail),
        }),
    }
}

fn step_name(incremental: bool) -> &'static str {
    if incremental {
        "backup base --incremental"
    } else {
        "backup base"
    }
}
