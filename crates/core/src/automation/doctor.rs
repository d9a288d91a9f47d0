//! `doctor`: everything a run needs, checked, with what to fix: the configuration, the
//! repository (write, read, delete), the encryption keys, each database (tools against the
//! server's version, access, WAL archiving to lifeboat), each object backup's buckets, the
//! notification URLs, and Redis.

use serde::Serialize;

use crate::config::ConfigSource;
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;
use crate::process::tools::major;
use crate::repository::Repository;
use crate::Context;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn finding(check: impl Into<String>, outcome: Result<String>) -> Finding {
    match outcome {
        Ok(detail) => Finding {
            check: check.into(),
            ok: true,
            detail,
        },
        Err(e) => Finding {
            check: check.into(),
            ok: false,
            detail: e.to_string(),
        },
    }
}

pub async fn doctor(ctx: &Context) -> Vec<Finding> {
    let config = &ctx.config;
    let mut out = vec![Finding {
        check: "configuration".into(),
        ok: true,
        detail: format!("read from {}", config.source_name()),
    }];
    out.push(finding("repository", repository(ctx).await));
    if config.repository.object_lock.is_some() {
        out.push(finding("object lock", object_hold(ctx).await));
    }
    for name in config.repository.copies.keys() {
        let outcome = async {
            let copy_ctx = ctx.with_config(config.for_copy(name)?);
            let copied = match Repository::open(&copy_ctx).await {
                Ok(repo) => format!(
                    "`{}` holds {} backups",
                    repo.location(),
                    repo.list().await?.len()
                ),
                Err(Error::NotARepository { location }) => {
                    format!(
                        "`{location}` is not a copy yet: the first `lifeboat copy` makes it one"
                    )
                }
                Err(e) => return Err(e),
            };
            if copy_ctx.config.repository.object_lock.is_some() {
                object_hold(&copy_ctx).await?;
            }
            Ok(copied)
        }
        .await;
        out.push(finding(format!("copy {name}"), outcome));
    }
    if let Some(enc) = &config.encryption {
        out.push(finding("encryption keys", keys(enc)));
    }
    for (name, pg) in &config.postgres {
        let reached = finding(format!("database {name}"), database(ctx, name, pg).await);
        // Archiving is proven only where the server archives through lifeboat at all.
        let archives = pg.pitr && reached.ok;
        out.push(reached);
        if archives {
            out.push(finding(
                format!("archiving {name}"),
                archiving(ctx, name, pg).await,
            ));
            let incremental_jobs: Vec<&str> = config
                .jobs
                .iter()
                .filter(|(_, job)| {
                    job.steps.iter().any(|s| {
                        matches!(s, crate::config::Step::BackupBase(n, true) if n.as_deref().is_none_or(|n| n == name))
                    })
                })
                .map(|(job, _)| job.as_str())
                .collect();
            if !incremental_jobs.is_empty() {
                out.push(finding(
                    format!("incrementals {name}"),
                    incrementals(name, pg, &incremental_jobs).await,
                ));
            }
        }
    }
    for (name, objects) in &config.objects {
        let outcome = async {
            use futures::TryStreamExt;
            let env = ctx.storage_env();
            let source = crate::storage::Storage::bucket(&objects.source, &env)?;
            let mut listing = source.list_level("").await?;
            listing.try_next().await?;
            let dest = crate::storage::Storage::bucket(&objects.destination, &env)?;
            let runs = crate::buckets::list_bucket_runs(&dest).await?;
            Ok(format!(
                "source `{}` lists, destination `{}` holds {} runs",
                objects.source.url,
                objects.destination.url,
                runs.len()
            ))
        }
        .await;
        out.push(finding(format!("objects {name}"), outcome));
    }
    let notify = &config.notify;
    for (what, url) in [
        ("slack_webhook", &notify.slack_webhook),
        ("webhook", &notify.webhook),
        ("healthcheck", &notify.healthcheck),
    ] {
        if let Some(url) = url {
            let outcome = match url::Url::parse(url.expose()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    Ok(format!(
                        "`{}` (not sent: doctor sends nothing)",
                        u.host_str().unwrap_or("")
                    ))
                }
                _ => Err(Error::Config(format!(
                    "`notify.{what}` is not an http(s) URL: paste the whole URL the service gave"
                ))),
            };
            out.push(finding(format!("notify {what}"), outcome));
        }
    }
    if let Some(redis) = &config.redis {
        out.push(finding("redis", crate::redis::check(redis).await));
    }
    out
}

