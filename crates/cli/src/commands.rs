//! One function per subcommand: resolve the inputs, call the engine, print the result.

use std::io::Write;

use lifeboat_core::config::{url_has_password, Secret};
use lifeboat_core::manifest::BackupKind;
use lifeboat_core::manifest::Manifest;
use lifeboat_core::postgres::dump::{backup_db, human_bytes, DumpRequest};
use lifeboat_core::postgres::restore::{restore_db, RestoreRequest};
use lifeboat_core::postgres::{base, pitr};
use lifeboat_core::repository::{Repository, Selector};
use lifeboat_core::{crypto, drill, jobs, verify, wal, Context, Error, Result};

use crate::cli::{
    BackupCommand, Cli, Command, ConfigCommand, KeyCommand, KindArg, ListWhat, RestoreCommand,
    RestoreDbArgs, RestorePitrArgs, TargetActionArg,
};

pub async fn run(ctx: &Context, args: &Cli) -> Result<()> {
    match &args.command {
        Command::Init => {
            let repo = Repository::init(ctx).await?;
            tracing::info!("initialized repository `{}`", repo.location());
            print_json_or(
                args.json,
                &serde_json::json!({ "repository": repo.location() }),
                || repo.location().to_string(),
            )
        }
        Command::Config(ConfigCommand::Check) => {
            // Loading already validated it; also check that keys and tools are usable.
            let mut out = format!("# configuration: {}\n", ctx.config.source_name());
            out.push_str(&ctx.config.to_redacted_toml());
            emit(&out)
        }
        Command::Key(KeyCommand::Generate { out }) => {
            let recipient = crypto::generate_identity(out)?;
            tracing::info!(
                "wrote identity `{}`; keep it safe and off the database host. Add the public key to `[encryption] recipients`",
                out.display()
            );
            print_json_or(
                args.json,
                &serde_json::json!({ "identity_file": out, "recipient": recipient }),
                || recipient.clone(),
            )
        }
        Command::Backup(BackupCommand::Db(b)) => {
            let (name, pg) = ctx.config.database(b.db.as_deref())?;
            let repo = Repository::open(ctx).await?;
            let request = DumpRequest {
                schema_only: b.schema_only,
                schemas: b.schemas.clone(),
            };
            let manifest = jobs::with_run_lock(ctx, &repo, "backup db", async |ctx| {
                backup_db(ctx, &repo, name, pg, &request).await
            })
            .await?;
            tracing::info!(
                "backup `{}` of `{name}` done: {} raw, {} stored, {} tables, {} rows",
                manifest.id,
                human_bytes(manifest.raw_size),
                human_bytes(manifest.stored_size),
                manifest.tables.len(),
                manifest.total_rows()
            );
            if args.json {
                emit(&String::from_utf8_lossy(&manifest.to_json()))
            } else {
                emit(&format!("{}\n", manifest.id))
            }
        }
        Command::List {
            what: Some(ListWhat::Wal),
        } => {
            let repo = Repository::open(ctx).await?;
            let report = wal::archive_report(ctx, &repo, &repo.list().await?).await?;
            if args.json {
                return print_json_or(true, &report, String::new);
            }
            emit(&wal_report_text(&report))
        }
        Command::List {
            what: Some(ListWhat::Objects),
        } => crate::objects::list(ctx, args.json).await,
        Command::Backup(BackupCommand::Objects { name, dry_run }) => {
            crate::objects::backup(ctx, name.as_deref(), *dry_run, args.json).await
        }
        Command::Restore(RestoreCommand::Objects(r)) => {
            crate::objects::restore(ctx, r, args.json).await
        }
        Command::Verify {
            id,
            kind,
            quick,
            jobs,
            identity,
        } => {
            let repo = Repository::open(ctx).await?;
            let request = verify::VerifyRequest {
                backup: id.clone(),
                kind: kind.map(|k| match k {
                    KindArg::Db => BackupKind::Db,
                    KindArg::Base => BackupKind::Base,
                }),
                quick: *quick,
                identity: identity.clone(),
                jobs: *jobs,
            };
            let v = verify::verify(ctx, &repo, &request).await?;
            if args.json {
                print_json_or(true, &v, String::new)?;
            } else {
                emit(&show_verification(&v))?;
            }
            match v.failures().first() {
                None => Ok(()),
                Some(check) if check.name.starts_with("stored bytes") => Err(Error::Integrity {
                    id: v.backup.clone(),
                    detail: check.detail.clone(),
                }),
                Some(check) => Err(Error::Mismatch {
                    id: v.backup.clone(),
                    detail: format!(
                        "verification failed: {}: {}{}",
                        check.name,
                        check.detail,
                        match v.failures().len() {
                            1 => String::new(),
                            n => format!(" (and {} more failed checks)", n - 1),
                        }
                    ),
                }),
            }
        }
        Command::Run { job } => crate::automation::run(ctx, job, args.json).await,
        Command::Daemon { run_at_start } => crate::automation::daemon(ctx, *run_at_start).await,
        Command::Status => crate::automation::status(ctx, args.json).await,
        Command::Doctor => crate::automation::doctor(ctx, args.json).await,
        Command::Backup(BackupCommand::Redis) => {
            crate::automation::backup_redis(ctx, args.json).await
        }
        Command::Prune { dry_run, at, force } => {
            crate::retention::prune(ctx, *dry_run, *force, at.as_deref(), args.json).await
        }
        Command::Lifecycle { apply } => crate::retention::lifecycle(ctx, *apply, args.json).await,
        Command::WalPush { path } => {
            let repo = Repository::open(ctx).await?;
            if wal::push(ctx, &repo, path).await?.ahead {
                start_background(args, &["wal-push-ahead".into(), path.into()]);
            }
            Ok(())
        }
        Command::WalPushAhead { path } => {
            let repo = Repository::open(ctx).await?;
            wal::push_ready(ctx, &repo, path).await
        }
        Command::WalFetch { name, dest } => {
            let repo = Repository::open(ctx).await?;
            let fetched = wal::fetch(ctx, &repo, name, dest).await?;
            if !fetched.found {
                tracing::debug!(wal = %name, "not in the archive");
                std::process::exit(1);
            }
            if !fetched.ahead.is_empty() {
                let mut command = vec![std::ffi::OsString::from("wal-prefetch")];
                command.extend(fetched.ahead.iter().map(Into::into));
                start_background(args, &command);
            }
            Ok(())
        }
        Command::Watchdog => Ok(()),
        Command::WalPrefetch { names } => {
            let repo = Repository::open(ctx).await?;
            wal::prefetch(ctx, &repo, names).await
        }
        Command::Backup(BackupCommand::Base { db }) => {
            let (name, pg) = ctx.config.database(db.as_deref())?;
            let repo = Repository::open(ctx).await?;
            let manifest = jobs::with_run_lock(ctx, &repo, "backup base", async |ctx| {
                base::backup_base(ctx, &repo, name, pg).await
            })
            .await?;
            tracing::info!(
                "base backup `{}` of `{name}` done: {} raw, {} stored",
                manifest.id,
                human_bytes(manifest.raw_size),
                human_bytes(manifest.stored_size)
            );
            if args.json {
                emit(&String::from_utf8_lossy(&manifest.to_json()))
            } else {
                emit(&format!("{}\n", manifest.id))
            }
        }
        Command::List { what: None } => {
            let repo = Repository::open(ctx).await?;
            let catalog = repo.catalog().await?;
            for damaged in &catalog.damaged {
                tracing::warn!("{}", damaged.describe());
            }
            let verifications = verify::list_verifications(&repo).await?;
            if args.json {
                // A damaged manifest is listed too, as `{"id", "damaged": reason, "manifest"}`.
                let mut listed: Vec<(String, serde_json::Value)> = catalog
                    .manifests
                    .iter()
                    .map(|m| {
                        let mut value = serde_json::to_value(m).expect("manifests serialize");
                        if let Some(v) = verifications.iter().find(|v| v.backup == m.id) {
                            value["verification"] =
                                serde_json::to_value(v).expect("verifications serialize");
                        }
                        (m.id.clone(), value)
                    })
                    .collect();
                listed.extend(catalog.damaged.iter().map(|d| {
                    let value = serde_json::json!({
                        "id": d.id, "damaged": d.reason, "manifest": d.manifest
                    });
                    (d.id.clone(), value)
                }));
                listed.sort_by(|a, b| a.0.cmp(&b.0));
                let listed: Vec<serde_json::Value> = listed.into_iter().map(|(_, v)| v).collect();
                return print_json_or(true, &listed, String::new);
            }
            emit(&list_table(&catalog, &verifications))
        }
        Command::Show { id } => {
            let repo = Repository::open(ctx).await?;
            let manifest = repo
                .find(&Selector {
                    id,
                    ..Selector::default()
                })
                .await?;
            let verification = verify::list_verifications(&repo)
                .await?
                .into_iter()
                .find(|v| v.backup == manifest.id);
            if args.json {
                let mut value = serde_json::to_value(&manifest).expect("manifests serialize");
                if let Some(v) = &verification {
                    value["verification"] =
                        serde_json::to_value(v).expect("verifications serialize");
                }
                print_json_or(true, &value, String::new)
            } else {
                let mut out = show(&manifest);
                if let Some(v) = &verification {
                    out.push_str(&show_verification(v));
                }
                emit(&out)
            }
        }
        Command::Restore(RestoreCommand::Db(r)) => {
            let repo = Repository::open(ctx).await?;
            let request = restore_request(ctx, r)?;
            let report = restore_db(ctx, &repo, &request).await?;
            tracing::info!(
                "restored `{}` into `{}` in {:.1}s: {} tables checked, {} rows, all as recorded",
                report.backup,
                report.target,
                report.seconds,
                report.tables_checked,
                report.rows_checked
            );
            print_json_or(args.json, &report, || report.backup.clone())
        }
        Command::Restore(RestoreCommand::Pitr(p)) => {
            let repo = Repository::open(ctx).await?;
            let request = pitr_request(p)?;
            let report = pitr::restore_pitr(ctx, &repo, &request).await?;
            match (&report.reached, report.recovery_seconds) {
                (reached, Some(secs)) => tracing::info!(
                    "recovered `{}` from base backup `{}` to {} (last transaction {}) in {:.1}s restore + {:.1}s recovery",
                    report.pgdata,
                    report.base_backup,
                    report.target,
                    reached.as_deref().unwrap_or("none replayed"),
                    report.restore_seconds,
                    secs
                ),
                _ => tracing::info!(
                    "restored base backup `{}` into `{}`; start the server to recover to {}",
                    report.base_backup,
                    report.pgdata,
                    report.target
                ),
            }
            print_json_or(args.json, &report, || report.base_backup.clone())
        }
        Command::Drill => {
            let report = drill::run_drill(ctx).await?;
            if args.json {
                return print_json_or(true, &report, String::new);
            }
            let mut out = String::from("drill passed\n");
            for step in &report.steps {
                out.push_str(&format!(
                    "  {:<44} {:>8.2}s  {}\n",
                    step.step, step.seconds, step.detail
                ));
            }
            let total: f64 = report.steps.iter().map(|s| s.seconds).sum();
            out.push_str(&format!(
                "  {:<44} {:>8.2}s  backup {} in {}\n",
                "total", total, report.backup, report.repository
            ));
            out.push_str(&format!(
                "recovered: {} tables compared equal ({} rows); dump verified, restores in {:.1}s; \
                 point in time {} recovered from base backup {} in {:.1}s ({})\n",
                report.tables_compared,
                report.rows_restored,
                report.verified_recovery_seconds.unwrap_or_default(),
                report.pitr_target,
                report.base_backup,
                report.pitr_seconds,
                report.pitr_repository
            ));
            emit(&out)
        }
    }
}

