//! Logical restore: download, verify, decrypt, decompress, `pg_restore`, with row counts taken
//! from the archive on its way.
//!
//! A restore streams straight into `pg_restore --single-transaction` (or, for `--clean`,
//! through `psql` in one transaction that lifeboat opens and commits, [`script`]), as the
//! archive arrives: download, decoding, loading and
//! index builds overlap, and nothing commits until the stored hash is verified and every
//! table's rows counted in the stream match the backup's, because the archive's last bytes
//! are withheld until then ([`stream`], [`checked`]). `--jobs N` gives each index build N-1
//! parallel workers and sizes `maintenance_work_mem` from the server ([`settings`]). With
//! `--spool`, the verified archive is spooled to an unnamed file instead and `pg_restore
//! --jobs` loads tables in parallel, without one transaction ([`spooled`]). With `--create`, the
//! database is restored under a staging name and renamed only once whole and checked, so a
//! parallel restore onto an empty server loses the one-transaction guarantee in nothing
//! ([`created`]); there `--spool` loads each table in pieces on N sessions while the archive
//! still arrives ([`pipelined`]). Single tables are chosen precisely through a `pg_restore -L`
//! list built from the archive's table of contents ([`toc`]), so `--table a.t` never also
//! restores `b.t` ([`selection`]).
//!
//! Which of these a restore does is one [`mode::Strategy`], chosen once from the request
//! ([`mode`]); what every strategy works with (the stored archive, progress, a child's end)
//! is in [`archive`]. This file is the entry: [`restore_db`] and the load it runs.

mod archive;
mod arrival;
mod checked;
mod created;
mod mode;
mod pipelined;
pub(crate) mod script;
mod selection;
mod session;
mod settings;
mod spooled;
mod stream;
mod toc;
mod work;

pub(crate) use archive::Archive;
pub(crate) use stream::restore_listed;
pub(crate) use toc::read_toc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;
use crate::process::Unnamed;
use crate::repository::keys::identities_for;
use crate::repository::manifest::{BackupKind, Manifest, TableRows};
use crate::repository::{Repository, Selector};
use crate::Context;

use created::prepare_server;
use mode::{Mode, Strategy};
use selection::Selection;
pub use toc::{clean_prelude, copy_list, schema_list, use_list};

#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Backup id, unique prefix, or `latest`.
    pub backup: String,
    /// Target database URL (its password may come separately).
    pub into: String,
    pub into_password: Option<crate::config::Secret>,
    pub jobs: u32,
    pub clean: bool,
    pub no_owner: bool,
    /// `schema.table` names.
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub data_only: bool,
    pub schema_only: bool,
    /// Identity file for encrypted backups (else the configured one).
    pub identity: Option<PathBuf>,
    /// Spool the archive and let `pg_restore --jobs` load tables in parallel (no single
    /// transaction).
    pub spool: bool,
    /// Folder for the spooled archive of a parallel restore.
    pub spool_dir: Option<PathBuf>,
    /// Create the target database first, with the backup's owner, encoding, locale and
    /// settings.
    pub create: bool,
    /// Create the backup's roles that the server lacks first.
    pub globals: bool,
    /// With `globals`: also alter the roles that exist to match the backup.
    pub replace_roles: bool,
    /// How a backup in an archive tier is read back.
    pub thaw: crate::storage::s3::tiers::Thaw,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub database: String,
    pub target: String,
    pub tables_checked: usize,
    pub rows_checked: u64,
    pub spooled: bool,
    /// Whether tables were loaded while the archive arrived (`--create --spool`).
    pub pipelined: bool,
    /// Of `tables_checked`, those whose rows were counted in the archive as it passed (the
    /// rest were counted in the database afterwards).
    pub tables_counted_in_stream: usize,
    /// How many `COPY` transactions the pipelined restore loaded the tables' data in (a table
    /// larger than a piece is loaded by every session at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<u64>,
    /// How many indexes (and primary key, unique and exclusion constraints) the pipelined
    /// restore built as soon as their table was loaded, while later tables loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexes_while_loading: Option<u64>,
    /// The most disk the pipelined restore's spool file took: a window of the archive, as
    /// each piece leaves it once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_peak_bytes: Option<u64>,
    /// Session settings the restore ran with.
    pub settings: std::collections::BTreeMap<String, String>,
    pub seconds: f64,
    /// What `--globals` did to the roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<crate::postgres::globals::RolePlan>,
    /// Whether `--create` created the database.
    pub created: bool,
}

