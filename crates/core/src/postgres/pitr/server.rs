//! The recovered server: started (for use with `pg_ctl`, or as a watched child when it is a
//! throwaway), awaited until it reaches the target, and stopped if it fell short of the
//! archive's end.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::plan::ArchiveEnd;
use super::{PitrRequest, Target, TargetAction};
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;
use crate::repository::manifest::Manifest;
use crate::wal;
use crate::wal::WalArchive;
use crate::Context;

/// Where a started recovery got to.
pub(super) struct Recovered {
    /// The last transaction replayed.
    pub last_commit: Option<String>,
    pub timeline: Option<u32>,
    /// The end of the last WAL record replayed.
    pub replayed_to: Option<u64>,
}

/// A recovery to the latest moment must replay the archive to its end: PostgreSQL takes a
/// damaged record for the end of the WAL and promotes there, which would silently lose every
/// later transaction. If it stopped short, the server is stopped and the reason reported.
pub(super) fn check_reached_end(
    ctx: &Context,
    request: &PitrRequest,
    owner: Option<(u32, u32)>,
    recovered: &Recovered,
    end: &ArchiveEnd,
) -> Result<()> {
    let ArchiveEnd {
        timeline,
        segment: last,
        segment_size,
    } = *end;
    let replayed = recovered.replayed_to.unwrap_or(0);
    // An end at a segment's first byte (after a switch record) is the end of the one before.
    if replayed.saturating_sub(1) / segment_size >= last {
        return Ok(());
    }
    // The segment replay could not go on in.
    let stopped_in = replayed / segment_size;
    let log = request.pgdata.join("lifeboat-recovery.log");
    let why = why_recovery_ended(&log);
    stop_server(ctx, &request.pgdata, owner);
    Err(Error::DamagedWal {
        name: wal::segment_name(timeline, stopped_in, segment_size),
        detail: format!(
            "recovery stopped at {}, {}, short of the archive's end, segment `{}` (PostgreSQL: {why}); the server was stopped, and `{}` holds the database as of that point: replace the damaged segment, or recover to a moment before it with `--target-time` or `--target-lsn`",
            wal::format_lsn(replayed),
            if replayed.is_multiple_of(segment_size) { "at its start" } else { "in it" },
            wal::segment_name(timeline, last, segment_size),
            request.pgdata.display()
        ),
    })
}

/// Stops a recovered server (fast shutdown), as the user it runs as.
pub(super) fn stop_server(ctx: &Context, pgdata: &Path, owner: Option<(u32, u32)>) {
    let mut cmd = std::process::Command::new(ctx.tools.path("pg_ctl"));
    cmd.args(["stop", "-m", "fast", "-w", "-D"])
        .arg(pgdata)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    if let Err(e) = cmd.status() {
        tracing::warn!(error = %e, "could not stop the recovered server");
    }
}

/// Why PostgreSQL ended a recovery, from its log: the line about the record it could not
/// read (`invalid resource manager ID 80 at 0/4000028`), else where redo ended.
pub(super) fn why_recovery_ended(log: &Path) -> String {
    const SIGNS: [&str; 6] = [
        "invalid ",
        "incorrect ",
        "unexpected pageaddr",
        "contrecord",
        "out-of-sequence",
        "prev-link",
    ];
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .rposition(|l| l.contains("redo done at"))
        .unwrap_or(lines.len());
    let reason = lines[..end]
        .iter()
        .rev()
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))
        .or_else(|| lines.get(end));
    match reason {
        Some(line) => crate::error::one_line(
            line.split_once("LOG:")
                .map_or(*line, |(_, message)| message)
                .trim(),
        ),
        None => "see its log".into(),
    }
}

pub(super) async fn start_and_wait(
    ctx: &Context,
    repo: &WalArchive<'_>,
    request: &PitrRequest,
    base: &Manifest,
    owner: Option<(u32, u32)>,
) -> Result<Recovered> {
    let mut options = Vec::new();
    if let Some(port) = request.port {
        options.push(format!("-p {port}"));
    }
    if let Some(dir) = &request.socket_dir {
        options.push(format!("-k {}", dir.display()));
    }
    let log = request.pgdata.join("lifeboat-recovery.log");
    let mut cmd = std::process::Command::new(ctx.tools.path("pg_ctl"));
    cmd.arg("start")
        .arg("-D")
        .arg(&request.pgdata)
        .arg("-l")
        .arg(&log)
        .arg("-w")
        .arg("-t")
        .arg("600");
    if !options.is_empty() {
        cmd.arg("-o").arg(options.join(" "));
    }
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    if request.throwaway {
        // A throwaway server (verify's, the drill's) dies with lifeboat: started as its
        // watched child, not by pg_ctl, which would put it out of reach. Its handle is let
        // go: the caller stops it by its data folder.
        let mut server_options = Vec::new();
        if let Some(port) = request.port {
            server_options.extend(["-p".to_string(), port.to_string()]);
        }
        if let Some(dir) = &request.socket_dir {
            server_options.extend(["-k".to_string(), dir.display().to_string()]);
        }
        crate::postgres::cluster::spawn_server(
            &ctx.tools,
            &request.pgdata,
            &log,
            &server_options,
            owner,
        )?;
    } else if let Err(e) = start_for_use(cmd, &log) {
        // The server stopped while `pg_ctl` waited for it: on a file it could not fetch, that
        // file's own error.
        return Err(match file_not_restored(&log) {
            Some(_) => recovery_stopped(ctx, repo, request, &log).await,
            None => e,
        });
    }
    wait_for_target(ctx, repo, request, base, &log).await
}

