//! Physical base backups: `pg_basebackup` as a tar on stdout, streamed through the pipeline.
//!
//! The backup carries no WAL of its own (`-X none`): the server archives what it needs through
//! `lifeboat wal-push`, and the backup is committed only once the segment holding its end LSN
//! is in this repository's archive. A server that does not archive WAL to lifeboat is refused
//! before anything is copied, since its base backup could never be recovered.
//!
//! An incremental (`--incremental`, PostgreSQL 17 and later) hands the server the
//! `backup_manifest` of the newest base backup of the same cluster through
//! `pg_basebackup --incremental=FILE` (which sends it with `UPLOAD_MANIFEST` before
//! `BASE_BACKUP ... INCREMENTAL`): pg_basebackup already speaks the replication protocol's
//! tar streams and is the program every base backup runs, so lifeboat keeps one path for both
//! kinds. Each backup's own `backup_manifest` is caught from its tar and stored beside it,
//! for the next incremental. Where an incremental cannot be taken (`summarize_wal` off, no
//! earlier backup, WAL summaries that no longer reach back to it), a full one is, saying why.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::backup::{About, DataPlan};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;
use crate::process::tools::major;
use crate::repository::manifest::{self, BackupKind, BaseInfo, DumpOptions, Manifest};
use crate::repository::Repository;
use crate::wal;
use crate::Context;

use super::incremental::{self, Server};

/// How long to wait for the server to archive the backup's last segment.
const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

