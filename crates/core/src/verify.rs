//! Verification: proof that a backup restores, on throwaway parts, with the recovery time
//! measured; the result is recorded in the repository (`verifications/<backup>.json`).
//!
//! A logical dump is restored into a scratch cluster (initdb in a temporary folder, its own
//! socket and port); a base backup is unpacked and recovered to its end with the archived WAL,
//! then started. Then the checks: row counts as recorded (dumps), critical tables not empty,
//! configured SQL checks true. The scratch cluster is removed whatever happens (a stop request
//! ends the restore, and the cluster goes with it). `--quick` only reads the stored bytes
//! against the manifest's hash and asks `pg_restore` (or `tar`) to read their table of
//! contents. Needs the repository and, for encrypted backups, the identity: nothing in
//! production.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::manifest::{BackupKind, Manifest};
use crate::pipeline::{self, Delivered};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster};
use crate::postgres::pitr::{self, PitrRequest, Target, TargetAction, TargetTimeline};
use crate::postgres::restore::{expected_of, identities_for, restore_db, RestoreRequest};
use crate::repository::{Repository, Selector};
use crate::Context;

pub const VERIFICATIONS: &str = "verifications/";
pub const VERIFICATION_FORMAT: u32 = 1;

#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Backup id, unique prefix, or `latest`.
    pub backup: String,
    pub kind: Option<BackupKind>,
    pub quick: bool,
    pub identity: Option<PathBuf>,
    /// pg_restore jobs for a dump.
    pub jobs: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The result of one verification, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub format: u32,
    pub backup: String,
    pub kind: BackupKind,
    pub database: String,
    pub verified_at: Timestamp,
    pub quick: bool,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// From the first byte downloaded to a database that answers: the measured recovery time.
    pub recovery_seconds: Option<f64>,
    pub rto_seconds: Option<u64>,
    pub within_rto: Option<bool>,
    pub lifeboat: String,
}

impl Verification {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

pub fn verification_path(id: &str) -> String {
    format!("{VERIFICATIONS}{id}.json")
}

/// Every recorded verification (the latest of each backup), oldest first.
pub async fn list_verifications(repo: &Repository) -> Result<Vec<Verification>> {
    let mut out = Vec::new();
    for entry in repo.storage().list(VERIFICATIONS).await? {
        if let Some(bytes) = repo.storage().read_opt(&entry.path).await? {
            match serde_json::from_slice::<Verification>(&bytes) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!("unreadable verification `{}`: {e}", entry.path),
            }
        }
    }
    out.sort_by_key(|v| v.verified_at);
    Ok(out)
}

/// Verifies one backup and records the result (a failed check is a result, not an error).
pub async fn verify(
    ctx: &Context,
    repo: &Repository,
    request: &VerifyRequest,
) -> Result<Verification> {
    let manifest = repo
        .find(&Selector {
            id: &request.backup,
            kind: request.kind,
            ..Selector::default()
        })
        .await?;
    let database = ctx.config.postgres.get(&manifest.database).cloned();
    let mut checks = Vec::new();
    let mut recovery_seconds = None;
    if request.quick || manifest.kind == BackupKind::Redis {
        checks.push(quick_check(ctx, repo, &manifest, request).await?);
    } else {
        let started = Instant::now();
        let restored = match manifest.kind {
            BackupKind::Db => restore_dump(ctx, repo, &manifest, request, &mut checks).await?,
            BackupKind::Base => recover_base(ctx, repo, &manifest, request, &mut checks).await?,
            BackupKind::Redis => unreachable!("redis snapshots are checked like --quick"),
        };
        if let Some(target) = restored {
            recovery_seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            run_checks(&target, database.as_ref(), &mut checks);
            drop(target);
        }
    }
    let objectives = &ctx.config.objectives;
    let rto_seconds = recovery_seconds.map(|_| {
        60 * match manifest.kind {
            BackupKind::Base => objectives.pitr_rto_minutes,
            BackupKind::Db | BackupKind::Redis => objectives.dump_rto_minutes,
        }
    });
    let verification = Verification {
        format: VERIFICATION_FORMAT,
        backup: manifest.id.clone(),
        kind: manifest.kind,
        database: manifest.database.clone(),
        verified_at: Timestamp::now(),
        quick: request.quick || manifest.kind == BackupKind::Redis,
        passed: checks.iter().all(|c| c.passed),
        checks,
        recovery_seconds,
        rto_seconds,
        within_rto: recovery_seconds
            .zip(rto_seconds)
            .map(|(took, rto)| took <= rto as f64),
        lifeboat: env!("CARGO_PKG_VERSION").into(),
    };
    let json = serde_json::to_vec_pretty(&verification).expect("verifications serialize");
    repo.storage()
        .write(&verification_path(&manifest.id), json)
        .await?;
    Ok(verification)
}

