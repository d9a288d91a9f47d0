//! Restores onto throwaway parts: a dump into a scratch cluster, a base backup recovered to
//! its end in a temporary folder; both removed when the result is dropped.

use std::path::PathBuf;

use super::{Check, VerifyRequest};
use crate::error::{Error, Result};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster};
use crate::postgres::pitr::{self, PitrRequest, Target, TargetAction, TargetTimeline};
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
    tools: crate::postgres::tools::PgTools,
    /// Keeps the scratch cluster (dump) alive; dropped last.
    cluster: Option<ScratchCluster>,
    /// The recovered data folder (base backup), stopped and removed on drop.
    recovered: Option<RecoveredFolder>,
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

/// A recovered base backup's data folder in a temporary folder.
pub(super) struct RecoveredFolder {
    dir: Option<tempfile::TempDir>,
    pgdata: PathBuf,
    tools: crate::postgres::tools::PgTools,
}

impl Drop for RecoveredFolder {
    fn drop(&mut self) {
        if self.pgdata.join("postmaster.pid").exists() {
            let mut cmd = std::process::Command::new(self.tools.path("pg_ctl"));
            cmd.args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&self.pgdata)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if let Some((uid, gid)) = crate::postgres::cluster::unprivileged_user() {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let _ = cmd.status();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
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
    use std::os::unix::fs::PermissionsExt;
    let info = manifest.base.as_ref().ok_or_else(|| Error::Damaged {
        what: format!("the manifest of base backup `{}`", manifest.id),
        problem: "without WAL positions".into(),
    })?;
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-verify-")
        .tempdir()
        .map_err(|e| Error::io("creating a folder to recover into", e))?;
    let owner = crate::postgres::cluster::unprivileged_user();
    let socket = dir.path().join("sock");
    std::fs::create_dir(&socket).map_err(|e| Error::io("creating a socket folder", e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("opening the recovery folder to the server's user", e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))
            .map_err(|e| Error::io("handing the socket folder to the server's user", e))?;
    }
    let pgdata = dir.path().join("data");
    let recovered = RecoveredFolder {
        dir: Some(dir),
        pgdata: pgdata.clone(),
        tools: ctx.tools.clone(),
    };
    let port = crate::postgres::cluster::free_port()?;
    let outcome = pitr::restore_pitr(
        ctx,
        repo,
        &PitrRequest {
            pgdata,
            // To the end of the archive on the backup's own timeline, as a recovery of the
            // latest moment would go: damaged WAL after the backup fails the verification.
            target: Target::Latest,
            timeline: TargetTimeline::Current,
            action: TargetAction::Promote,
            start: true,
            port: Some(port),
            socket_dir: Some(socket.clone()),
            no_archive: true,
            throwaway: true,
            identity: request.identity.clone(),
            base: Some(manifest.id.clone()),
        },
    )
    .await;
    match outcome {
        Ok(report) => checks.push(Check {
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
        }),
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
    }
    // The role that took the backup exists in the recovered cluster.
    let user = ctx
        .config
        .postgres
        .get(&manifest.database)
        .and_then(|pg| pg.url.expose().parse::<tokio_postgres::Config>().ok())
        .and_then(|c| c.get_user().map(str::to_string))
        .or_else(|| Some("postgres".to_string()));
    Ok(Some(Restored {
        socket,
        port,
        dbname: manifest.dbname.clone(),
        user,
        tools: ctx.tools.clone(),
        cluster: None,
        recovered: Some(recovered),
    }))
}
