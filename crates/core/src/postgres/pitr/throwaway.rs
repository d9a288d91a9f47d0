//! Recoveries on throwaway parts (`verify` of a base backup, `restore table`): a temporary
//! folder (in the given work folder, else `$TMPDIR`), its own socket folder and port, the
//! server a watched child that dies with lifeboat; stopped and removed when dropped, whatever
//! happened. The server listens on its socket only, to its own user, and trusts it there, so
//! the production cluster's `pg_hba.conf` does not decide whether lifeboat can get in.

use std::path::{Path, PathBuf};

use super::{restore_pitr, PitrReport, PitrRequest, Target, TargetAction, TargetTimeline};
use crate::error::{Error, Result};
use crate::postgres::conn::connect_socket;
use crate::process::tools::PgTools;
use crate::repository::Repository;
use crate::Context;

/// What to recover on throwaway parts.
#[derive(Debug, Clone)]
pub struct ThrowawayRequest {
    pub target: Target,
    pub timeline: TargetTimeline,
    /// This base backup (by id), else the newest before the target.
    pub base: Option<String>,
    /// The cluster, where the repository holds several (else the base backup's, or the only one).
    pub db: Option<String>,
    pub identity: Option<PathBuf>,
    /// Where the temporary folder goes (else `$TMPDIR`).
    pub work_dir: Option<PathBuf>,
    /// The temporary folder's name starts with this.
    pub prefix: &'static str,
}

/// A recovered, started server in a temporary folder; stopped and removed when dropped.
pub struct Throwaway {
    pub socket: PathBuf,
    pub port: u16,
    pub report: PitrReport,
    folder: RecoveredFolder,
}

impl Throwaway {
    pub fn pgdata(&self) -> &Path {
        &self.folder.pgdata
    }

    /// Connects to `dbname` as the cluster's bootstrap superuser, whose name is found by
    /// first connecting as `user` (a role that took the backup; the socket trusts any).
    pub async fn connect_superuser(
        &self,
        dbname: &str,
        user: &str,
    ) -> Result<(tokio_postgres::Client, String)> {
        let what = "the recovered server";
        let client = connect_socket(&self.socket, self.port, dbname, user, what).await?;
        let superuser: String = client
            .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
            .await
            .map_err(|e| Error::postgres("finding the recovered server's superuser", &e))?
            .get(0);
        if superuser == user {
            return Ok((client, superuser));
        }
        drop(client);
        let client = connect_socket(&self.socket, self.port, dbname, &superuser, what).await?;
        Ok((client, superuser))
    }
}

/// Recovers `request.target` into a new temporary folder and starts the server there.
pub async fn recover(
    ctx: &Context,
    repo: &Repository,
    request: &ThrowawayRequest,
) -> Result<Throwaway> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = tempfile::Builder::new();
    builder.prefix(request.prefix);
    let dir = match &request.work_dir {
        Some(work) => builder.tempdir_in(work),
        None => builder.tempdir(),
    }
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
    // Created before anything is written, so that whatever fails below removes the folder.
    let folder = RecoveredFolder {
        dir: Some(dir),
        pgdata: pgdata.clone(),
        tools: ctx.tools.clone(),
    };
    let port = crate::postgres::cluster::free_port()?;
    let report = restore_pitr(
        ctx,
        repo,
        &PitrRequest {
            pgdata,
            target: request.target.clone(),
            timeline: request.timeline,
            action: TargetAction::Promote,
            start: true,
            port: Some(port),
            socket_dir: Some(socket.clone()),
            as_primary: false,
            throwaway: true,
            identity: request.identity.clone(),
            base: request.base.clone(),
            db: request.db.clone(),
            thaw: Default::default(),
        },
    )
    .await?;
    Ok(Throwaway {
        socket,
        port,
        report,
        folder,
    })
}

/// A recovered base backup's data folder in a temporary folder.
struct RecoveredFolder {
    dir: Option<tempfile::TempDir>,
    pgdata: PathBuf,
    tools: PgTools,
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

/// The settings that make a recovered server a throwaway: reached on its socket only, by its
/// own user (and root), trusted there; small shared memory beside the production server.
pub(super) fn settings(pgdata: &Path) -> Result<Vec<String>> {
    let hba = pgdata.join("lifeboat_hba.conf");
    let ident = pgdata.join("lifeboat_ident.conf");
    std::fs::write(&hba, "local all all trust\n")
        .map_err(|e| Error::io(format!("writing `{}`", hba.display()), e))?;
    std::fs::write(&ident, "")
        .map_err(|e| Error::io(format!("writing `{}`", ident.display()), e))?;
    // A data folder whose configuration lived elsewhere (/etc/postgresql) has none.
    let conf = pgdata.join("postgresql.conf");
    if !conf.exists() {
        std::fs::write(&conf, "# written by lifeboat for a throwaway recovery\n")
            .map_err(|e| Error::io(format!("writing `{}`", conf.display()), e))?;
    }
    let quote = |p: &Path| p.display().to_string().replace('\'', "''");
    Ok(vec![
        "listen_addresses = ''".into(),
        "unix_socket_permissions = 0700".into(),
        format!("hba_file = '{}'", quote(&hba)),
        format!("ident_file = '{}'", quote(&ident)),
        "shared_buffers = '128MB'".into(),
        "ssl = off".into(),
        "logging_collector = off".into(),
    ])
}
