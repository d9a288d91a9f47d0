//! Point-in-time recovery: a base backup unpacked into an empty folder, then WAL replayed from
//! the archive (by `lifeboat wal-fetch` as `restore_command`) up to the target.
//!
//! The base backup chosen is the newest that finished before the target; a target outside what
//! the repository can recover (before the oldest base backup, after the newest archived WAL) is
//! refused with the window in the message. With `start`, the server is started, recovery is
//! awaited, and the moment reached and the time it took are reported.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::ConfigSource;
use crate::error::{Error, Result};
use crate::manifest::{BackupKind, Manifest};
use crate::pipeline;
use crate::postgres::conn::ConnInfo;
use crate::postgres::restore::{expected_of, identities_for};
use crate::repository::Repository;
use crate::tarchunk;
use crate::wal;
use crate::Context;

#[derive(Debug, Clone)]
pub enum Target {
    Time(Timestamp),
    Lsn(u64),
    Latest,
}

/// The timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// The newest timeline that branched off the base backup's after it started.
    Latest,
    /// The base backup's own.
    Current,
    /// This one, which must branch off the base backup's timeline after the backup started.
    Id(u32),
}

impl std::fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Id(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Promote,
    Pause,
}

#[derive(Debug, Clone)]
pub struct PitrRequest {
    pub pgdata: PathBuf,
    pub target: Target,
    pub timeline: TargetTimeline,
    pub action: TargetAction,
    pub start: bool,
    /// Port and socket folder for the started server (else the backup's settings).
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    /// Keep the recovered server from archiving WAL into the repository.
    pub no_archive: bool,
    pub identity: Option<PathBuf>,
    /// Recover from this base backup (by id) instead of the newest before the target.
    pub base: Option<String>,
    /// The started server is a throwaway (verification, drill): it dies with lifeboat.
    pub throwaway: bool,
}

#[derive(Debug, Serialize)]
pub struct PitrReport {
    pub base_backup: String,
    pub pgdata: String,
    pub target: String,
    pub started: bool,
    /// The last transaction replayed, when the server was started.
    pub reached: Option<String>,
    pub timeline: Option<u32>,
    pub restore_seconds: f64,
    pub recovery_seconds: Option<f64>,
    /// Where replay ended (the end of the last WAL record), when the server was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_to: Option<String>,
}

/// What the repository can recover to: from the end of the oldest base backup to the newest
/// archived WAL.
#[derive(Debug, Clone)]
pub struct Window {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(f, "{} to {}", self.from, to),
            None => write!(f, "{} onwards", self.from),
        }
    }
}

/// Chooses the base backup for a target: the newest that ended before it and from which
/// recovery can follow `timeline` (`histories`: each archived timeline's parsed history).
pub fn choose_base<'a>(
    bases: &'a [Manifest],
    target: &Target,
    timeline: TargetTimeline,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Option<&'a Manifest> {
    bases
        .iter()
        .filter(|m| match target {
            Target::Time(t) => m.finished_at <= *t,
            Target::Lsn(lsn) => m
                .base
                .as_ref()
                .and_then(|b| wal::parse_lsn(&b.end_lsn))
                .is_some_and(|end| end <= *lsn),
            Target::Latest => true,
        })
        .filter(|m| path_to(m, timeline, histories).is_some())
        .max_by(|a, b| a.id.cmp(&b.id))
}