async fn repository(ctx: &Context) -> Result<String> {
    let repo = Repository::open(ctx).await?;
    let probe = format!("doctor/probe-{:016x}", rand::random::<u64>());
    let content = b"lifeboat doctor probe".to_vec();
    let storage = repo.storage();
    if !storage.write_new(&probe, content.clone()).await? {
        return Err(Error::NotReady(format!(
            "`{probe}` already exists: remove it (a doctor that was stopped left it)"
        )));
    }
    let back = storage.read_opt(&probe).await?;
    storage.delete(&probe).await?;
    if back.as_deref() != Some(content.as_slice()) {
        return Err(Error::Damaged {
            what: format!("`{}`", storage.display(&probe)),
            problem: "read back as other bytes than were written: the storage does not keep what it is given".into(),
        });
    }
    if storage.exists(&probe).await? {
        return Err(Error::NotReady(
            "a deleted probe is still there: deletes do not work (check the credentials' permissions)".into(),
        ));
    }
    let keys = match &ctx.config.repository.url {
        crate::config::RepositoryUrl::S3 { .. } => {
            match crate::storage::credentials::source(&ctx.config.repository.access()) {
                Some(source) => format!(", keys from {source}"),
                None => String::new(),
            }
        }
        crate::config::RepositoryUrl::Local(_) => String::new(),
    };
    Ok(format!(
        "`{}`: write, read and delete work{keys}",
        repo.location()
    ))
}

/// The bucket of a repository with `object_lock` set has Object Lock enabled.
async fn object_hold(ctx: &Context) -> Result<String> {
    let config = &ctx.config.repository;
    let storage = crate::storage::Storage::open(config, false, &ctx.storage_env())?;
    if !storage.backend().hold_enabled().await? {
        return Err(Error::Config(format!(
            "bucket `{}` has no Object Lock: nothing can be locked; create the bucket with it enabled (`aws s3api create-bucket --object-lock-enabled-for-bucket`), or remove `object_lock`",
            storage.location()
        )));
    }
    let mode = config.object_lock.map(|m| m.as_s3()).unwrap_or_default();
    Ok(format!(
        "`{}` has Object Lock: backups are locked ({mode}) until retention lets them go",
        storage.location()
    ))
}

fn keys(enc: &crate::config::EncryptionConfig) -> Result<String> {
    let Some(path) = &enc.identity_file else {
        return Ok(format!(
            "{} recipients; no identity here (keep it where restores run)",
            enc.recipients.len()
        ));
    };
    crate::crypto::load_identities(std::path::Path::new(path))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading `{path}`"), e))?;
    let publics: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().parse::<age::x25519::Identity>().ok())
        .map(|i| i.to_public().to_string())
        .collect();
    if enc.recipients.iter().any(|r| publics.contains(r)) {
        Ok(format!(
            "identity `{path}` opens backups made for the recipients"
        ))
    } else {
        Err(Error::Crypto(format!(
            "identity `{path}` matches none of `encryption.recipients`: backups could not be restored with it"
        )))
    }
}