/// Starts a recovered server for use with `pg_ctl`: it outlives lifeboat.
pub(super) fn start_for_use(mut cmd: std::process::Command, log: &Path) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| crate::process::spawn_error(std::path::Path::new(cmd.get_program()), e))?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "pg_ctl".into(),
            outcome: format!("could not start the recovered server ({})", out.status),
            stderr: why_recovery_stopped(log),
        });
    }
    Ok(())
}

/// Waits until the started server has recovered to the target.
pub(super) async fn wait_for_target(
    ctx: &Context,
    repo: &WalArchive<'_>,
    request: &PitrRequest,
    base: &Manifest,
    log: &Path,
) -> Result<Recovered> {
    // Connect through the socket.
    let host = request
        .socket_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
    let port = request.port.unwrap_or(5432);
    // The role that took the backup exists in the recovered cluster.
    let config = match ctx.config.postgres.get(&base.database) {
        Some(pg) => ConnInfo::new(pg.url.expose(), pg.password.as_ref())?.on_socket(&host, port),
        None => {
            let mut config = tokio_postgres::Config::new();
            config
                .host_path(&host)
                .port(port)
                .dbname("postgres")
                .user("postgres");
            config
        }
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await {
            tokio::spawn(connection);
            let done_sql = match (&request.target, request.action) {
                (Target::Latest, _) | (_, TargetAction::Promote) => {
                    "SELECT NOT pg_is_in_recovery()"
                }
                (_, TargetAction::Pause) => "SELECT pg_get_wal_replay_pause_state() = 'paused'",
            };
            if let Ok(row) = client.query_one(done_sql, &[]).await {
                if row.get::<_, bool>(0) {
                    let row = client
                        .query_one(
                            "SELECT pg_last_xact_replay_timestamp()::text, \
                             CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
                             pg_last_wal_replay_lsn()::text",
                            &[],
                        )
                        .await
                        .map_err(|e| Error::postgres("reading the recovered position", &e))?;
                    return Ok(Recovered {
                        last_commit: row.get::<_, Option<String>>(0),
                        timeline: row.get::<_, Option<i32>>(1).map(|t| t as u32),
                        replayed_to: row
                            .get::<_, Option<String>>(2)
                            .and_then(|lsn| wal::parse_lsn(&lsn)),
                    });
                }
            }
        }
        let stopped = !request.pgdata.join("postmaster.pid").exists();
        if stopped && std::fs::read_to_string(log).is_ok_and(|t| t.contains("FATAL")) {
            return Err(recovery_stopped(ctx, repo, request, log).await);
        }
        if Instant::now() > deadline {
            return Err(Error::TimedOut {
                what: "recovery reaching its target".into(),
                seconds: 3600,
                hint: format!(
                    "the server goes on recovering; `pg_ctl status -D {}` and its log say where it is",
                    request.pgdata.display()
                ),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = ctx.cancel.cancelled() => return Err(Error::Interrupted("waiting for recovery".into())),
        }
    }
}

/// The error of a recovery whose server stopped. When its `restore_command` failed on a file,
/// that file is fetched again here, so that the error has its kind (a damaged file exits 3, a
/// storage outage 75) rather than being read from the log's text. A throwaway server's folder
/// is gone with it: only a kept one is offered `pg_ctl start`.
async fn recovery_stopped(
    ctx: &Context,
    repo: &WalArchive<'_>,
    request: &PitrRequest,
    log: &Path,
) -> Error {
    let why = why_recovery_stopped(log);
    if let Some(name) = file_not_restored(log) {
        match crate::wal::read_archived(ctx, repo, &name).await {
            Err(Error::DamagedWal { name, detail }) => {
                return Error::DamagedWal {
                    name,
                    detail: format!("{detail}; recovery stopped there (PostgreSQL: {why})"),
                }
            }
            Err(e) if e.is_temporary() => return e,
            _ => {}
        }
    }
    let outcome = if request.throwaway {
        "stopped during recovery".to_string()
    } else {
        format!(
            "stopped during recovery (fix the cause, then `pg_ctl start -D {}` resumes it)",
            request.pgdata.display()
        )
    };
    Error::Tool {
        tool: "postgres".into(),
        outcome,
        stderr: why,
    }
}

/// The file whose `restore_command` failed, from the server's log
/// (`could not restore file "000000010000000000000003" from archive`).
fn file_not_restored(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("could not restore file \""))?;
    let (_, rest) = line.split_once("could not restore file \"")?;
    Some(rest.split('"').next()?.to_string())
}

/// The server log's account of a failed recovery: lifeboat's own errors (a `wal-fetch` that
/// failed, without its `error: `) and the server's FATAL lines, else its last lines.
pub(super) fn why_recovery_stopped(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("error: ") || l.contains("FATAL"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    if lines.is_empty() {
        lines = text.lines().rev().take(3).collect();
        lines.reverse();
    }
    crate::error::one_line(&lines.join("\n"))
}
