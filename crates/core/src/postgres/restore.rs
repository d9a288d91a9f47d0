//! Logical restore: download, verify, decrypt, decompress, `pg_restore`, then check row counts.
//!
//! With one job the archive streams straight into `pg_restore --single-transaction`; the
//! pipeline withholds the last bytes until the stored hash is verified, so a damaged backup
//! rolls back instead of committing. With more jobs (parallel restore needs a seekable file)
//! the verified archive is spooled to a temporary file that is removed whatever happens.
//! Single tables are chosen precisely through a `pg_restore -L` list built from the archive's
//! table of contents, so `--table a.t` never also restores `b.t`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::{self, Identities};
use crate::error::{Error, Result};
use crate::manifest::{BackupKind, Manifest, TableRows};
use crate::pipeline::{self, Delivered, Expected};
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::postgres::dump::count_tables;
use crate::process::{Tool, Unnamed};
use crate::repository::{Repository, Selector};
use crate::Context;

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
    /// Folder for the spooled archive of a parallel restore.
    pub spool_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub database: String,
    pub target: String,
    pub tables_checked: usize,
    pub rows_checked: u64,
    pub spooled: bool,
    pub seconds: f64,
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
    let identities = identities_for(ctx, &manifest, request.identity.as_deref())?;
    let target = ConnInfo::new(&request.into, request.into_password.as_ref())?;
    // Reach the target before touching anything.
    let client = target.connect("target database").await?;
    drop(client);
    let jobs = request.jobs.max(1);
    // A whole-database `--clean` drops the backup's schemas and restores them in one
    // transaction (pg_restore's own --clean cannot drop partitions' inherited constraints).
    let clean_script = request.clean && selection.tables.is_empty();
    if clean_script && jobs > 1 {
        return Err(Error::invalid(
            "`--clean` restores in one transaction and cannot use `--jobs` above 1: drop `--jobs`, or restore into an empty database",
        ));
    }
    let mut tool = ctx
        .tools
        .tool("pg_restore")
        .args(["--exit-on-error", "--no-password"]);
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
        Some(read_toc(ctx, repo, &manifest, identities.clone()).await?)
    };
    let _list_file = match &toc {
        Some(toc) if !(selection.tables.is_empty() && selection.schemas.is_empty()) => {
            let list = if selection.tables.is_empty() {
                schema_list(toc, &selection.schemas, request.data_only)
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

    let expected = expected_of(&manifest);
    tracing::info!(backup = %manifest.id, target = target.redacted(), jobs, "restoring");
    let spooled = jobs > 1;
    ctx.progress
        .begin(&format!("restore {}", manifest.id), Some(manifest.raw_size));
    let restored = if spooled {
        restore_spooled(
            ctx, repo, &manifest, &expected, identities, &target, tool, jobs, request,
        )
        .await
    } else if clean_script {
        let prelude = clean_prelude(
            toc.as_deref().unwrap_or_default(),
            &selection.schemas,
            request.schema_only,
        );
        restore_through_psql(
            ctx, repo, &manifest, &expected, identities, &target, tool, &prelude,
        )
        .await
    } else {
        let tool = tool
            .arg(format!("--dbname={}", target.dbname()))
            .arg("--single-transaction");
        let (tool, _passfile) = target.apply_to(tool)?;
        let child = tool.spawn_writer()?;
        let delivered = pipeline::download(
            repo.storage(),
            &manifest.data,
            &expected,
            identities,
            ProgressWriter::new(child, ctx),
            &ctx.cancel,
        )
        .await;
        match delivered {
            Ok(Delivered::Complete(w) | Delivered::ConsumerClosed(w)) => {
                finish_child(w.inner).await
            }
            Err(e) => Err(e),
        }
    };
    ctx.progress.end();
    restored?;

    let to_check = if request.schema_only || manifest.options.schema_only {
        Vec::new()
    } else {
        selection.restored_tables(&manifest)
    };
    let client = target.connect("target database").await?;
    let counts = count_tables(&client, &to_check).await?;
    let mut problems = Vec::new();
    for (table, (name, found)) in to_check.iter().zip(&counts) {
        match found {
            Some(rows) if *rows == table.rows => {}
            Some(rows) => problems.push(format!(
                "`{name}` has {rows} rows, the backup has {}",
                table.rows
            )),
            None => problems.push(format!("`{name}` is missing")),
        }
    }
    if !problems.is_empty() {
        let shown = problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = problems.len().saturating_sub(5);
        return Err(Error::Mismatch {
            id: manifest.id.clone(),
            detail: if more > 0 {
                format!("{shown} and {more} more")
            } else {
                shown
            },
        });
    }
    Ok(RestoreReport {
        backup: manifest.id.clone(),
        database: manifest.database.clone(),
        target: target.redacted().to_string(),
        tables_checked: to_check.len(),
        rows_checked: to_check.iter().map(|t| t.rows).sum(),
        spooled,
        seconds: round_secs(begun.elapsed()),
    })
}

/// Parallel restore: the verified archive is spooled to a file (removed whatever happens),
/// then `pg_restore --jobs` reads it.
#[allow(clippy::too_many_arguments)]
async fn restore_spooled(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
    target: &ConnInfo,
    tool: Tool,
    jobs: u32,
    request: &RestoreRequest,
) -> Result<()> {
    let dir = request.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    // A full folder is named, with the size needed and how to choose another.
    let spool_error = |e: Error| {
        match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            Error::invalid(format!(
                "no space left in `{}` for the spooled archive of a parallel restore ({} needed): free space there, choose another folder with `--spool-dir DIR`, or restore with `--jobs 1`, which needs none",
                dir.display(),
                crate::postgres::dump::human_bytes(manifest.raw_size)
            ))
        }
        other => other,
    }
    };
    // Unnamed: a decrypted dump is never left in the folder, whatever becomes of lifeboat.
    let spool = Unnamed::on_disk(&dir).map_err(|e| {
        spool_error(Error::io(
            format!("creating a spool file in `{}`", dir.display()),
            e,
        ))
    })?;
    let file = spool
        .file()
        .try_clone()
        .map_err(|e| Error::io("opening the spool file", e))?;
    let delivered = pipeline::download(
        repo.storage(),
        &manifest.data,
        expected,
        identities,
        ProgressWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), ctx),
        &ctx.cancel,
    )
    .await
    .map_err(spool_error)?;
    match delivered {
        Delivered::Complete(mut w) => w
            .flush()
            .map_err(|e| spool_error(Error::io("writing the spool file", e)))?,
        Delivered::ConsumerClosed(_) => {
            return Err(Error::io(
                "writing the spool file",
                std::io::ErrorKind::BrokenPipe.into(),
            ))
        }
    }
    // A streamed archive lacks data offsets; without them every parallel worker reads the
    // file from the top to find its table.
    let indexed = spool
        .file()
        .try_clone()
        .map_err(|e| Error::io("opening the spool file", e))?;
    match tokio::task::spawn_blocking(move || {
        crate::postgres::archive::index_data_offsets(&indexed)
    })
    .await
    {
        Ok(Ok(n)) => tracing::debug!(entries = n, "indexed the spooled archive"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not index the spooled archive; the parallel restore will be slower")
        }
        Err(e) => tracing::warn!(error = %e, "could not index the spooled archive"),
    }
    let tool = tool
        .arg(format!("--dbname={}", target.dbname()))
        .arg(format!("--jobs={jobs}"))
        .arg(spool.path());
    let (tool, passfile) = target.apply_to(tool)?;
    let mut child = tool.spawn_reader()?;
    let killer = child.killer();
    let restoring = tokio::task::spawn_blocking(move || {
        std::io::copy(&mut child, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| crate::pipeline::from_io(e, "running pg_restore"))
    });
    let outcome = tokio::select! {
        done = restoring => done.map_err(|e| Error::invalid(format!("restore thread failed: {e}")))?,
        () = ctx.cancel.cancelled() => {
            killer.kill();
            Err(Error::Interrupted("restore stopped".into()))
        }
    };
    drop(passfile);
    drop(spool);
    outcome
}