fn pitr_request(p: &RestorePitrArgs) -> Result<pitr::PitrRequest> {
    let target = if let Some(time) = &p.target_time {
        pitr::Target::Time(parse_time(time)?)
    } else if let Some(lsn) = &p.target_lsn {
        pitr::Target::Lsn(wal::parse_lsn(lsn).ok_or_else(|| {
            Error::invalid(format!(
                "`--target-lsn {lsn}` is not an LSN: write it as `0/3000060`"
            ))
        })?)
    } else {
        pitr::Target::Latest
    };
    let timeline = match p.target_timeline.as_str() {
        "latest" => pitr::TargetTimeline::Latest,
        "current" => pitr::TargetTimeline::Current,
        other => match other.parse::<u32>() {
            Ok(id) if id > 0 => pitr::TargetTimeline::Id(id),
            _ => {
                return Err(Error::invalid(format!(
                    "`--target-timeline {other}` is not a timeline: give `latest`, `current` or a timeline's number (`lifeboat list wal` shows them)"
                )))
            }
        },
    };
    Ok(pitr::PitrRequest {
        pgdata: p.pgdata.clone(),
        target,
        timeline,
        action: match p.target_action {
            TargetActionArg::Promote => pitr::TargetAction::Promote,
            TargetActionArg::Pause => pitr::TargetAction::Pause,
        },
        start: p.start,
        port: p.port,
        socket_dir: p.socket_dir.clone(),
        no_archive: p.no_archive,
        throwaway: false,
        identity: p.identity.clone(),
        base: None,
    })
}