pub async fn backup_base(
    ctx: &Context,
    repo: &Repository,
    name: &str,
    pg: &PostgresConfig,
    incremental: bool,
) -> Result<Manifest> {
    let ctx = &ctx.for_server(pg);
    let started_at = Timestamp::now();
    let id = manifest::new_backup_id(started_at);
    let conn = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    let client_version = ctx.tools.version("pg_basebackup")?;
    let client = conn.connect(&format!("database `{name}`")).await?;
    let row = client
        .query_one(
            "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
             current_setting('server_version'), current_database(), \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
             pg_database_size(current_database()), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             current_setting('summarize_wal', true)",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the archiving settings", &e))?;
    let archive_mode: String = row.get(0);
    let archive_command: String = row.get(1);
    let server_version: String = row.get(2);
    let dbname: String = row.get(3);
    let segment_size = row.get::<_, i64>(4) as u64;
    let db_size: i64 = row.get(5);
    let system_id: u64 = row
        .get::<_, String>(6)
        .parse()
        .map_err(|_| Error::Internal("the server's system identifier is not a number".into()))?;
    let summarize_wal: Option<String> = row.get(7);
    if archive_mode == "off" || !archive_command.contains("wal-push") {
        return Err(Error::NotReady(format!(
            "database `{name}` does not archive its WAL to lifeboat (archive_mode = `{archive_mode}`, archive_command = `{archive_command}`): \
             set archive_mode = on and archive_command = 'lifeboat --config FILE wal-push %p', then restart the server"
        )));
    }
    if major(&client_version) < major(&server_version) {
        return Err(Error::ToolVersion {
            tool: "pg_basebackup".into(),
            version: client_version,
            server: server_version,
        });
    }

    // A base backup of a server that is none of the cluster's generations could never be
    // recovered with its archive.
    let this_cluster = format!("the server of database `{name}`");
    let sole = wal::cluster::sole(ctx, name);
    wal::cluster::check_base(repo, name, sole, system_id, &this_cluster).await?;

    let parent = if incremental {
        let server = Server {
            name,
            version: &server_version,
            system_id,
            summarize_wal: summarize_wal.as_deref(),
        };
        incremental::choose_parent(ctx, repo, &client, &server).await?
    } else {
        None
    };
    drop(client);
    // pg_basebackup reads the parent's manifest from a file; it goes when the backup ends.
    let parent_file = match &parent {
        Some((_, text)) => {
            let mut file = tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("making a file for the parent's backup_manifest", e))?;
            std::io::Write::write_all(&mut file, text)
                .map_err(|e| Error::io("writing the parent's backup_manifest", e))?;
            Some(file)
        }
        None => None,
    };

    let tool = ctx.tools.tool("pg_basebackup").args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        // The backup_manifest still lists every file and size; checksums of their contents
        // would repeat what the stored stream's SHA-256 and each chunk's zstd checksum already
        // prove, at a tenth of pg_basebackup's time.
        "--manifest-checksums=NONE",
        "--no-password",
        "--verbose",
    ]);
    let mut tool = tool.arg(format!("--label=lifeboat {id}"));
    if let Some(file) = &parent_file {
        tool = tool.arg(format!("--incremental={}", file.path().display()));
    }
    let (tool, _passfile) = conn.apply_to(tool)?;
    let source = tool.spawn_reader()?;
    let killer = source.killer();
    let (source, caught) = crate::tarchunk::incremental::ManifestTap::new(source);

    // pg_basebackup only relays files the server reads: unlike pg_dump it leaves the cores
    // free, so by default compression takes them all.
    let threads = match ctx.config.compression.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    let plan = DataPlan::new(
        ctx,
        BackupKind::Base,
        &id,
        db_size.max(0) as u64 * 2,
        threads,
    );
    match &parent {
        Some((p, _)) => {
            tracing::info!(backup = %id, database = name, parent = %p.id, "incremental base backup of the cluster of `{dbname}`, since `{}`", p.id)
        }
        None => {
            tracing::info!(backup = %id, database = name, "base backup of the cluster of `{dbname}`")
        }
    }
    let task = if parent.is_some() {
        format!("incremental base backup {name}")
    } else {
        format!("base backup {name}")
    };
    let uploaded = plan
        .upload_reader(ctx, repo, &task, source, move || killer.kill())
        .await;
    let manifest_key = crate::repository::layout::backup_manifest(&id);
    let outcome = async {
        let stats = uploaded?;
        let caught = caught.lock().expect("manifest tap").take();
        let backup_manifest = match caught {
            Some(text) => Some(incremental::store_manifest(repo, &plan, &manifest_key, &text).await?),
            None => {
                tracing::warn!("pg_basebackup's tar held no backup_manifest: the next incremental of `{name}` will be a full backup");
                None
            }
        };
        // Its segments are being archived now: the archive has recorded its cluster.
        wal::cluster::check_base(repo, name, sole, system_id, &this_cluster).await?;
        let (start_lsn, end_lsn, timeline, archive) =
            backup_history(ctx, repo, name, sole, system_id, &format!("lifeboat {id}")).await?;
        let first_wal = wal::segment_of_lsn(timeline, start_lsn, segment_size);
        let last_wal = wal::segment_of_lsn(timeline, end_lsn, segment_size);
        wait_for_archive(ctx, &archive, &last_wal).await?;
        let about = About {
            id: id.clone(),
            kind: BackupKind::Base,
            database: name.to_string(),
            dbname: dbname.clone(),
            options: DumpOptions::default(),
            server_version: server_version.clone(),
            client_version: client_version.clone(),
            started_at,
            tables: Vec::new(),
            base: Some(BaseInfo {
                start_lsn: wal::format_lsn(start_lsn),
                end_lsn: wal::format_lsn(end_lsn),
                timeline,
                first_wal,
                last_wal,
                wal_segment_size: segment_size,
                system_identifier: Some(system_id.to_string()),
                parent: parent.as_ref().map(|(p, _)| p.id.clone()),
            }),
        };
        let mut manifest = plan.manifest(about, stats);
        manifest.backup_manifest = backup_manifest;
        Ok(manifest)
    }
    .await;
    drop(parent_file);
    let outcome = repo
        .finish_backup(&[&plan.data, &manifest_key], outcome, &ctx.cancel)
        .await;
    match outcome {
        // The server found its WAL summaries short of the parent (a gap while `summarize_wal`
        // was off, or removed early): what lifeboat checked beforehand cannot see every gap.
        Err(e)
            if parent.is_some()
                && !ctx.cancel.is_cancelled()
                && e.to_string().contains("WAL summaries are required") =>
        {
            tracing::warn!("taking a full base backup of `{name}` instead of an incremental: the server cannot tell the changes since `{}`: {e}", parent.as_ref().map_or("", |(p, _)| p.id.as_str()));
            Box::pin(backup_base(ctx, repo, name, pg, false)).await
        }
        outcome => outcome,
    }
}