/// A restore that first runs `prelude` (drops), all in one transaction: pg_restore writes the
/// SQL, lifeboat passes it to psql, and psql is allowed to commit only when the archive was
/// verified and pg_restore succeeded; otherwise psql is killed and everything rolls back.
#[allow(clippy::too_many_arguments)]
async fn restore_through_psql(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    expected: &Expected,
    identities: Option<Arc<Identities>>,
    target: &ConnInfo,
    pg_restore: Tool,
    prelude: &str,
) -> Result<()> {
    let (stdin, mut script) = pg_restore.arg("--file=-").spawn_filter()?;
    let psql = ctx
        .tools
        .tool("psql")
        .args([
            "-X",
            "-q",
            "--single-transaction",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(prelude)
        .args(["-f", "-"]);
    let (psql, passfile) = target.apply_to(psql)?;
    let mut psql = psql.spawn_writer()?;
    // The download's verdict: whether every stored byte was read and matched its hash. psql
    // may commit only then, and pg_restore can end before the download has said so (it has
    // what it needs once the held-back end is released), so the feeding side waits for it.
    let (verdict, verdict_in_thread) = std::sync::mpsc::channel::<bool>();
    let feeding = tokio::task::spawn_blocking(move || -> Result<()> {
        let copied = std::io::copy(&mut script, &mut psql);
        match copied {
            Ok(_) if verdict_in_thread.recv().unwrap_or(false) => psql.finish(),
            Ok(_) => {
                psql.kill();
                Err(Error::Interrupted(
                    "the restore was stopped before it could commit".into(),
                ))
            }
            Err(e) => {
                let said = psql.kill();
                match crate::pipeline::from_io(e, "restoring") {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
                        Err(Error::Tool {
                            tool: "psql".into(),
                            outcome: "stopped".into(),
                            stderr: said,
                        })
                    }
                    other => Err(other),
                }
            }
        }
    });
    let delivered = pipeline::download(
        repo.storage(),
        &manifest.data,
        expected,
        identities,
        ProgressWriter::new(stdin, ctx),
        &ctx.cancel,
    )
    .await;
    let delivered = match delivered {
        Ok(Delivered::Complete(stdin)) => {
            drop(stdin);
            let _ = verdict.send(true);
            Ok(())
        }
        Ok(Delivered::ConsumerClosed(stdin)) => {
            drop(stdin);
            let _ = verdict.send(false);
            Ok(())
        }
        Err(e) => {
            let _ = verdict.send(false);
            Err(e)
        }
    };
    let fed = feeding
        .await
        .map_err(|e| Error::invalid(format!("restore thread failed: {e}")))?;
    drop(passfile);
    delivered.and(fed)
}

/// SQL run before a whole-database `--clean` restore: drop the schemas the backup holds (or
/// the chosen ones), recreate `public` as PostgreSQL makes it, remove large objects.
pub fn clean_prelude(toc: &str, only: &[String], schema_only: bool) -> String {
    let archived: Vec<String> = toc_schemas(toc);
    let mut schemas: Vec<String> = if only.is_empty() {
        let mut all = archived.clone();
        if !all.iter().any(|s| s == "public") {
            all.push("public".into());
        }
        all
    } else {
        only.to_vec()
    };
    schemas.sort();
    schemas.dedup();
    let mut sql = String::new();
    for schema in &schemas {
        sql.push_str(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE;\n",
            quote_ident(schema)
        ));
    }
    if schemas.iter().any(|s| s == "public") && !archived.iter().any(|s| s == "public") {
        sql.push_str("CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n");
        sql.push_str("GRANT USAGE ON SCHEMA public TO PUBLIC;\n");
        sql.push_str("COMMENT ON SCHEMA public IS 'standard public schema';\n");
    }
    if only.is_empty() && !schema_only {
        sql.push_str("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata;\n");
    }
    sql
}