/// A moment: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM:SS` taken as UTC.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    text.parse::<jiff::Timestamp>()
        .or_else(|_| {
            text.parse::<jiff::civil::DateTime>()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| {
            Error::invalid(format!(
                "`{text}` is not a moment: write it as `2026-02-22T01:00:00+07:00` (or `2026-02-21 18:00:00` for UTC)"
            ))
        })
}

fn restore_request(ctx: &Context, r: &RestoreDbArgs) -> Result<RestoreRequest> {
    let (into, into_password) = match ctx.config.postgres.get(&r.into) {
        Some(pg) => (pg.url.expose().to_string(), pg.password.clone()),
        None => {
            if !r.into.contains("://") {
                return Err(Error::invalid(format!(
                    "`--into {}` is neither a configured database nor a `postgresql://` URL",
                    r.into
                )));
            }
            if url_has_password(&r.into) {
                tracing::warn!("the password in `--into` can be seen by other users in `ps`: put it in $PGPASSWORD instead");
            }
            let from_env = std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new);
            (r.into.clone(), from_env)
        }
    };
    Ok(RestoreRequest {
        backup: r.id.clone(),
        into,
        into_password,
        jobs: r.jobs,
        clean: r.clean,
        no_owner: r.no_owner,
        tables: r.tables.clone(),
        schemas: r.schemas.clone(),
        data_only: r.data_only,
        schema_only: r.schema_only,
        identity: r.identity.clone(),
        spool_dir: r.spool_dir.clone(),
    })
}