/// Where a verified restore landed: a database on a scratch server, removed when dropped.
struct Restored {
    socket: PathBuf,
    port: u16,
    dbname: String,
    user: Option<String>,
    tools: crate::postgres::tools::PgTools,
    /// Keeps the scratch cluster (dump) alive; dropped last.
    cluster: Option<ScratchCluster>,
    /// The recovered data folder (base backup), stopped and removed on drop.
    recovered: Option<Recovered>,
}

impl Restored {
    fn psql(&self, sql: &str) -> Result<String> {
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
struct Recovered {
    dir: Option<tempfile::TempDir>,
    pgdata: PathBuf,
    tools: crate::postgres::tools::PgTools,
}

impl Drop for Recovered {
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

async fn restore_dump(
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
    .map_err(|e| Error::invalid(format!("scratch cluster thread failed: {e}")))??;
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
            name: "restore".into(),
            passed: true,
            detail: format!(
                "{} tables, {} rows, every count as recorded",
                report.tables_checked, report.rows_checked
            ),
        }),
        Err(Error::Mismatch { detail, .. }) => checks.push(Check {
            name: "row counts".into(),
            passed: false,
            detail,
        }),
        Err(e @ Error::Interrupted(_)) => return Err(e),
        Err(Error::Integrity { detail, .. }) => {
            checks.push(Check {
                name: "stored bytes".into(),
                passed: false,
                detail,
            });
            return Ok(None);
        }
        Err(e) => {
            checks.push(Check {
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

async fn recover_base(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    request: &VerifyRequest,
    checks: &mut Vec<Check>,
) -> Result<Option<Restored>> {
    use std::os::unix::fs::PermissionsExt;
    let info = manifest.base.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "base backup `{}` has no WAL positions in its manifest",
            manifest.id
        ))
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
    let recovered = Recovered {
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

/// Critical tables not empty, configured SQL checks true.
fn run_checks(target: &Restored, database: Option<&PostgresConfig>, checks: &mut Vec<Check>) {
    let Some(database) = database else {
        return;
    };
    for table in &database.critical_tables {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(schema),
            quote_ident(name)
        );
        let check = match target.psql(&sql) {
            Ok(out) => {
                let rows: u64 = out.trim().parse().unwrap_or(0);
                Check {
                    name: format!("critical table {table}"),
                    passed: rows > 0,
                    detail: if rows > 0 {
                        format!("{rows} rows")
                    } else {
                        "empty".into()
                    },
                }
            }
            Err(e) => Check {
                name: format!("critical table {table}"),
                passed: false,
                detail: e.to_string(),
            },
        };
        checks.push(check);
    }
    for sql in &database.checks {
        let check = match target.psql(sql) {
            Ok(out) => {
                let firsts: Vec<&str> = out
                    .lines()
                    .map(|l| l.split('|').next().unwrap_or_default().trim())
                    .collect();
                let passed = !firsts.is_empty() && firsts.iter().all(|v| *v == "t");
                Check {
                    name: format!("check `{sql}`"),
                    passed,
                    detail: if passed {
                        "true".into()
                    } else if firsts.is_empty() {
                        "returned no rows".into()
                    } else {
                        format!("returned `{}`", firsts.join(", "))
                    },
                }
            }
            Err(e) => Check {
                name: format!("check `{sql}`"),
                passed: false,
                detail: e.to_string(),
            },
        };
        checks.push(check);
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads the stored bytes against the manifest's hash while `pg_restore --list` (or `tar
/// --list`) reads the table of contents.
async fn quick_check(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    request: &VerifyRequest,
) -> Result<Check> {
    let listing = crate::process::Unnamed::memory("lifeboat-listing", b"")
        .map_err(|e| Error::io("creating a file for the listing", e))?;
    let tool = match manifest.kind {
        BackupKind::Db => ctx
            .tools
            .tool("pg_restore")
            .arg("--list")
            .arg(format!("--file={}", listing.path().display())),
        BackupKind::Base => crate::process::Tool::new("tar")
            .args(["--list", "--file=-"])
            .arg(format!("--index-file={}", listing.path().display())),
        // An RDB file starts with `REDIS` and its version: `dd` keeps that much.
        BackupKind::Redis => crate::process::Tool::new("dd")
            .args(["bs=9", "count=1", "iflag=fullblock", "status=none"])
            .arg(format!("of={}", listing.path().display())),
    };
    let name = tool.name();
    let child = tool.spawn_writer()?;
    let identities = identities_for(ctx, manifest, request.identity.as_deref())?;
    let delivered = pipeline::download(
        repo.storage(),
        &manifest.data,
        &expected_of(manifest),
        identities,
        KeepReading::new(child),
        &ctx.cancel,
    )
    .await;
    let child = match delivered {
        Ok(Delivered::Complete(w) | Delivered::ConsumerClosed(w)) => w.into_inner(),
        // The detail alone: the error the failed check becomes names the backup.
        Err(Error::Integrity { detail, .. } | Error::Mismatch { detail, .. }) => {
            return Ok(Check {
                name: "stored bytes".into(),
                passed: false,
                detail,
            })
        }
        Err(e) => return Err(e),
    };
    let finished = tokio::task::spawn_blocking(move || child.finish())
        .await
        .map_err(|e| Error::invalid(format!("{name} thread failed: {e}")))?;
    let toc = listing.read_to_string().unwrap_or_default();
    Ok(match finished {
        Err(e) => Check {
            name: "table of contents".into(),
            passed: false,
            detail: e.to_string(),
        },
        Ok(()) => contents_check(manifest, &toc),
    })
}

/// The table of contents lists every table the manifest counted (a dump) or the cluster's
/// control file (a base backup).
fn contents_check(manifest: &Manifest, toc: &str) -> Check {
    let missing: Vec<String> = match manifest.kind {
        BackupKind::Db => manifest
            .tables
            .iter()
            .filter(|t| {
                let needle = format!(" TABLE DATA {} {} ", t.schema, t.name);
                !toc.lines().any(|l| l.contains(&needle))
            })
            .map(|t| t.qualified())
            .collect(),
        BackupKind::Base => ["global/pg_control", "PG_VERSION"]
            .iter()
            .filter(|f| !toc.lines().any(|l| l.trim_start_matches("./") == **f))
            .map(|f| f.to_string())
            .collect(),
        BackupKind::Redis if toc.starts_with("REDIS") => Vec::new(),
        BackupKind::Redis => vec!["the RDB header".into()],
    };
    let entries = toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    Check {
        name: "stored bytes and table of contents".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("hash as recorded, {entries} entries readable")
        } else {
            format!(
                "hash as recorded, but missing from the contents: {}",
                missing.join(", ")
            )
        },
    }
}

/// Forwards to a child until it stops reading (it has the table of contents), then swallows
/// the rest so that the download still hashes every stored byte.
struct KeepReading {
    inner: crate::process::ChildWriter,
    closed: bool,
}

impl KeepReading {
    fn new(inner: crate::process::ChildWriter) -> Self {
        KeepReading {
            inner,
            closed: false,
        }
    }

    fn into_inner(self) -> crate::process::ChildWriter {
        self.inner
    }
}

impl Write for KeepReading {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}