/// The timeline recovery from `base` ends on, following `timeline`, with that timeline's
/// history (the switches on the way); `None` when it cannot get there from this base backup.
fn path_to(
    base: &Manifest,
    timeline: TargetTimeline,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Option<(u32, Vec<(u32, u64)>)> {
    let info = base.base.as_ref()?;
    let start_lsn = wal::parse_lsn(&info.start_lsn).unwrap_or(0);
    match timeline {
        TargetTimeline::Latest => Some(wal::latest_timeline_from(
            info.timeline,
            start_lsn,
            histories,
        )),
        TargetTimeline::Current => Some((info.timeline, Vec::new())),
        TargetTimeline::Id(id) if id == info.timeline => Some((id, Vec::new())),
        TargetTimeline::Id(id) => {
            let (_, history) = histories.iter().find(|(t, _)| *t == id)?;
            history
                .iter()
                .any(|(parent, switch)| *parent == info.timeline && *switch >= start_lsn)
                .then(|| (id, history.clone()))
        }
    }
}

pub async fn restore_pitr(
    ctx: &Context,
    repo: &Repository,
    request: &PitrRequest,
) -> Result<PitrReport> {
    let begun = Instant::now();
    let config_file = match &ctx.config.source {
        ConfigSource::File(path) => std::path::absolute(path)
            .map_err(|e| Error::io(format!("finding `{}`", path.display()), e))?,
        ConfigSource::Default => {
            return Err(Error::invalid(
                "point-in-time recovery needs a configuration file: the recovered server runs `lifeboat --config FILE wal-fetch`; pass `--config FILE`",
            ))
        }
    };
    check_empty(&request.pgdata)?;
    let bases: Vec<Manifest> = repo
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Base)
        .collect();
    let oldest = bases.first().ok_or_else(|| {
        Error::invalid(format!(
            "repository `{}` has no base backup: take one with `lifeboat backup base`",
            repo.location()
        ))
    })?;
    let names = wal::archived_names(repo).await?;
    let histories = wal::read_histories(ctx, repo, &names).await?;
    let window = Window {
        from: oldest.finished_at,
        to: newest_wal_time(repo, &names).await?,
    };
    let chosen = match &request.base {
        Some(id) => bases.iter().find(|m| &m.id == id),
        None => choose_base(&bases, &request.target, request.timeline, &histories),
    };
    let base = match (chosen, request.timeline) {
        (Some(base), _) => base,
        (None, TargetTimeline::Id(id))
            if choose_base(&bases, &request.target, TargetTimeline::Latest, &histories)
                .is_some() =>
        {
            return Err(Error::invalid(format!(
                "no base backup before target `{}` leads to timeline {id}: `lifeboat list wal` shows each timeline and the moments it can recover",
                describe(&request.target)
            )))
        }
        (None, _) => {
            return Err(Error::invalid(format!(
                "target `{}` is before the oldest base backup: the recoverable window is {window}",
                describe(&request.target)
            )))
        }
    };
    if let (Target::Time(t), Some(to)) = (&request.target, window.to) {
        if *t > to {
            return Err(Error::invalid(format!(
                "target `{t}` is after the newest archived WAL: the recoverable window is {window}"
            )));
        }
    }
    let segment_size = base
        .base
        .as_ref()
        .map_or(wal::DEFAULT_SEGMENT_SIZE, |b| b.wal_segment_size);
    if let Target::Lsn(lsn) = request.target {
        let archived_end = names
            .iter()
            .filter_map(|n| wal::segment_of_name(n, segment_size))
            .map(|(_, number)| (number + 1) * segment_size)
            .max()
            .unwrap_or(0);
        if lsn > archived_end {
            return Err(Error::invalid(format!(
                "target `{}` is after the newest archived WAL (which ends at {}): the recoverable window is {window}",
                wal::format_lsn(lsn),
                wal::format_lsn(archived_end)
            )));
        }
    }
    check_wal_continuity(repo, base, request, &names, &histories).await?;
    // Where a recovery to the latest moment must get to: the newest segment of the timeline
    // it follows (the check above found no gap on the way).
    let archive_end = path_to(base, request.timeline, &histories).and_then(|(timeline, _)| {
        names
            .iter()
            .filter_map(|n| wal::segment_of_name(n, segment_size))
            .filter(|(t, _)| *t == timeline)
            .map(|(_, number)| number)
            .max()
            .map(|number| (timeline, number))
    });
    let identities = identities_for(ctx, base, request.identity.as_deref())?;
    tracing::info!(base = %base.id, target = %describe(&request.target), "restoring a base backup");

    let existed = request.pgdata.exists();
    std::fs::create_dir_all(&request.pgdata)
        .map_err(|e| Error::io(format!("creating `{}`", request.pgdata.display()), e))?;
    ctx.progress
        .begin(&format!("restore {}", base.id), Some(base.raw_size));
    let dest = request.pgdata.clone();
    let threads = unpack_threads(ctx);
    let progress = Arc::clone(&ctx.progress);
    let unpacked = pipeline::download_sealed(
        repo.storage(),
        &base.data,
        &expected_of(base),
        identities,
        move |stored| tarchunk::unpack(stored, &dest, threads, progress.as_ref()),
        &ctx.cancel,
    )
    .await;
    ctx.progress.end();
    let unpacked = match unpacked {
        Ok(unpacked) => unpacked,
        Err(e) => {
            // The folder was empty: what is in it now is a partial copy, of no use to anyone.
            clear_folder(&request.pgdata, existed);
            return Err(e);
        }
    };
    tracing::info!(
        chunks = unpacked.chunks,
        bytes = unpacked.raw_size,
        threads,
        "base backup unpacked"
    );
    write_recovery_settings(request, &config_file)?;
    let owner = server_user();
    prepare_permissions(&request.pgdata, owner)?;
    let restore_seconds = begun.elapsed().as_secs_f64();

    let mut report = PitrReport {
        base_backup: base.id.clone(),
        pgdata: request.pgdata.display().to_string(),
        target: describe(&request.target),
        started: false,
        reached: None,
        timeline: None,
        restore_seconds: round(restore_seconds),
        recovery_seconds: None,
        replayed_to: None,
    };
    if request.start {
        let recovering = Instant::now();
        let recovered = start_and_wait(ctx, request, base, owner).await?;
        if let (Target::Latest, Some((timeline, last))) = (&request.target, archive_end) {
            check_reached_end(
                ctx,
                request,
                owner,
                &recovered,
                timeline,
                last,
                segment_size,
            )?;
        }
        report.started = true;
        report.reached = recovered.last_commit;
        report.timeline = recovered.timeline;
        report.replayed_to = recovered.replayed_to.map(wal::format_lsn);
        report.recovery_seconds = Some(round(recovering.elapsed().as_secs_f64()));
    }
    Ok(report)
}