/// The backup's start, end and timeline, from the backup history file (`*.backup`) that the
/// server archives when a base backup ends, and the archive it is in (the generation of
/// `system_id`): found by its label, which proves too that the server archives into this
/// repository.
async fn backup_history<'r>(
    ctx: &Context,
    repo: &'r Repository,
    cluster: &str,
    sole: bool,
    system_id: u64,
    label: &str,
) -> Result<(u64, u64, u32, wal::WalArchive<'r>)> {
    let begun = Instant::now();
    let mut seen = std::collections::HashSet::new();
    loop {
        // The cluster's first push records it: until then it has no archive.
        if let Some(archive) =
            wal::cluster::archive_of_system(repo, cluster, sole, system_id).await?
        {
            let names = wal::archived_names(&archive).await?;
            for name in names.iter().rev().filter(|n| n.ends_with(".backup")) {
                if !seen.insert(name.clone()) {
                    continue;
                }
                let raw = wal::read_archived(ctx, &archive, name)
                    .await?
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&raw);
                if text.lines().any(|l| l.trim() == format!("LABEL: {label}")) {
                    let (start, end, timeline) =
                        parse_backup_history(&text).ok_or_else(|| Error::Damaged {
                            what: format!("backup history file `{name}`"),
                            problem: "not readable".into(),
                        })?;
                    return Ok((start, end, timeline, archive));
                }
            }
        }
        if begun.elapsed() > ARCHIVE_WAIT {
            return Err(Error::TimedOut {
                what: format!("the server archiving this base backup's history file to repository `{}`", repo.location()),
                seconds: ARCHIVE_WAIT.as_secs(),
                hint: "check that archive_command runs `lifeboat wal-push` with this repository's configuration".into(),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = ctx.cancel.cancelled() => return Err(Error::Interrupted("waiting for the WAL archive".into())),
        }
    }
}

/// `START WAL LOCATION: 0/2000028 (file ...)`, `STOP WAL LOCATION: 0/2000100 (file ...)`,
/// `START TIMELINE: 1`.
fn parse_backup_history(text: &str) -> Option<(u64, u64, u32)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().split(' ').next().unwrap_or_default().to_string())
    };
    let start = wal::parse_lsn(&field("START WAL LOCATION:")?)?;
    let stop = wal::parse_lsn(&field("STOP WAL LOCATION:")?)?;
    let timeline = field("START TIMELINE:")?.parse().ok()?;
    Some((start, stop, timeline))
}

/// Waits until `segment` is in the repository's WAL archive.
async fn wait_for_archive(ctx: &Context, repo: &wal::WalArchive<'_>, segment: &str) -> Result<()> {
    let begun = Instant::now();
    loop {
        for encrypted in [false, true] {
            if repo.storage().exists(&repo.key(segment, encrypted)).await? {
                return Ok(());
            }
        }
        if begun.elapsed() > ARCHIVE_WAIT {
            return Err(Error::TimedOut {
                what: format!("WAL segment `{segment}`, needed to recover this base backup, reaching repository `{}`", repo.location()),
                seconds: ARCHIVE_WAIT.as_secs(),
                hint: "check that archive_command runs `lifeboat wal-push` with this repository's configuration".into(),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = ctx.cancel.cancelled() => return Err(Error::Interrupted("waiting for the WAL archive".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_backup_history_file() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                    START TIME: 2026-11-24 10:00:12 UTC\nLABEL: lifeboat x\nSTART TIMELINE: 1\n\
                    STOP TIME: 2026-11-24 10:00:12 UTC\nSTOP TIMELINE: 1\n";
        assert_eq!(parse_backup_history(text), Some((0x2000028, 0x2000100, 1)));
        assert_eq!(parse_backup_history("LABEL: x"), None);
    }
}