/// How long doctor waits for a switched segment to reach the repository.
const ARCHIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Archiving proven end to end, as pgBackRest's `check` does: the server's own failures
/// (`pg_stat_archiver`), then a segment switched (after a WAL record, so that there is one to
/// switch), awaited in the repository and read back; and a `[wal] queue_max_mib` to set,
/// sized from the free space of `pg_wal`'s file system.
async fn archiving(
    ctx: &Context,
    name: &str,
    pg: &crate::config::PostgresConfig,
) -> Result<String> {
    let state = crate::postgres::archiver::read(
        pg,
        ctx.config.wal.queue_max_mib,
        &ctx.config.wal.stream_slot,
    )
    .await?;
    if state.failing() {
        return Err(Error::NotReady(format!(
            "the server's archive_command is failing: {} failed attempts (pg_stat_archiver), the last on `{}` at {}; PostgreSQL's log says why",
            state.failed_count,
            state.last_failed_wal.as_deref().unwrap_or("?"),
            state.last_failed_time.as_deref().unwrap_or("?")
        )));
    }
    let client = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?
        .connect("the server, to switch a WAL segment")
        .await?;
    let segment: String = client
        .query_one(
            "SELECT pg_walfile_name(lsn) FROM (SELECT pg_logical_emit_message(false, 'lifeboat', 'doctor') AS m, pg_switch_wal() AS lsn) s",
            &[],
        )
        .await
        .map_err(|e| {
            Error::NotReady(format!(
                "cannot switch a WAL segment to prove archiving ({}): run doctor as a role that may (a superuser, or `GRANT EXECUTE ON FUNCTION pg_switch_wal(), pg_logical_emit_message(boolean, text, text) TO ...`)",
                crate::error::one_line(&e.to_string())
            ))
        })?
        .get(0);
    let repo = Repository::open(ctx).await?;
    let cluster = crate::wal::cluster::which(ctx, Some(name))?;
    let sole = crate::wal::cluster::sole(ctx, &cluster);
    let archive = crate::wal::cluster::archive(&repo, &cluster, sole, None).await?;
    let begun = std::time::Instant::now();
    while crate::wal::stored_at(&archive, &segment).await?.is_none() {
        if begun.elapsed() > ARCHIVE_WAIT {
            return Err(Error::TimedOut {
                what: format!("segment `{segment}`, switched now, reaching the repository"),
                seconds: ARCHIVE_WAIT.as_secs(),
                hint: format!(
                    "archive_command does not archive into `{}`: check it, and PostgreSQL's log",
                    repo.location()
                ),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let took = begun.elapsed().as_secs_f64();
    crate::wal::read_archived(ctx, &archive, &segment).await?;
    let mut detail = format!(
        "segment `{segment}` switched, archived in {took:.1}s and read back; {} archived, {} failed attempts",
        state.archived_count, state.failed_count
    );
    match (ctx.config.wal.queue_max_mib, free_in_pg_wal(&client).await) {
        (None, Some(free)) => detail.push_str(&format!(
            "; `[wal] queue_max_mib` is unset: a storage outage fills pg_wal ({} free) and stops the server; set queue_max_mib = {}",
            crate::units::human_bytes(free),
            (free / 2 / (1024 * 1024)).max(64)
        )),
        (None, None) => detail.push_str(
            "; `[wal] queue_max_mib` is unset: a storage outage fills pg_wal and stops the server; set it to about half of pg_wal's free space",
        ),
        (Some(max), Some(free)) if max * 1024 * 1024 > free => detail.push_str(&format!(
            "; `[wal] queue_max_mib` ({max}) is more than pg_wal's free space ({}): lower it",
            crate::units::human_bytes(free)
        )),
        (Some(max), _) => detail.push_str(&format!("; WAL waiting in pg_wal limited to {max} MiB")),
    }
    // A stream's slot: its limit on pg_wal and what it costs, as `wal-stream --dry-run`.
    if state.stream.is_some() {
        let check = crate::postgres::stream::preflight::preflight(
            ctx,
            name,
            std::time::Duration::from_secs(3),
        )
        .await?;
        let f = &check.forecast;
        detail.push_str(&format!(
            "; WAL streamed through slot `{}` ({}): {:.1} KiB/s written, about {} requests a month at a piece every {} ms (R2 Class A: ${:.2} a month)",
            check.slot,
            if check.sync { "synchronous" } else { "asynchronous" },
            f.write_rate_bytes_per_s / 1024.0,
            f.requests_per_month,
            f.flush_ms,
            f.usd_per_month
        ));
        for warning in &check.warnings {
            detail.push_str(&format!("; {warning}"));
        }
    }
    Ok(detail)
}

/// The free space of the file system `pg_wal` is on, where doctor runs beside the server.
/// Whether the server of `name` can give the incrementals that `jobs` take: PostgreSQL 17 or
/// later, `summarize_wal = on`, and how far back its WAL summaries reach.
async fn incrementals(
    name: &str,
    pg: &crate::config::PostgresConfig,
    jobs: &[&str],
) -> Result<String> {
    let client = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?
        .connect(&format!("database `{name}`"))
        .await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
             current_setting('summarize_wal', true), current_setting('wal_summary_keep_time', true)",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the WAL summarizer's settings", &e))?;
    let (number, version): (i32, String) = (row.get(0), row.get(1));
    let jobs = jobs.join("`, `");
    if number < 170_000 {
        return Err(Error::Config(format!(
            "job `{jobs}` takes incremental base backups of `{name}`, whose server runs {version}: incrementals need PostgreSQL 17 or later; use `backup base` in that job"
        )));
    }
    let summarize: Option<String> = row.get(2);
    if summarize.as_deref() != Some("on") {
        return Err(Error::NotReady(format!(
            "`summarize_wal` is off on the server of `{name}`, so job `{jobs}` takes full backups where it asks for incrementals: run `ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();`"
        )));
    }
    let keep: Option<String> = row.get(3);
    let oldest: Option<String> = client
        .query_one(
            "SELECT min(start_lsn)::text FROM pg_available_wal_summaries()",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the server's WAL summaries", &e))?
        .get(0);
    Ok(format!(
        "summarize_wal = on, WAL summaries from {} kept {} (an incremental whose parent is older becomes a full backup)",
        oldest.as_deref().unwrap_or("nowhere yet"),
        keep.as_deref().unwrap_or("?")
    ))
}

async fn free_in_pg_wal(client: &tokio_postgres::Client) -> Option<u64> {
    let dir: String = client
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .ok()?
        .get(0);
    let stat = rustix::fs::statvfs(std::path::Path::new(&dir).join("pg_wal")).ok()?;
    Some(stat.f_bavail * stat.f_frsize)
}

async fn database(ctx: &Context, name: &str, pg: &crate::config::PostgresConfig) -> Result<String> {
    let ctx = &ctx.for_server(pg);
    let conn = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    let client = conn.connect(&format!("database `{name}`")).await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('archive_mode'), current_setting('archive_command')",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the server's settings", &e))?;
    let server: String = row.get(0);
    let archive_mode: String = row.get(1);
    let archive_command: String = row.get(2);
    let mut detail = format!("reached, PostgreSQL {server}");
    for tool in ["pg_dump", "pg_restore", "pg_basebackup"] {
        let version = ctx.tools.version(tool)?;
        if major(&version) < major(&server) {
            return Err(Error::ToolVersion {
                tool: tool.into(),
                version,
                server,
            });
        }
    }
    detail.push_str(", client tools new enough");
    if pg.pitr {
        if archive_mode == "off" || !archive_command.contains("wal-push") {
            return Err(Error::NotReady(format!(
                "`pitr = true` but the server does not archive to lifeboat (archive_mode = `{archive_mode}`, archive_command = `{archive_command}`): set archive_command = 'lifeboat --config FILE wal-push %p'"
            )));
        }
        if !crate::wal::cluster::sole(ctx, name)
            && !archive_command.contains(&format!("--db {name}"))
        {
            return Err(Error::NotReady(format!(
                "several clusters archive into this repository, and archive_command (`{archive_command}`) does not say it is `{name}`: set archive_command = 'lifeboat --config FILE wal-push --db {name} %p'"
            )));
        }
        if let ConfigSource::File(path) = &ctx.config.source {
            let path = path.display().to_string();
            if !archive_command.contains(&path) {
                detail.push_str(&format!(
                    "; note: archive_command does not name `{path}`: check it uses this repository's configuration"
                ));
            }
        }
        detail.push_str(", archives its WAL through lifeboat");
    }
    Ok(detail)
}