/// The schemas an archive creates (`SCHEMA - name owner` entries).
fn toc_schemas(toc: &str) -> Vec<String> {
    toc_entries(toc)
        .filter_map(|(_, description)| {
            let rest = description.strip_prefix("SCHEMA - ")?;
            Some(
                rest.rsplit_once(' ')
                    .map_or(rest, |(name, _owner)| name)
                    .to_string(),
            )
        })
        .collect()
}

/// `(line, description)` of every entry of a `pg_restore --list` output.
fn toc_entries(toc: &str) -> impl Iterator<Item = (&str, &str)> {
    toc.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|line| {
            // "<id>; <catalog oid> <object oid> <TYPE> <schema> <name> <owner>"
            let (_, rest) = line.split_once("; ")?;
            let mut parts = rest.splitn(3, ' ');
            let (Some(_), Some(_), Some(description)) = (parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            Some((line, description))
        })
}

/// Entry types of pg_dump archives, longest first where one is a prefix of another.
const TOC_TYPES: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "PUBLICATION TABLES IN SCHEMA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH TEMPLATE",
    "TEXT SEARCH PARSER",
    "FOREIGN DATA WRAPPER",
    "PROCEDURAL LANGUAGE",
    "DATABASE PROPERTIES",
    "SEQUENCE OWNED BY",
    "PUBLICATION TABLE",
    "SUBSCRIPTION TABLE",
    "MATERIALIZED VIEW",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "OPERATOR CLASS",
    "SECURITY LABEL",
    "FOREIGN SERVER",
    "FOREIGN TABLE",
    "BLOB METADATA",
    "ACCESS METHOD",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "ROW SECURITY",
    "DEFAULT ACL",
    "SHELL TYPE",
    "TABLE DATA",
    "CONSTRAINT",
    "CONVERSION",
    "AGGREGATE",
    "COLLATION",
    "EXTENSION",
    "PROCEDURE",
    "STATISTICS",
    "TRANSFORM",
    "FUNCTION",
    "OPERATOR",
    "SEQUENCE",
    "DATABASE",
    "ENCODING",
    "TRIGGER",
    "DEFAULT",
    "COMMENT",
    "POLICY",
    "SCHEMA",
    "SERVER",
    "DOMAIN",
    "BLOBS",
    "INDEX",
    "TABLE",
    "RULE",
    "TYPE",
    "VIEW",
    "CAST",
    "BLOB",
    "ACL",
];