/// Where a started recovery got to.
struct Recovered {
    /// The last transaction replayed.
    last_commit: Option<String>,
    timeline: Option<u32>,
    /// The end of the last WAL record replayed.
    replayed_to: Option<u64>,
}

/// A recovery to the latest moment must replay the archive to its end: PostgreSQL takes a
/// damaged record for the end of the WAL and promotes there, which would silently lose every
/// later transaction. If it stopped short, the server is stopped and the reason reported.
fn check_reached_end(
    ctx: &Context,
    request: &PitrRequest,
    owner: Option<(u32, u32)>,
    recovered: &Recovered,
    timeline: u32,
    last: u64,
    segment_size: u64,
) -> Result<()> {
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
fn stop_server(ctx: &Context, pgdata: &Path, owner: Option<(u32, u32)>) {
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
fn why_recovery_ended(log: &Path) -> String {
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

/// Threads that unpack a base backup: the configured compression threads, else one per core.
fn unpack_threads(ctx: &Context) -> usize {
    match ctx.config.compression.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

/// Refuses a recovery that a hole in the archive would stop short of its target: WAL replays
/// only in sequence, so a missing segment makes every later moment unrecoverable. The path
/// checked is the one recovery takes: from the base backup's first segment along its timeline,
/// and across each switch to the timeline it follows (by default the newest that branched off
/// after the backup started, as `recovery_target_timeline = 'latest'` does).
async fn check_wal_continuity(
    repo: &Repository,
    base: &Manifest,
    request: &PitrRequest,
    names: &[String],
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Result<()> {
    let Some(info) = &base.base else {
        return Ok(());
    };
    let first = wal::segment_of_name(&info.first_wal, info.wal_segment_size);
    let (Some((_, first)), true) = (first, names.contains(&info.first_wal)) else {
        return Err(Error::invalid(format!(
            "WAL segment `{}`, the first that base backup `{}` needs, is missing from the archive",
            info.first_wal, base.id
        )));
    };
    let (last_timeline, history) =
        path_to(base, request.timeline, histories).ok_or_else(|| {
            Error::invalid(format!(
                "base backup `{}` does not lead to timeline {}: `lifeboat list wal` shows each timeline and the moments it can recover",
                base.id, request.timeline
            ))
        })?;
    let Some((missing, before_gap)) = wal::first_gap_on_path(
        names,
        info.timeline,
        first,
        last_timeline,
        &history,
        info.wal_segment_size,
    ) else {
        return Ok(());
    };
    let target = &request.target;
    let reachable = match (target, &before_gap) {
        (Target::Lsn(lsn), _) => wal::segment_of_name(&missing, info.wal_segment_size)
            .is_some_and(|(_, number)| lsn / info.wal_segment_size < number),
        (Target::Time(t), Some(last)) => wal::stored_at(repo, last)
            .await?
            .is_some_and(|until| *t <= until),
        _ => false,
    };
    if reachable {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "WAL segment `{missing}` is missing from the archive: recovery from base backup `{}` cannot pass it; `lifeboat list wal` shows the gaps",
            base.id
        )))
    }
}

/// Removes a partly restored data folder's contents, and the folder itself unless it existed.
fn clear_folder(dir: &Path, existed: bool) {
    let cleared = if existed {
        std::fs::read_dir(dir).and_then(|entries| {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    } else {
        std::fs::remove_dir_all(dir)
    };
    if let Err(e) = cleared {
        tracing::warn!(folder = %dir.display(), error = %e, "could not clear the partly restored folder");
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn describe(target: &Target) -> String {
    match target {
        Target::Time(t) => t.to_string(),
        Target::Lsn(lsn) => wal::format_lsn(*lsn),
        Target::Latest => "latest".into(),
    }
}

fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(Error::invalid(format!(
                    "`{}` is not empty: restore into an empty or new folder (lifeboat never overwrites a data folder)",
                    dir.display()
                )))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("cannot read data folder `{}`", dir.display()),
            e,
        )),
    }
}

/// When the newest archived WAL segment among `names` was stored.
async fn newest_wal_time(repo: &Repository, names: &[String]) -> Result<Option<Timestamp>> {
    let newest = names
        .iter()
        .filter(|n| matches!(wal::WalName::parse(n), Some(wal::WalName::Segment { .. })))
        .max();
    match newest {
        Some(name) => wal::stored_at(repo, name).await,
        None => Ok(None),
    }
}

fn write_recovery_settings(request: &PitrRequest, config_file: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the lifeboat program", e))?;
    let quote = |s: &str| s.replace('\'', "''");
    let mut lines = vec![
        String::new(),
        "# written by lifeboat restore pitr".into(),
        format!(
            "restore_command = '{} --config {} -q wal-fetch %f %p'",
            quote(&exe.display().to_string()),
            quote(&config_file.display().to_string())
        ),
        format!("recovery_target_timeline = '{}'", request.timeline),
    ];
    match &request.target {
        Target::Time(t) => lines.push(format!(
            "recovery_target_time = '{}'",
            t.strftime("%Y-%m-%d %H:%M:%S%.6f+00")
        )),
        Target::Lsn(lsn) => {
            lines.push(format!("recovery_target_lsn = '{}'", wal::format_lsn(*lsn)))
        }
        Target::Latest => {}
    }
    if !matches!(request.target, Target::Latest) {
        let action = match request.action {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
        };
        lines.push(format!("recovery_target_action = '{action}'"));
    }
    if request.no_archive {
        lines.push("archive_mode = 'off'".into());
    }
    let auto = request.pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&auto, text)
        .map_err(|e| Error::io(format!("writing `{}`", auto.display()), e))?;
    std::fs::write(request.pgdata.join("recovery.signal"), b"")
        .map_err(|e| Error::io("writing recovery.signal", e))?;
    Ok(())
}

/// The user the server must run as: ourselves, or `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    crate::postgres::cluster::unprivileged_user()
}

