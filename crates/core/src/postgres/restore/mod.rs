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

mod arrival;
mod checked;
mod created;
mod pipelined;
pub(crate) mod script;
mod selection;
mod session;
mod settings;
mod spooled;
mod stream;
mod toc;
mod work;

pub(crate) use toc::read_toc;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pipeline::{self, Delivered, Expected};
use crate::postgres::conn::ConnInfo;
use crate::postgres::counts::count_tables;
use crate::process::Unnamed;
use crate::progress::Task;
use crate::repository::keys::identities_for;
use crate::repository::manifest::{BackupKind, Manifest, TableRows};
use crate::repository::{Repository, Selector};
use crate::Context;

use created::Staged;
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

/// A backup's stored archive, ready to stream: where it is and how it is checked and opened.
pub(crate) struct Archive<'a> {
    pub repo: &'a Repository,
    pub manifest: &'a Manifest,
    pub expected: Expected,
    pub identities: Option<Arc<Identities>>,
    /// What the bytes restored are reported to.
    pub task: Task,
}

impl<'a> Archive<'a> {
    pub fn new(
        repo: &'a Repository,
        manifest: &'a Manifest,
        identities: Option<Arc<Identities>>,
    ) -> Self {
        Archive {
            repo,
            manifest,
            expected: manifest.expected(),
            identities,
            task: Task::silent(),
        }
    }

    /// Streams the decoded archive into `sink`, verified (see [`pipeline::download`]).
    pub async fn download<W: Write + Send + 'static>(
        &self,
        sink: W,
        ctx: &Context,
    ) -> Result<Delivered<W>> {
        pipeline::download(
            self.repo.storage(),
            &self.manifest.data,
            &self.expected,
            self.identities.clone(),
            sink,
            &ctx.cancel,
        )
        .await
    }
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
        spooled: mode.spooled,
        pipelined: mode.pipelined,
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

/// How a restore loads, as its options say.
struct Mode {
    /// What of the backup it restores.
    selection: Selection,
    jobs: u32,
    spooled: bool,
    /// A parallel restore of a whole database into the staging database of `--create`
    /// (with `--spool` or not): tables loaded while the archive arrives ([`pipelined`]),
    /// through a spool that holds a window of it. The staging database is what makes it all
    /// or nothing, not one transaction.
    pipelined: bool,
    /// A whole-database `--clean`: the backup's schemas dropped and restored in one
    /// transaction (pg_restore's own --clean cannot drop partitions' inherited constraints).
    clean_script: bool,
}

impl Mode {
    /// The mode of `request`, refused when its options contradict each other.
    fn new(request: &RestoreRequest, selection: Selection) -> Result<Mode> {
        let whole = selection.tables.is_empty()
            && selection.schemas.is_empty()
            && !request.data_only
            && !request.schema_only
            && !request.clean;
        let jobs = request.jobs.max(1);
        let pipelined = request.create && whole && jobs > 1;
        let mode = Mode {
            jobs,
            spooled: request.spool || pipelined,
            pipelined,
            clean_script: request.clean && selection.tables.is_empty(),
            selection,
        };
        if mode.spooled && mode.jobs == 1 {
            return Err(Error::Usage(
                "`--spool` is for a parallel restore: add `--jobs N` (N above 1), or drop `--spool`"
                    .into(),
            ));
        }
        if request.spool_dir.is_some() && !mode.spooled {
            return Err(Error::Usage(
                "`--spool-dir` is the folder of a spool file, which only `--spool` or `--create --jobs N` (N above 1, whole database) makes: drop it, or add `--spool`"
                    .into(),
            ));
        }
        if mode.clean_script && mode.spooled {
            return Err(Error::Usage(
                "`--clean` restores in one transaction, which `--spool` gives up: drop `--spool`, or restore into a new database with `--create`"
                    .into(),
            ));
        }
        Ok(mode)
    }