/// The schema an entry's description names, given its type.
fn entry_schema(description: &str) -> Option<&str> {
    let kind = TOC_TYPES.iter().find(|t| {
        description.starts_with(**t) && description.as_bytes().get(t.len()) == Some(&b' ')
    })?;
    let rest = &description[kind.len() + 1..];
    rest.split(' ').next()
}

/// A `pg_restore -L` list of everything in the given schemas, with the schemas themselves.
pub fn schema_list(toc: &str, schemas: &[String], data_only: bool) -> String {
    let mut out = String::new();
    for (line, description) in toc_entries(toc) {
        let creates_schema = !data_only
            && schemas.iter().any(|s| {
                let head = format!("SCHEMA - {s}");
                description == head || description.starts_with(&format!("{head} "))
            });
        let inside = entry_schema(description).is_some_and(|s| schemas.iter().any(|w| w == s));
        if creates_schema || inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn expected_of(manifest: &Manifest) -> Expected {
    Expected {
        backup_id: manifest.id.clone(),
        sha256: manifest.sha256.clone(),
        stored_size: manifest.stored_size,
        encrypted: manifest.is_encrypted(),
    }
}

/// Loads the identities an encrypted backup needs, before anything is changed.
pub fn identities_for(
    ctx: &Context,
    manifest: &Manifest,
    explicit: Option<&Path>,
) -> Result<Option<Arc<Identities>>> {
    if !manifest.is_encrypted() {
        return Ok(None);
    }
    let configured = ctx
        .config
        .encryption
        .as_ref()
        .and_then(|e| e.identity_file.as_deref())
        .map(PathBuf::from);
    let path = explicit
        .map(Path::to_path_buf)
        .or(configured)
        .ok_or_else(|| {
            Error::Crypto(format!(
            "backup `{}` is encrypted: pass `--identity FILE` or set `encryption.identity_file`",
            manifest.id
        ))
        })?;
    Ok(Some(Arc::new(crypto::load_identities(&path)?)))
}

/// What part of a backup a restore takes, checked against the manifest.
struct Selection {
    tables: Vec<(String, String)>,
    schemas: Vec<String>,
}

impl Selection {
    fn new(manifest: &Manifest, request: &RestoreRequest) -> Result<Selection> {
        if request.data_only && request.schema_only {
            return Err(Error::invalid(
                "`--data-only` and `--schema-only` exclude each other",
            ));
        }
        if !request.tables.is_empty() && !request.schemas.is_empty() {
            return Err(Error::invalid(
                "give either `--table` or `--schema`, not both: `--table SCHEMA.TABLE` already names the schema",
            ));
        }
        if request.data_only && manifest.options.schema_only {
            return Err(Error::invalid(format!(
                "backup `{}` is schema-only: it has no data to restore with `--data-only`",
                manifest.id
            )));
        }
        let mut tables = Vec::new();
        for qualified in &request.tables {
            let (schema, name) = qualified.split_once('.').ok_or_else(|| {
                Error::invalid(format!(
                    "table `{qualified}` must be given as `SCHEMA.TABLE`"
                ))
            })?;
            let known = manifest
                .tables
                .iter()
                .any(|t| t.schema == schema && t.name == name);
            if !known && !manifest.options.schema_only {
                return Err(Error::invalid(format!(
                    "table `{qualified}` is not in backup `{}` (names are case-sensitive): `lifeboat show {}` lists its tables",
                    manifest.id, manifest.id
                )));
            }
            tables.push((schema.to_string(), name.to_string()));
        }
        for schema in &request.schemas {
            let known = manifest.tables.iter().any(|t| &t.schema == schema);
            if !known && !manifest.options.schema_only {
                return Err(Error::invalid(format!(
                    "schema `{schema}` has no table in backup `{}` (names are case-sensitive)",
                    manifest.id
                )));
            }
        }
        Ok(Selection {
            tables,
            schemas: request.schemas.clone(),
        })
    }

    fn restored_tables<'m>(&self, manifest: &'m Manifest) -> Vec<&'m TableRows> {
        manifest
            .tables
            .iter()
            .filter(|t| {
                (self.tables.is_empty()
                    || self
                        .tables
                        .iter()
                        .any(|(s, n)| &t.schema == s && &t.name == n))
                    && (self.schemas.is_empty() || self.schemas.contains(&t.schema))
            })
            .collect()
    }
}