pub async fn restore_db(
    ctx: &Context,
    repo: &Repository,
    request: &RestoreRequest,
) -> Result<RestoreReport> {
    let begun = Instant::now();
    let manifest = repo
        .find(&Selector {
            id: &request.backup,
            kind: Some(BackupKind::Db),
            database: None,
        })
        .await?;
    // pg_restore reads the archives of its own pg_dump's version and older.
    ctx.tools.require(
        "pg_restore",
        crate::process::tools::major(&manifest.client_version),
        false,
        &format!(
            "backup `{}` (made by pg_dump {})",
            manifest.id, manifest.client_version
        ),
    )?;
    let selection = Selection::new(&manifest, request)?;
    let mut keys = vec![manifest.data.as_str()];
    if let Some(globals) = manifest.globals.as_ref().filter(|_| request.globals) {
        keys.push(globals.key.as_str());
    }
    crate::storage::s3::tiers::ensure_readable(
        repo.storage(),
        &manifest.id,
        &keys,
        &request.thaw,
        &ctx.cancel,
    )
    .await?;
    let mode = Mode::new(request, selection)?.or_streamed_without(request);
    let identities = identities_for(&ctx.config, &manifest, request.identity.as_deref())?;
    let target = ConnInfo::new(&request.into, request.into_password.as_ref())?;
    let (roles, staged) =
        prepare_server(ctx, repo, &manifest, &target, request, identities.clone()).await?;
    let into = staged.as_ref().map_or(&target, |staged| &staged.conn);
    let loaded = load(ctx, repo, &manifest, &mode, into, request, identities).await;
    let (session, checked) = match (loaded, staged) {
        (Ok(loaded), None) => loaded,
        (Ok(loaded), Some(staged)) => {
            staged.commit().await?;
            loaded
        }
        (Err(e), Some(staged)) => {
            staged.abandon().await;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    Ok(RestoreReport {
        backup: manifest.id.clone(),
        database: manifest.database.clone(),
        target: target.redacted().to_string(),
        tables_checked: checked.tables,
        rows_checked: checked.rows,
        spooled: mode.strategy.spooled(),
        pipelined: mode.strategy.pipelined(),
        tables_counted_in_stream: checked.in_stream,
        pieces: checked.loading.map(|l| l.pieces),
        indexes_while_loading: checked.loading.map(|l| l.indexes),
        spool_peak_bytes: checked.loading.map(|l| l.spool_peak),
        settings: session,
        seconds: round_secs(begun.elapsed()),
        roles,
        created: request.create,
    })
}

/// What a restore checked: tables, their rows, and how many were counted in the stream.
struct CheckedRows {
    tables: usize,
    rows: u64,
    in_stream: usize,
    /// Of a pipelined restore: what its sessions did.
    loading: Option<pipelined::Loading>,
}

/// Loads `manifest`'s archive into `target` as `request` says, and checks its rows; returns
/// the session settings it ran with and what it checked.
async fn load(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    mode: &Mode,
    target: &ConnInfo,
    request: &RestoreRequest,
    identities: Option<Arc<Identities>>,
) -> Result<(std::collections::BTreeMap<String, String>, CheckedRows)> {
    // Reach the target before touching anything.
    let client = target.connect("target database").await?;
    let server = settings::Server::read(&client).await?;
    drop(client);
    let Mode {
        ref selection,
        jobs,
        strategy,
    } = *mode;
    let clean_script = strategy.clean_script();
    let mut session = settings::choose(server, jobs);
    if strategy.pipelined() {
        // Nobody sees the staging database before the restore ends: its commits need not
        // wait for the disk.
        session.insert("synchronous_commit".into(), "off".into());
    }
    let mut tool = pg_restore(ctx, request, strategy, &session);
    let toc = if selection.tables.is_empty() && selection.schemas.is_empty() && !clean_script {
        None
    } else {
        Some(toc::read_toc(ctx, &Archive::new(repo, manifest, identities.clone())).await?)
    };
    // Kept until the restore is done: pg_restore reads it.
    let list_file = match &toc {
        Some(toc) => selection_list(toc, selection, request)?,
        None => None,
    };
    if let Some(file) = &list_file {
        tool = tool.arg(format!("--use-list={}", file.path().display()));
    }

    let to_check = if request.schema_only || manifest.options.schema_only {
        Vec::new()
    } else {
        selection.restored_tables(manifest)
    };
    let mut archive = Archive::new(repo, manifest, identities);
    tracing::info!(backup = %manifest.id, target = target.redacted(), jobs, strategy = ?strategy, settings = ?session, "restoring");
    archive.task = ctx
        .progress
        .start(&format!("restore {}", manifest.id), Some(manifest.raw_size));
    let spool_dir = request.spool_dir.as_deref();
    let mut loading = None;
    let restored = match strategy {
        Strategy::Pipelined => {
            let options = settings::pgoptions(&session);
            pipelined::restore(
                ctx, &archive, target, tool, &options, jobs, spool_dir, &to_check,
            )
            .await
            .map(|(unchecked, loaded)| {
                loading = loaded;
                unchecked
            })
        }
        Strategy::Spooled => {
            spooled::restore(ctx, &archive, target, tool, jobs, spool_dir, &to_check).await
        }
        Strategy::Script { clean } => {
            // pg_restore may stop reading before the end (it has its tables, or needs no
            // data): its script is committed only on the verdict of the whole archive.
            let prelude = if clean {
                toc::clean_prelude(
                    toc.as_deref().unwrap_or_default(),
                    &selection.schemas,
                    request.schema_only,
                )
            } else {
                String::new()
            };
            let psql = settings::pgoptions(&session);
            stream::through_psql(ctx, &archive, target, tool, &prelude, &psql, &to_check).await
        }
        Strategy::Stream => {
            let tool = tool
                .arg(format!("--dbname={}", target.dbname()))
                .arg("--single-transaction");
            stream::into_pg_restore(ctx, &archive, target, tool, &to_check).await
        }
    };
    drop(archive);
    // A stop kills the tools: what they then say is about the stop.
    let unchecked = restored.map_err(|e| match e {
        Error::Interrupted(_) => e,
        _ if ctx.cancel.is_cancelled() => Error::Interrupted("restore stopped".into()),
        _ => e,
    })?;
    let unchecked: Vec<&TableRows> = unchecked.iter().collect();
    checked::check_counts(manifest, target, &unchecked).await?;
    let checked = CheckedRows {
        tables: to_check.len(),
        rows: to_check.iter().map(|t| t.rows).sum(),
        in_stream: to_check.len() - unchecked.len(),
        loading,
    };
    Ok((session, checked))
}

/// `pg_restore` with the options of `request`, its session settings in `PGOPTIONS`.
fn pg_restore(
    ctx: &Context,
    request: &RestoreRequest,
    strategy: Strategy,
    session: &std::collections::BTreeMap<String, String>,
) -> crate::process::Tool {
    let mut tool = ctx
        .tools
        .tool("pg_restore")
        .args(["--exit-on-error", "--no-password"])
        .env("PGOPTIONS", settings::pgoptions(session));
    if request.clean && !strategy.clean_script() {
        tool = tool.args(["--clean", "--if-exists"]);
    }
    if request.no_owner {
        tool = tool.args(["--no-owner", "--no-privileges"]);
    }
    if request.data_only {
        tool = tool.arg("--data-only");
    }
    if request.schema_only {
        tool = tool.arg("--schema-only");
    }
    tool
}

/// The `pg_restore -L` list of a selection (tables, or whole schemas), in an unnamed file;
/// `None` without a selection.
fn selection_list(
    toc: &str,
    selection: &Selection,
    request: &RestoreRequest,
) -> Result<Option<Unnamed>> {
    if selection.tables.is_empty() && selection.schemas.is_empty() {
        return Ok(None);
    }
    let list = if selection.tables.is_empty() {
        toc::schema_list(toc, &selection.schemas, request.data_only)
    } else {
        use_list(
            toc,
            &selection.tables,
            request.data_only,
            request.schema_only,
        )
    };
    Unnamed::memory("lifeboat-restore-list", list.as_bytes())
        .map(Some)
        .map_err(|e| Error::io("writing the restore list", e))
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