fn show_verification(v: &verify::Verification) -> String {
    let mut out = format!(
        "verification of {} at {}: {}{}\n",
        v.backup,
        v.verified_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        if v.passed { "passed" } else { "FAILED" },
        if v.quick { " (quick)" } else { "" }
    );
    if let (Some(took), Some(rto)) = (v.recovery_seconds, v.rto_seconds) {
        out.push_str(&format!(
            "  recovery time {took:.1}s, objective {rto}s: {}\n",
            if took <= rto as f64 {
                "met"
            } else {
                "EXCEEDED"
            }
        ));
    }
    for check in &v.checks {
        out.push_str(&format!(
            "  {} {}: {}\n",
            if check.passed { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        ));
    }
    out
}

fn list_table(
    catalog: &lifeboat_core::repository::Catalog,
    verifications: &[verify::Verification],
) -> String {
    if catalog.manifests.is_empty() && catalog.damaged.is_empty() {
        return "no backups\n".into();
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    for m in &catalog.manifests {
        let mut notes = Vec::new();
        if m.is_encrypted() {
            notes.push("encrypted".to_string());
        }
        if m.options.schema_only {
            notes.push("schema-only".into());
        }
        if !m.options.schemas.is_empty() {
            notes.push(format!("schemas: {}", m.options.schemas.join(",")));
        }
        if let Some(tier) = &m.tier {
            notes.push(tier.clone());
        }
        if let Some(v) = verifications.iter().find(|v| v.backup == m.id) {
            notes.push(match (v.passed, v.recovery_seconds) {
                (true, Some(secs)) => format!("verified, restores in {secs:.1}s"),
                (true, None) => "verified (quick)".into(),
                (false, _) => "VERIFICATION FAILED".into(),
            });
        }
        rows.push((
            m.id.clone(),
            format!(
                "{:<22} {:<5} {:<12} {:<20} {:>10} {:>10} {:>7} {}\n",
                m.id,
                m.kind.as_str(),
                m.database,
                m.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
                human_bytes(m.raw_size),
                human_bytes(m.stored_size),
                m.tables.len(),
                notes.join("; ")
            ),
        ));
    }
    for d in &catalog.damaged {
        rows.push((
            d.id.clone(),
            format!(
                "{:<22} {:<5} {:<12} {:<20} {:>10} {:>10} {:>7} MANIFEST DAMAGED: {}\n",
                d.id, "?", "?", "?", "?", "?", "?", d.reason
            ),
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!(
        "{:<22} {:<5} {:<12} {:<20} {:>10} {:>10} {:>7} {}\n",
        "ID", "KIND", "DATABASE", "FINISHED (UTC)", "RAW", "STORED", "TABLES", "NOTES"
    );
    out.extend(rows.into_iter().map(|(_, row)| row));
    out
}

fn show(m: &Manifest) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line("id", m.id.clone());
    line("kind", m.kind.as_str().into());
    line(
        "database",
        format!(
            "{} (`{}` on PostgreSQL {})",
            m.database, m.dbname, m.server_version
        ),
    );
    line("taken with", m.client_version.clone());
    if let Some(base) = &m.base {
        line("timeline", base.timeline.to_string());
        line("lsn", format!("{} .. {}", base.start_lsn, base.end_lsn));
        line("wal", format!("{} .. {}", base.first_wal, base.last_wal));
    }
    line("started", m.started_at.to_string());
    line("finished", m.finished_at.to_string());
    line(
        "options",
        format!(
            "schema-only: {}, schemas: {}",
            m.options.schema_only,
            if m.options.schemas.is_empty() {
                "all".into()
            } else {
                m.options.schemas.join(", ")
            }
        ),
    );
    line(
        "raw size",
        format!("{} ({} bytes)", human_bytes(m.raw_size), m.raw_size),
    );
    line(
        "stored size",
        format!("{} ({} bytes)", human_bytes(m.stored_size), m.stored_size),
    );
    line("sha256", m.sha256.clone());
    line(
        "compression",
        format!("{} level {}", m.compression.algorithm, m.compression.level),
    );
    line(
        "encryption",
        m.encryption.as_ref().map_or("none".into(), |e| {
            format!("{} to {}", e.algorithm, e.recipients.join(", "))
        }),
    );
    line(
        "storage class",
        m.storage_class
            .clone()
            .unwrap_or_else(|| "bucket default".into()),
    );
    line("data", m.data.clone());
    line("lifeboat", m.tool_version.clone());
    out.push_str(&format!(
        "tables ({}, {} rows):\n",
        m.tables.len(),
        m.total_rows()
    ));
    for t in &m.tables {
        out.push_str(&format!("  {:<40} {:>12}\n", t.qualified(), t.rows));
    }
    out
}

pub fn print_json_or<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        emit(&(serde_json::to_string_pretty(value).expect("output serializes") + "\n"))
    } else {
        emit(&format!("{}\n", text()))
    }
}

/// `list wal`: per timeline, its segments, where it branched off, the moments it can recover
/// (to the millisecond, rounded inwards, so that they can be given as `--target-time`), and
/// its gaps.
fn wal_report_text(report: &wal::ArchiveReport) -> String {
    use std::fmt::Write;
    let millis = |t: jiff::Timestamp, up: bool| {
        let ms = t.as_millisecond() + i64::from(up && t.subsec_nanosecond() % 1_000_000 != 0);
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(t)
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    if report.timelines.is_empty() {
        return "no WAL archived\n".into();
    }
    let mut out = String::new();
    for t in &report.timelines {
        let _ = write!(
            out,
            "timeline {}: {} .. {} ({} segments",
            t.span.timeline, t.span.first, t.span.last, t.span.segments
        );
        if !t.span.gaps.is_empty() {
            let _ = write!(out, ", {} gaps", t.span.gaps.len());
        }
        out.push(')');
        if let Some((parent, lsn)) = &t.parent {
            let _ = write!(out, ", branched off timeline {parent} at {lsn}");
        }
        if let Some(at) = t.newest_archived_at {
            let _ = write!(out, ", newest archived {}", millis(at, false));
        }
        out.push('\n');
        for w in &t.recoverable {
            let _ = writeln!(
                out,
                "  recoverable: {} .. {} (from base backup {})",
                millis(w.from, true),
                millis(w.to, false),
                w.base_backup
            );
        }
        if t.recoverable.is_empty() {
            out.push_str("  recoverable: nothing (no base backup reaches this timeline)\n");
        }
        for (from, to) in &t.span.gaps {
            let _ = writeln!(out, "  gap: {from} .. {to} missing");
        }
    }
    out
}

/// Writes to stdout; a closed stdout (`| head`) is not an error worth a message.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing to stdout", e)),
    }
}

/// Starts `lifeboat COMMAND...` (a `wal-prefetch` or `wal-push-ahead`) in the background,
/// detached from PostgreSQL's `restore_command` or `archive_command`, which returns at once;
/// one that cannot start only costs speed.
fn start_background(args: &Cli, command: &[std::ffi::OsString]) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    cmd.arg("-q")
        .args(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Err(e) = cmd.spawn() {
        tracing::debug!(error = %e, "background work not started");
    }
}