fn prepare_permissions(pgdata: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("setting the mode of `{}`", pgdata.display()), e))?;
    if let Some((uid, gid)) = owner {
        let mut stack = vec![pgdata.to_path_buf()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| {
                Error::io(
                    format!("handing `{}` to the server's user", path.display()),
                    e,
                )
            })?;
            if path.is_dir() && !path.is_symlink() {
                for entry in std::fs::read_dir(&path)
                    .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?
                    .flatten()
                {
                    stack.push(entry.path());
                }
            }
        }
    }
    Ok(())
}

async fn start_and_wait(
    ctx: &Context,
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
    } else {
        start_for_use(cmd, &log)?;
    }
    wait_for_target(ctx, request, base, &log).await
}

/// Starts a recovered server for use with `pg_ctl`: it outlives lifeboat.
fn start_for_use(mut cmd: std::process::Command, log: &Path) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::io("starting `pg_ctl`", e))?;
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
async fn wait_for_target(
    ctx: &Context,
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
            return Err(Error::Tool {
                tool: "postgres".into(),
                outcome: format!(
                    "stopped during recovery (fix the cause, then `pg_ctl start -D {}` resumes it)",
                    request.pgdata.display()
                ),
                stderr: why_recovery_stopped(log),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::invalid(
                "recovery did not reach its target within an hour",
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = ctx.cancel.cancelled() => return Err(Error::Interrupted("waiting for recovery".into())),
        }
    }
}

/// The server log's account of a failed recovery: lifeboat's own errors (a `wal-fetch` that
/// failed) and the server's FATAL lines, else its last lines.
fn why_recovery_stopped(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("error: ") || l.contains("FATAL"))
        .collect();
    if lines.is_empty() {
        lines = text.lines().rev().take(3).collect();
        lines.reverse();
    }
    crate::error::one_line(&lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BaseInfo;

    fn base(id: &str, finished: &str, end_lsn: &str) -> Manifest {
        let t: Timestamp = finished.parse().unwrap();
        Manifest {
            format: 1,
            id: id.into(),
            kind: BackupKind::Base,
            database: "main".into(),
            dbname: "yomira".into(),
            options: Default::default(),
            server_version: "15".into(),
            client_version: "15".into(),
            started_at: t,
            finished_at: t,
            data: String::new(),
            raw_size: 0,
            stored_size: 0,
            sha256: String::new(),
            compression: crate::manifest::Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            storage_class: None,
            tool_version: String::new(),
            tables: Vec::new(),
            base: Some(BaseInfo {
                start_lsn: "0/1000000".into(),
                end_lsn: end_lsn.into(),
                timeline: 1,
                first_wal: String::new(),
                last_wal: String::new(),
                wal_segment_size: wal::DEFAULT_SEGMENT_SIZE,
                system_identifier: None,
            }),
            tier: None,
        }
    }

    #[test]
    fn chooses_the_newest_base_before_the_target() {
        let bases = vec![
            base("20260101T000000Z-0001", "2026-01-01T00:10:00Z", "0/3000000"),
            base("20260102T000000Z-0002", "2026-01-02T00:10:00Z", "0/9000000"),
        ];
        let at = |t: &str| Target::Time(t.parse().unwrap());
        let choose = |target: &Target| {
            choose_base(&bases, target, TargetTimeline::Latest, &[]).map(|m| m.id.clone())
        };
        assert_eq!(
            choose(&at("2026-01-01T12:00:00Z")),
            Some(bases[0].id.clone())
        );
        assert_eq!(
            choose(&at("2026-01-03T00:00:00Z")),
            Some(bases[1].id.clone())
        );
        assert_eq!(choose(&at("2026-01-01T00:05:00Z")), None);
        assert_eq!(choose(&Target::Lsn(0x5000000)), Some(bases[0].id.clone()));
        assert_eq!(choose(&Target::Latest), Some(bases[1].id.clone()));
    }

    #[test]
    fn a_chosen_timeline_takes_the_base_backups_that_lead_to_it() {
        let mut on_two = base("20260103T000000Z-0003", "2026-01-03T00:10:00Z", "0/A000000");
        on_two.base.as_mut().unwrap().timeline = 2;
        on_two.base.as_mut().unwrap().start_lsn = "0/9800000".into();
        let bases = vec![
            base("20260101T000000Z-0001", "2026-01-01T00:10:00Z", "0/3000000"),
            on_two,
        ];
        // Timeline 2 branched off timeline 1 at 0/4000000, after the first backup started.
        let histories = vec![(2, vec![(1, 0x400_0000)])];
        let choose = |timeline| {
            choose_base(&bases, &Target::Latest, timeline, &histories).map(|m| m.id.clone())
        };
        assert_eq!(choose(TargetTimeline::Latest), Some(bases[1].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(2)), Some(bases[1].id.clone()));
        // Back on timeline 1: only the backup taken on it.
        assert_eq!(choose(TargetTimeline::Id(1)), Some(bases[0].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(3)), None);
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Latest, &histories),
            Some((2, vec![(1, 0x400_0000)]))
        );
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Current, &histories),
            Some((1, vec![]))
        );
    }
}
