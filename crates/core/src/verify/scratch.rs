//! Restores onto throwaway parts: a dump into a scratch cluster, a base backup recovered to
//! its end in a temporary folder; both removed when the result is dropped.

use std::path::PathBuf;

use super::{Check, VerifyRequest};
use crate::error::{Error, Result};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster};
use crate::postgres::pitr::throwaway::{self, Throwaway, ThrowawayRequest};
use crate::postgres::pitr::{Target, TargetTimeline};
use crate::postgres::restore::{restore_db, RestoreRequest};
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::Context;

/// Where a verified restore landed: a database on a scratch server, removed when dropped.
pub(super) struct Restored {
    socket: PathBuf,
    port: u16,
    dbname: String,
    user: Option<String>,
    tools: crate::process::tools::PgTools,
    /// Keeps the scratch cluster (dump) alive; dropped last.
    cluster: Option<ScratchCluster>,
    /// The recovered server (base backup), stopped and removed on drop.
    recovered: Option<Throwaway>,
}

impl Restored {
    pub(super) fn psql(&self, sql: &str) -> Result<String> {
        let mut tool = self
            .tools
            .tool("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket.as_os_str())
            .args(["-p", &self.port.to_string(), "-d", &self.dbname, "-c", sql]);
        if let Some(user) = &self.user {
            tool = tool.args(["-U", user]);
        }
        let out = tool.output()?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        drop(self.recovered.take());
        drop(self.cluster.take());
    }
}

pub(super) async fn restore_dump(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    request: &VerifyRequest,
    checks: &mut Vec<Check>,
) -> Result<Option<Restored>> {
    let tools = ctx.tools.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        ScratchCluster::start(&tools, &ClusterOptions::default())
    })
    .await
    .map_err(|e| Error::thread("scratch cluster", e))??;
    let dbname = "lifeboat_verify";
    cluster.create_database(dbname)?;
    let restored = restore_db(
        ctx,
        repo,
        &RestoreRequest {
            backup: manifest.id.clone(),
            into: cluster.url(dbname),
            jobs: request.jobs.max(1),
            no_owner: true,
            identity: request.identity.clone(),
            ..RestoreRequest::default()
        },
    )
    .await;
    match restored {
        Ok(report) => checks.push(Check {
            damaged: false,
            name: "restore".into(),
            passed: true,
            detail: format!(
                "{} tables, {} rows, every count as recorded",
                report.tables_checked, report.rows_checked
            ),
        }),
        Err(Error::Mismatch { detail, .. }) => checks.push(Check {
            damaged: false,
            name: "row counts".into(),
            passed: false,
            detail,
        }),
        Err(e @ Error::Interrupted(_)) => return Err(e),
        Err(Error::Integrity { detail, .. }) => {
            checks.push(Check {
                damaged: true,
                name: "stored bytes".into(),
                passed: false,
                detail,
            });
            return Ok(None);
        }
        Err(e) => {
            checks.push(Check {
                damaged: false,
                name: "restore".into(),
                passed: false,
                detail: e.to_string(),
            });
            return Ok(None);
        }
    }
    Ok(Some(Restored {
        socket: cluster.socket_dir().to_path_buf(),
        port: cluster.port(),
        dbname: dbname.into(),
        user: Some(crate::postgres::cluster::SUPERUSER.to_string()),
        tools: ctx.tools.clone(),
        cluster: Some(cluster),
        recovered: None,
    }))
}

pub(super) async fn recover_base(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    request: &VerifyRequest,
    checks: &mut Vec<Check>,
) -> Result<Option<Restored>> {
    let info = manifest.base.as_ref().ok_or_else(|| Error::Damaged {
        what: format!("the manifest of base backup `{}`", manifest.id),
        problem: "without WAL positions".into(),
    })?;
    let outcome = throwaway::recover(
        ctx,
        repo,
        &ThrowawayRequest {
            db: None,
            // To the end of the archive on the backup's own timeline, as a recovery of the
            // latest moment would go: damaged WAL after the backup fails the verification.
            target: Target::Latest,
            timeline: TargetTimeline::Current,
            base: Some(manifest.id.clone()),
            identity: request.identity.clone(),
            work_dir: None,
            prefix: "lifeboat-verify-",
        },
    )
    .await;
    let recovered = match outcome {
        Ok(recovered) => recovered,
        Err(e @ Error::Interrupted(_)) => return Err(e),
        Err(e) => {
            checks.push(Check {
                damaged: false,
                name: "recovery".into(),
                passed: false,
                detail: e.to_string(),
            });
            return Ok(None);
        }
    };
    let report = &recovered.report;
    checks.push(Check {
        damaged: false,
        name: "recovery".into(),
        passed: true,
        detail: format!(
            "unpacked in {:.1}s, WAL replayed from {} to the end of the archive ({}) in {:.1}s",
            report.restore_seconds,
            info.start_lsn,
            report.replayed_to.as_deref().unwrap_or("?"),
            report.recovery_seconds.unwrap_or_default()
        ),
    });
    // The role that took the backup exists in the recovered cluster.
    let user = ctx
        .config
        .postgres
        .get(&manifest.database)
        .and_then(|pg| pg.url.expose().parse::<tokio_postgres::Config>().ok())
        .and_then(|c| c.get_user().map(str::to_string))
        .or_else(|| Some("postgres".to_string()));
    Ok(Some(Restored {
        socket: recovered.socket.clone(),
        port: recovered.port,
        dbname: manifest.dbname.clone(),
        user,
        tools: ctx.tools.clone(),
        cluster: None,
        recovered: Some(recovered),
    }))
}