/// Reads the archive's table of contents (`pg_restore --list`), which sits at its start.
async fn read_toc(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    identities: Option<Arc<Identities>>,
) -> Result<String> {
    let out = Unnamed::memory("lifeboat-toc", b"")
        .map_err(|e| Error::io("creating a file for the table of contents", e))?;
    let tool = Tool::new(ctx.tools.path("pg_restore"))
        .arg("--list")
        .arg(format!("--file={}", out.path().display()));
    let child = tool.spawn_writer()?;
    let delivered = pipeline::download(
        repo.storage(),
        &manifest.data,
        &expected_of(manifest),
        identities,
        child,
        &ctx.cancel,
    )
    .await?;
    match delivered {
        Delivered::Complete(child) | Delivered::ConsumerClosed(child) => {
            finish_child(child).await?
        }
    }
    out.read_to_string()
        .map_err(|e| Error::io("reading the table of contents", e))
}

/// Closes a child's input and waits for it off the async threads.
async fn finish_child(child: crate::process::ChildWriter) -> Result<()> {
    tokio::task::spawn_blocking(move || child.finish())
        .await
        .map_err(|e| Error::invalid(format!("restore thread failed: {e}")))?
}

/// Keeps the TOC lines of the wanted tables' definition and data (a `pg_restore -L` list).
pub fn use_list(
    toc: &str,
    tables: &[(String, String)],
    data_only: bool,
    schema_only: bool,
) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    if !data_only {
        kinds.push("TABLE");
    }
    if !schema_only {
        kinds.push("TABLE DATA");
    }
    let mut out = String::new();
    for (line, description) in toc_entries(toc) {
        let wanted = kinds.iter().any(|kind| {
            tables.iter().any(|(schema, name)| {
                let head = format!("{kind} {schema} {name}");
                description == head || description.starts_with(&format!("{head} "))
            })
        });
        if wanted {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Counts restored bytes for the progress display while passing them on.
struct ProgressWriter<W> {
    inner: W,
    progress: Arc<dyn crate::progress::Progress>,
}

impl<W> ProgressWriter<W> {
    fn new(inner: W, ctx: &Context) -> Self {
        ProgressWriter {
            inner,
            progress: Arc::clone(&ctx.progress),
        }
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOC: &str = ";\n; Archive created at 2026-11-24\n;\n\
        215; 1259 16386 TABLE public t postgres\n\
        216; 1259 16390 TABLE core t postgres\n\
        217; 1259 16394 TABLE core t_other postgres\n\
        3345; 0 16386 TABLE DATA public t postgres\n\
        3346; 0 16390 TABLE DATA core t postgres\n\
        3347; 0 16394 TABLE DATA core t_other postgres\n\
        3200; 2606 16400 CONSTRAINT core t t_pkey postgres\n";

    #[test]
    fn use_list_is_exact() {
        let wanted = vec![("core".to_string(), "t".to_string())];
        let list = use_list(TOC, &wanted, false, false);
        assert_eq!(
            list,
            "216; 1259 16390 TABLE core t postgres\n3346; 0 16390 TABLE DATA core t postgres\n"
        );
        let data = use_list(TOC, &wanted, true, false);
        assert_eq!(data, "3346; 0 16390 TABLE DATA core t postgres\n");
        let schema = use_list(TOC, &wanted, false, true);
        assert_eq!(schema, "216; 1259 16390 TABLE core t postgres\n");
    }

    #[test]
    fn schema_list_takes_the_schema_and_its_objects() {
        let toc = "6; 2615 16384 SCHEMA - core lifeboat\n7; 2615 16385 SCHEMA - users lifeboat\n\
            854; 1247 16389 TYPE core comic_status lifeboat\n\
            220; 1259 16400 TABLE users account lifeboat\n\
            3424; 0 16412 TABLE DATA core comic lifeboat\n\
            3444; 0 0 SEQUENCE OWNED BY core Chapter_id_seq lifeboat\n\
            3433; 2613 16489 BLOB - 16489 lifeboat\n";
        let list = schema_list(toc, &["core".to_string()], false);
        assert_eq!(list.lines().count(), 4, "{list}");
        assert!(list.contains("SCHEMA - core") && list.contains("SEQUENCE OWNED BY core"));
        assert!(!list.contains("users") && !list.contains("BLOB"));
        let data = schema_list(toc, &["core".to_string()], true);
        assert!(!data.contains("SCHEMA - core"));
        assert_eq!(toc_schemas(toc), vec!["core", "users"]);
        let prelude = clean_prelude(toc, &[], false);
        assert!(prelude.contains("DROP SCHEMA IF EXISTS \"core\" CASCADE;"));
        assert!(prelude.contains("DROP SCHEMA IF EXISTS \"public\" CASCADE;"));
        assert!(prelude.contains("CREATE SCHEMA public"));
        assert!(prelude.contains("lo_unlink"));
        let only = clean_prelude(toc, &["users".to_string()], false);
        assert_eq!(only, "DROP SCHEMA IF EXISTS \"users\" CASCADE;\n");
    }
}
