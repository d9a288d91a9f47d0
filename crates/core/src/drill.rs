//! The disaster-recovery drill: everything on throwaway parts, timed step by step.
//!
//! A scratch cluster gets the sample database; it is backed up into the configured repository
//! (by default the local folder `./lifeboat-repo`, created if needed), restored into a fresh
//! database, and every table's contents compared with the original. Nothing outside the
//! scratch cluster and the repository is touched.

use std::time::Instant;

use serde::Serialize;

use crate::config::{PgUrl, PostgresConfig};
use crate::error::{Error, Result};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster};
use crate::postgres::dump::{backup_db, DumpRequest};
use crate::postgres::restore::{restore_db, RestoreRequest};
use crate::postgres::sample::{fingerprint_sql, LARGE_OBJECTS_SQL, SAMPLE_SQL, SAMPLE_TABLES};
use crate::repository::Repository;
use crate::Context;

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub repository: String,
    pub backup: String,
    pub tables_compared: usize,
    pub rows_restored: u64,
    pub steps: Vec<DrillStep>,
}

#[derive(Debug, Serialize)]
pub struct DrillStep {
    pub step: String,
    pub seconds: f64,
    pub detail: String,
}

struct Timer(Vec<DrillStep>, Instant);

impl Timer {
    fn lap(&mut self, step: &str, detail: String) {
        let seconds = (self.1.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        tracing::info!("drill: {step} ({seconds:.2}s) {detail}");
        self.0.push(DrillStep {
            step: step.into(),
            seconds,
            detail,
        });
        self.1 = Instant::now();
    }
}

pub async fn run_drill(ctx: &Context) -> Result<DrillReport> {
    let mut timer = Timer(Vec::new(), Instant::now());
    let tools = ctx.tools.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        ScratchCluster::start(&tools, &ClusterOptions::default())
    })
    .await
    .map_err(|e| Error::invalid(format!("drill thread failed: {e}")))??;
    timer.lap(
        "start a scratch cluster",
        format!("PostgreSQL {}", ctx.tools.version("postgres")?),
    );

    cluster.create_database("yomira")?;
    cluster.psql("yomira", SAMPLE_SQL)?;
    timer.lap(
        "load the sample database",
        format!("{} tables", SAMPLE_TABLES.len()),
    );

    let repo = match Repository::open(&ctx.config.repository).await {
        Ok(repo) => repo,
        Err(Error::NotARepository { .. }) => Repository::init(&ctx.config.repository).await?,
        Err(e) => return Err(e),
    };
    timer.lap("open the repository", repo.location().to_string());

    let source = PostgresConfig {
        url: PgUrl::parse(&cluster.url("yomira")).map_err(Error::invalid)?,
        password: None,
        critical_tables: Vec::new(),
        checks: Vec::new(),
    };
    let manifest = backup_db(ctx, &repo, "drill", &source, &DumpRequest::default()).await?;
    timer.lap(
        "logical backup",
        format!(
            "{} ({} raw, {} stored)",
            manifest.id, manifest.raw_size, manifest.stored_size
        ),
    );

    cluster.create_database("yomira_restored")?;
    let report = restore_db(
        ctx,
        &repo,
        &RestoreRequest {
            backup: manifest.id.clone(),
            into: cluster.url("yomira_restored"),
            jobs: 1,
            ..RestoreRequest::default()
        },
    )
    .await?;
    timer.lap(
        "restore and check row counts",
        format!(
            "{} tables, {} rows",
            report.tables_checked, report.rows_checked
        ),
    );

    let mut checks: Vec<String> = SAMPLE_TABLES.iter().map(|t| fingerprint_sql(t)).collect();
    checks.push(LARGE_OBJECTS_SQL.to_string());
    checks.push("SELECT last_value || '' FROM core.chapter_no".into());
    for sql in &checks {
        let before = cluster.psql("yomira", sql)?;
        let after = cluster.psql("yomira_restored", sql)?;
        if before != after {
            return Err(Error::Mismatch {
                id: manifest.id.clone(),
                detail: format!(
                    "`{sql}` gives `{}` before and `{}` after",
                    before.trim(),
                    after.trim()
                ),
            });
        }
    }
    timer.lap(
        "compare contents",
        format!("{} checks identical", checks.len()),
    );

    Ok(DrillReport {
        repository: repo.location().to_string(),
        backup: manifest.id,
        tables_compared: SAMPLE_TABLES.len(),
        rows_restored: report.rows_checked,
        steps: timer.0,
    })
}
