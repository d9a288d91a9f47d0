//! Logical backup: `pg_dump` in custom format, streamed through the pipeline into the
//! repository, with exact row counts: those of the archive itself.
//!
//! Sequence: open a REPEATABLE READ transaction and export its snapshot; start pg_dump on that
//! snapshot; while the dump streams, count every table's rows in the archive as it passes (its
//! `COPY` lines; [`crate::postgres::archive::count_alongside`]), without reading the tables a
//! second time, and take and store the cluster's roles beside it; a table the archive has no
//! data for is counted in the same snapshot; then write the manifest (the commit). Any
//! failure before the manifest removes what was written, so a failed or interrupted backup
//! never shows up in `list`.

use jiff::Timestamp;

use crate::backup::{About, DataPlan};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::pipeline;
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::postgres::globals;
use crate::repository::manifest::{self, BackupKind, DumpOptions, Manifest, TableRows};
use crate::repository::Repository;
use crate::units::human_bytes;
use crate::Context;

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpRequest {
    pub schema_only: bool,
    pub schemas: Vec<String>,
}

pub async fn backup_db(
    ctx: &Context,
    repo: &Repository,
    name: &str,
    pg: &PostgresConfig,
    request: &DumpRequest,
) -> Result<Manifest> {
    let ctx = &ctx.for_server(pg);
    let started_at = Timestamp::now();
    let id = manifest::new_backup_id(started_at);
    let conn = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
    // `pg_dump --version` runs while the connection opens; the first failure is the answer.
    let version = async {
        let tools = ctx.tools.clone();
        tokio::task::spawn_blocking(move || tools.version("pg_dump"))
            .await
            .map_err(|e| Error::thread("pg_dump --version", e))?
    };
    let what = format!("database `{name}`");
    let (pg_dump_version, mut client) = tokio::try_join!(version, conn.connect(&what))?;
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| Error::postgres("starting the snapshot transaction", &e))?;
    // The transaction waits, idle, while pg_dump reads from its snapshot: a server that ends
    // idle transactions (`idle_in_transaction_session_timeout`) must not end it.
    txn.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        .await
        .map_err(|e| Error::postgres("starting the snapshot transaction", &e))?;
    let row = txn
        .query_one(
            "SELECT pg_export_snapshot(), current_setting('server_version'), current_database(), \
             pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("exporting a snapshot", &e))?;
    let snapshot: String = row.get(0);
    let server_version: String = row.get(1);
    let dbname: String = row.get(2);
    let db_size: i64 = row.get(3);
    check_versions(&server_version, &pg_dump_version, &ctx.tools)?;
    let properties = globals::read_properties(&txn).await?;
    let tables = list_tables(&txn, &request.schemas).await?;
    if !request.schemas.is_empty() {
        check_schemas_exist(&txn, &request.schemas).await?;
    }

    let mut tool = ctx
        .tools
        .tool("pg_dump")
        .args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--snapshot={snapshot}"));
    if request.schema_only {
        tool = tool.arg("--schema-only");
    }
    for schema in &request.schemas {
        tool = tool.arg(format!("--schema={}", quote_ident(schema)));
    }
    let (tool, _passfile) = conn.apply_to(tool)?;
    let source = tool.spawn_reader()?;
    let killer = source.killer();
    let (source, stream_counts) = crate::postgres::archive::count_alongside(source);

    let plan = DataPlan::new(ctx, BackupKind::Db, &id, db_size.max(0) as u64, 0);
    tracing::info!(backup = %id, database = name, "dumping `{dbname}` ({} estimated)", human_bytes(db_size.max(0) as u64));
    let task = ctx.progress.start(&format!("dump {name}"), None);
    let stop = ctx.cancel.child_token();
    let upload = pipeline::upload(
        repo.storage(),
        plan.target(),
        source,
        move || killer.kill(),
        plan.seal.clone(),
        task,
        &stop,
    );
    // The roles, for a restore onto a server that has none of them: the cluster's, outside
    // any database's snapshot, so taken and stored while the dump streams rather than after
    // it. A failure there stops the dump.
    let roles = async {
        let (roles, role_passwords) = globals::dump_roles(&ctx.tools, &conn, &txn).await?;
        store_globals(repo, &plan, &id, &roles, role_passwords, properties).await
    };
    let roles = async { roles.await.inspect_err(|_| stop.cancel()) };
    let (uploaded, globals) = tokio::join!(upload, roles);
    let counted = match &uploaded {
        Err(_) => Ok(Vec::new()),
        Ok(_) if request.schema_only => Ok(Vec::new()),
        Ok(_) => {
            // The whole archive went by: the counting thread has seen its end.
            let stream = tokio::task::spawn_blocking(move || stream_counts.join())
                .await
                .map_err(|e| Error::thread("row counting", e))?
                .map_err(|_| Error::Internal("the row counting thread panicked".into()))?;
            rows_of(&txn, &tables, stream, &stop).await
        }
    };
    let outcome = async {
        // A failure of the roles stopped the dump: it is the cause, the dump's error its echo.
        let globals = globals?;
        let (stats, tables) = match (uploaded, counted) {
            (Ok(stats), Ok(tables)) => (stats, tables),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        txn.commit()
            .await
            .map_err(|e| Error::postgres("closing the snapshot transaction", &e))?;
        let about = About {
            id: id.clone(),
            kind: BackupKind::Db,
            database: name.to_string(),
            dbname,
            options: DumpOptions {
                schema_only: request.schema_only,
                schemas: request.schemas.clone(),
            },
            server_version,
            client_version: pg_dump_version,
            started_at,
            tables,
            base: None,
        };
        let mut manifest = plan.manifest(about, stats);
        manifest.globals = Some(globals);
        Ok(manifest)
    }
    .await;
    // The data and the roles beside it go together, or neither stays.
    let globals_key = crate::repository::layout::globals(&id, plan.encryption.is_some());
    let outcome = repo
        .finish_backup(&[&plan.data, &globals_key], outcome, &ctx.cancel)
        .await;
    drop(client);
    outcome
}

/// Seals the roles' SQL like the dump and stores it beside it.
async fn store_globals(
    repo: &Repository,
    plan: &DataPlan,
    id: &str,
    roles: &[u8],
    role_passwords: bool,
    database: globals::DbProperties,
) -> Result<globals::GlobalsInfo> {
    let sealed = crate::pipeline::seal_bytes(roles, &plan.seal)?;
    let key = crate::repository::layout::globals(id, plan.encryption.is_some());
    let info = globals::GlobalsInfo {
        key: key.clone(),
        stored_size: sealed.len() as u64,
        sha256: crate::pipeline::sha256_hex(&sealed),
        role_passwords,
        database,
    };
    repo.storage().write(&key, sealed).await?;
    Ok(info)
}

/// pg_dump refuses servers newer than itself; say so before starting.
fn check_versions(
    server: &str,
    pg_dump: &str,
    tools: &crate::process::tools::PgTools,
) -> Result<()> {
    use crate::process::tools::major;
    if major(pg_dump) < major(server) {
        return Err(Error::ToolVersion {
            tool: tools.path("pg_dump").display().to_string(),
            version: pg_dump.to_string(),
            server: server.to_string(),
        });
    }
    Ok(())
}

/// The tables whose data pg_dump writes: ordinary tables (including partitions), not
/// extension members, in the chosen schemas.
async fn list_tables(
    txn: &tokio_postgres::Transaction<'_>,
    schemas: &[String],
) -> Result<Vec<(String, String)>> {
    let rows = txn
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
               AND (cardinality($1::text[]) = 0 OR n.nspname = ANY($1::text[])) \
             ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(|e| Error::postgres("listing tables", &e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn check_schemas_exist(
    txn: &tokio_postgres::Transaction<'_>,
    schemas: &[String],
) -> Result<()> {
    for schema in schemas {
        let found = txn
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
            .await
            .map_err(|e| Error::postgres("checking schemas", &e))?;
        if found.is_none() {
            return Err(Error::Missing(format!(
                "schema `{schema}` does not exist in the database (names are case-sensitive)"
            )));
        }
    }
    Ok(())
}

/// Every listed table's rows: as counted in the archive, else (a table the archive holds no
/// data for, or an archive the counter could not read) counted in the snapshot.
async fn rows_of(
    txn: &tokio_postgres::Transaction<'_>,
    tables: &[(String, String)],
    stream: std::io::Result<Option<std::collections::HashMap<(String, String), u64>>>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<TableRows>> {
    let stream = match stream {
        Ok(Some(counts)) => counts,
        Ok(None) => Default::default(),
        Err(e) => {
            tracing::warn!(error = %e, "could not count rows in the archive; counting in the snapshot");
            Default::default()
        }
    };
    let missing: Vec<(String, String)> = tables
        .iter()
        .filter(|t| !stream.contains_key(*t))
        .cloned()
        .collect();
    let counted_again = count_rows(txn, &missing, cancel).await?;
    Ok(tables
        .iter()
        .map(|(schema, name)| TableRows {
            schema: schema.clone(),
            name: name.clone(),
            rows: stream
                .get(&(schema.clone(), name.clone()))
                .copied()
                .unwrap_or_else(|| {
                    counted_again
                        .iter()
                        .find(|t| &t.schema == schema && &t.name == name)
                        .map_or(0, |t| t.rows)
                }),
        })
        .collect())
}

async fn count_rows(
    txn: &tokio_postgres::Transaction<'_>,
    tables: &[(String, String)],
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<TableRows>> {
    let mut counted = Vec::with_capacity(tables.len());
    for (schema, name) in tables {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted("row counting stopped".into()));
        }
        let sql = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote_ident(schema),
            quote_ident(name)
        );
        let row = tokio::select! {
            row = txn.query_one(&sql, &[]) => row
                .map_err(|e| Error::postgres(format!("counting rows of `{schema}.{name}`"), &e))?,
            () = cancel.cancelled() => return Err(Error::Interrupted("row counting stopped".into())),
        };
        let rows: i64 = row.get(0);
        counted.push(TableRows {
            schema: schema.clone(),
            name: name.clone(),
            rows: rows as u64,
        });
    }
    Ok(counted)
}