    /// Without `--spool`, a pipelined restore whose spool file cannot be made in its folder
    /// (a read-only temporary folder, say) restores in one stream instead, which needs no
    /// disk, and says so.
    fn or_streamed_without(mut self, request: &RestoreRequest) -> Mode {
        if !self.pipelined || request.spool {
            return self;
        }
        // Made and dropped as the restore would make it: its folder, its kind of file.
        let dir = spooled::Spool::folder(request.spool_dir.as_deref());
        if let Err(e) = Unnamed::on_disk(&dir) {
            tracing::warn!(
                folder = %dir.display(),
                error = %e,
                "no spool file can be made for a parallel restore: restoring in one stream, which needs none (give `--spool-dir DIR` for the faster one)"
            );
            self.pipelined = false;
            self.spooled = false;
        }
        self
    }
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
        spooled,
        pipelined,
        clean_script,
    } = *mode;
    let mut session = settings::choose(server, jobs);
    if pipelined {
        // Nobody sees the staging database before the restore ends: its commits need not
        // wait for the disk.
        session.insert("synchronous_commit".into(), "off".into());
    }
    let mut tool = ctx
        .tools
        .tool("pg_restore")
        .args(["--exit-on-error", "--no-password"])
        .env("PGOPTIONS", settings::pgoptions(&session));
    if request.clean && !clean_script {
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
    let toc = if selection.tables.is_empty() && selection.schemas.is_empty() && !clean_script {
        None
    } else {
        Some(toc::read_toc(ctx, &Archive::new(repo, manifest, identities.clone())).await?)
    };
    let list_file = match &toc {
        Some(toc) if !(selection.tables.is_empty() && selection.schemas.is_empty()) => {
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
            let file = Unnamed::memory("lifeboat-restore-list", list.as_bytes())
                .map_err(|e| Error::io("writing the restore list", e))?;
            tool = tool.arg(format!("--use-list={}", file.path().display()));
            Some(file)
        }
        _ => None,
    };

    let to_check = if request.schema_only || manifest.options.schema_only {
        Vec::new()
    } else {
        selection.restored_tables(manifest)
    };
    let mut archive = Archive::new(repo, manifest, identities);
    tracing::info!(backup = %manifest.id, target = target.redacted(), jobs, spooled, pipelined, settings = ?session, "restoring");
    archive.task = ctx
        .progress
        .start(&format!("restore {}", manifest.id), Some(manifest.raw_size));
    let spool_dir = request.spool_dir.as_deref();
    let mut loading = None;
    let restored = if pipelined {
        let options = settings::pgoptions(&session);
        pipelined::restore(
            ctx, &archive, target, tool, &options, jobs, spool_dir, &to_check,
        )
        .await
        .map(|(unchecked, loaded)| {
            loading = loaded;
            unchecked
        })
    } else if spooled {
        spooled::restore(ctx, &archive, target, tool, jobs, spool_dir, &to_check).await
    } else if clean_script || list_file.is_some() || request.schema_only {
        // pg_restore may stop reading before the end (it has its tables, or needs no data):
        // its script is committed only on the verdict of the whole archive.
        let prelude = if clean_script {
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
    } else {
        let tool = tool
            .arg(format!("--dbname={}", target.dbname()))
            .arg("--single-transaction");
        stream::into_pg_restore(ctx, &archive, target, tool, &to_check).await
    };
    drop(archive);
    // A stop kills the tools: what they then say is about the stop.
    let unchecked = restored.map_err(|e| match e {
        Error::Interrupted(_) => e,
        _ if ctx.cancel.is_cancelled() => Error::Interrupted("restore stopped".into()),
        _ => e,
    })?;
    let unchecked: Vec<&TableRows> = unchecked.iter().collect();
    check_counts(manifest, target, &unchecked).await?;
    let checked = CheckedRows {
        tables: to_check.len(),
        rows: to_check.iter().map(|t| t.rows).sum(),
        in_stream: to_check.len() - unchecked.len(),
        loading,
    };
    Ok((session, checked))
}

/// Restores the entries of `list` (a `pg_restore -L` list) in `sections` of dump `manifest`
/// into `target`, streamed, in one transaction: the scratch copies of `restore table
/// --from-dump`. With `verified`, it commits only once the whole archive is verified (pg_restore
/// stops reading after the listed entries); without, as soon as pg_restore is done (for
/// definitions a later `verified` call of the same archive vouches for).
pub(crate) async fn restore_listed(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    list: &str,
    sections: &[&str],
    verified: bool,
) -> Result<()> {
    let file = Unnamed::memory("lifeboat-restore-list", list.as_bytes())
        .map_err(|e| Error::io("writing the restore list", e))?;
    let mut tool = ctx
        .tools
        .tool("pg_restore")
        .args([
            "--exit-on-error",
            "--no-password",
            "--no-owner",
            "--no-privileges",
        ])
        .arg(format!("--use-list={}", file.path().display()));
    for section in sections {
        tool = tool.arg(format!("--section={section}"));
    }
    if !verified {
        let tool = tool
            .arg(format!("--dbname={}", target.dbname()))
            .arg("--single-transaction");
        return stream::into_pg_restore(ctx, archive, target, tool, &[])
            .await
            .map(drop);
    }
    // pg_restore stops reading once it has the listed entries: what it wrote commits only on
    // the verdict of the whole archive.
    let pgoptions = settings::pgoptions(&Default::default());
    stream::through_psql(ctx, archive, target, tool, "", &pgoptions, &[])
        .await
        .map(drop)
}

/// Counts the restored tables the archive could not count, and checks them against the
/// backup's.
async fn check_counts(
    manifest: &Manifest,
    target: &ConnInfo,
    to_check: &[&TableRows],
) -> Result<()> {
    if to_check.is_empty() {
        return Ok(());
    }
    let client = target.connect("target database").await?;
    let counts = count_tables(&client, to_check).await?;
    let found: Vec<(&TableRows, Option<u64>)> = to_check
        .iter()
        .zip(&counts)
        .map(|(table, (_, rows))| (*table, *rows))
        .collect();
    checked::compare(&manifest.id, &found)
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Closes a child's input and waits for it off the async threads.
pub(super) async fn finish_child(child: crate::process::ChildWriter) -> Result<()> {
    tokio::task::spawn_blocking(move || child.finish())
        .await
        .map_err(|e| Error::thread("restore", e))?
}

/// Counts restored bytes for the progress display while passing them on.
pub(super) struct ProgressWriter<W> {
    inner: W,
    task: Task,
}

impl<W> ProgressWriter<W> {
    pub(super) fn new(inner: W, task: &Task) -> Self {
        ProgressWriter {
            inner,
            task: task.clone(),
        }
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `--globals` and `--create`: the roles the server lacks, then the database, made as the
/// backup recorded them under its staging name ([`created`]), through the server's `postgres`
/// database.
async fn prepare_server(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    target: &ConnInfo,
    request: &RestoreRequest,
    identities: Option<Arc<Identities>>,
) -> Result<(Option<crate::postgres::globals::RolePlan>, Option<Staged>)> {
    use crate::postgres::globals;
    if !request.globals && !request.create {
        return Ok((None, None));
    }
    let info = manifest.globals.as_ref().ok_or_else(|| {
        Error::Missing(format!(
            "backup `{}` does not record roles or database properties (taken by an older lifeboat): create them by hand, then restore without `--globals`/`--create`",
            manifest.id
        ))
    })?;
    let server = target.with_dbname("postgres");
    let mut client = server.connect("the target server").await?;
    let mut plan = None;
    if request.globals {
        // Checked, decrypted and decompressed as the dump itself is.
        let expected = Expected {
            sha256: info.sha256.clone(),
            stored_size: info.stored_size,
            ..manifest.expected()
        };
        let sql = match pipeline::download(
            repo.storage(),
            &info.key,
            &expected,
            identities,
            Vec::new(),
            &ctx.cancel,
        )
        .await?
        {
            Delivered::Complete(sql) | Delivered::ConsumerClosed(sql) => sql,
        };
        let existing = globals::existing_roles(&client).await?;
        let roles = globals::plan_roles(
            &String::from_utf8_lossy(&sql),
            &existing,
            request.replace_roles,
        );
        globals::apply_roles(&mut client, &roles).await?;
        tracing::info!(
            "roles: created {}; kept as they were {}; replaced {}{}",
            list_or_none(&roles.created),
            list_or_none(&roles.kept),
            list_or_none(&roles.replaced),
            if info.role_passwords {
                ""
            } else {
                " (the backup was taken without superuser rights: no passwords; set them with ALTER ROLE)"
            }
        );
        plan = Some(roles);
    }
    let staged = if request.create {
        Some(Staged::create(client, &server, target, &info.database).await?)
    } else {
        None
    };
    Ok((plan, staged))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(request: RestoreRequest) -> Result<Mode> {
        let selection = Selection {
            tables: Vec::new(),
            schemas: Vec::new(),
        };
        Mode::new(&request, selection)
    }

    fn paths(request: RestoreRequest) -> (bool, bool) {
        let mode = mode(request).unwrap();
        (mode.spooled, mode.pipelined)
    }

    #[test]
    fn a_parallel_restore_into_a_new_database_is_pipelined_with_or_without_spool() {
        let create = |jobs, spool| RestoreRequest {
            create: true,
            jobs,
            spool,
            ..RestoreRequest::default()
        };
        assert_eq!(paths(create(4, false)), (true, true));
        assert_eq!(paths(create(4, true)), (true, true));
        // One job: one stream, no spool.
        assert_eq!(paths(create(1, false)), (false, false));
        assert!(mode(create(1, true)).is_err());
        // Into an existing database: one transaction unless --spool says otherwise.
        let existing = |spool| RestoreRequest {
            jobs: 4,
            spool,
            ..RestoreRequest::default()
        };
        assert_eq!(paths(existing(false)), (false, false));
        assert_eq!(paths(existing(true)), (true, false));
        // A part of the backup, or a clean, into a new database: one stream, as before.
        let part = RestoreRequest {
            schema_only: true,
            ..create(4, false)
        };
        assert_eq!(paths(part), (false, false));
        let clean = RestoreRequest {
            clean: true,
            ..create(4, false)
        };
        assert_eq!(paths(clean), (false, false));
        // A folder for a spool that is not made: refused, saying what makes one.
        let e = mode(RestoreRequest {
            spool_dir: Some("/var/tmp".into()),
            ..create(1, false)
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("`--spool-dir`") && e.contains("--spool"), "{e}");
    }

    #[test]
    fn without_a_folder_for_its_spool_a_new_database_is_restored_in_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let paths = |spool_dir: std::path::PathBuf, spool| {
            let request = RestoreRequest {
                create: true,
                jobs: 4,
                spool,
                spool_dir: Some(spool_dir),
                ..RestoreRequest::default()
            };
            let mode = mode(request.clone()).unwrap().or_streamed_without(&request);
            (mode.spooled, mode.pipelined)
        };
        assert_eq!(paths(dir.path().into(), false), (true, true));
        let missing = dir.path().join("no such folder");
        assert_eq!(paths(missing.clone(), false), (false, false));
        // Asked for with --spool: kept, and its failure to make the spool is the error.
        assert_eq!(paths(missing, true), (true, true));
    }
}
