//! `restore table`: one or more tables as they were at a moment, put back beside the live
//! ones under new names, never touching them.
//!
//! The moment is recovered on throwaway parts: the newest base backup before it, replayed
//! with the archived WAL up to it, on a server in a temporary folder ([`source`]); or, with
//! `--from-dump` (no WAL covers the moment), the newest dump before it in a scratch cluster.
//! There the tables are cut loose from what reaches beyond them and renamed, then dumped and
//! loaded into the live database in one transaction, rows counted as they pass ([`copy`]).
//! Then the copy is compared with the live table by primary key, and the SQL that does it is
//! printed ([`names`]). `--dry-run` says what would be used and how long it should take
//! ([`plan`]). The throwaway parts are removed on success, failure and stop requests.

mod copy;
pub mod names;
mod plan;
mod source;
pub(crate) use source::backup_role;

use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::postgres::pitr;
use crate::repository::Repository;
use crate::Context;

pub use names::{Compare, Naming, Qualified};
pub use plan::{plan_table, TablePlan, WalRange};

#[derive(Debug, Clone)]
pub struct TableRequest {
    pub tables: Vec<Qualified>,
    pub as_of: Timestamp,
    /// Recover to just before this transaction commits (its id and commit position; `as_of`
    /// is then its commit time) instead of to `as_of`.
    pub before_xid: Option<(u32, u64)>,
    /// The live database, as a URL.
    pub into: String,
    pub into_password: Option<Secret>,
    /// The configured database whose backups are used (else the only one that has some).
    pub database: Option<String>,
    pub naming: Naming,
    /// Load the rows into an existing table (named by `naming`).
    pub data_only: bool,
    /// From the newest dump before the moment instead of base backup and WAL.
    pub from_dump: bool,
    pub identity: Option<PathBuf>,
    /// Where the throwaway server's folder goes (else `$TMPDIR`).
    pub work_dir: Option<PathBuf>,
}

impl TableRequest {
    /// Where the recovery stops.
    pub fn target(&self) -> pitr::Target {
        match self.before_xid {
            Some((xid, lsn)) => pitr::Target::BeforeXid(xid, lsn),
            None => pitr::Target::Time(self.as_of),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TableReport {
    pub as_of: String,
    /// `wal` (base backup and archived WAL) or `dump`.
    pub from: &'static str,
    pub backup: String,
    /// The last transaction replayed (a recovery), or when the dump's snapshot was taken.
    pub data_as_of: Option<String>,
    /// How much older than the moment asked for the data is (a dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<i64>,
    pub tables: Vec<RecoveredTable>,
    /// What the copies are made without.
    pub left_out: &'static str,
    pub recovery_seconds: f64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RecoveredTable {
    pub table: String,
    pub restored_as: String,
    pub rows: u64,
    pub partitions: usize,
    pub primary_key: Vec<String>,
    /// Rows in the copy whose key the live table no longer has.
    pub missing_now: Option<u64>,
    /// Rows whose key both have, with different contents.
    pub changed: Option<u64>,
    /// Rows the live table has and the copy has not.
    pub added_since: Option<u64>,
    pub compare: Compare,
}

const LEFT_OUT: &str =
    "foreign keys to other tables, triggers, row security policies, rules, grants and ownership";

/// The moment as a name suffix: `20261201_140400`.
fn stamp(as_of: Timestamp) -> String {
    as_of.strftime("%Y%m%d_%H%M%S").to_string()
}

/// Checks `request` against the live database: each copy's name is free (or, with
/// `--data-only`, an existing table other than the live one).
async fn check_targets(request: &TableRequest, live: &ConnInfo) -> Result<Vec<Qualified>> {
    if request.tables.is_empty() {
        return Err(Error::Usage(
            "name at least one table as `SCHEMA.TABLE`".into(),
        ));
    }
    if matches!(request.naming, Naming::As(_)) && request.tables.len() > 1 {
        return Err(Error::Usage(
            "`--as` names one copy: restore one table at a time with it, or use `--schema`".into(),
        ));
    }
    let targets: Vec<Qualified> = request
        .tables
        .iter()
        .map(|t| request.naming.target(t, &stamp(request.as_of)))
        .collect();
    let client = live.connect("the live database").await?;
    for (table, target) in request.tables.iter().zip(&targets) {
        if table == target {
            return Err(Error::Usage(format!(
                "the copy of `{table}` would be the live table itself: name another with `--as` or `--schema` (lifeboat never writes into the live table)"
            )));
        }
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&target.sql()])
            .await
            .map_err(|e| Error::postgres("checking the copy's name", &e))?
            .get(0);
        match (exists, request.data_only) {
            (true, false) => {
                return Err(Error::Usage(format!(
                    "`{target}` already exists in `{}`: choose another name with `--as SCHEMA.NAME` or `--schema SCHEMA`",
                    live.redacted()
                )))
            }
            (false, true) => {
                return Err(Error::Missing(format!(
                    "`{target}` does not exist in `{}`: `--data-only` loads into an existing table (`CREATE TABLE {} (LIKE {})` makes one), or drop `--data-only`",
                    live.redacted(),
                    target.sql(),
                    table.sql()
                )))
            }
            _ => {}
        }
    }
    Ok(targets)
}

/// Recovers `request.tables` as of `request.as_of` beside the live ones.
pub async fn restore_table(
    ctx: &Context,
    repo: &Repository,
    request: &TableRequest,
) -> Result<TableReport> {
    let begun = Instant::now();
    let live = ConnInfo::new(&request.into, request.into_password.as_ref())?;
    let targets = check_targets(request, &live).await?;
    let plan = plan_table(ctx, repo, request).await?;
    let backup = plan.manifest();
    let moment = match plan.wal {
        Some(_) => format!(
            "at {} (base backup `{}` and the archived WAL)",
            request.as_of, backup.id
        ),
        None => format!("in dump `{}` (taken {})", backup.id, backup.started_at),
    };
    tracing::info!(backup = %backup.id, as_of = %request.as_of, "recovering {} table(s) on a throwaway server", request.tables.len());
    let source = match plan.wal {
        Some(_) => source::recovered(ctx, repo, request, backup, &plan.dbname).await?,
        None => source::from_dump(ctx, repo, request, backup, &request.tables).await?,
    };
    let recovery_seconds = round(source.seconds);
    let mut client = source.connect().await?;
    let mut found = Vec::new();
    let mut dumped = Vec::new();
    for (table, target) in request.tables.iter().zip(&targets) {
        let table = copy::find(&client, table, &moment).await?;
        let names = copy::prepare(
            &mut client,
            &table,
            target,
            &request.naming,
            request.data_only,
        )
        .await?;
        dumped.extend(names);
        found.push(table);
    }
    drop(client);
    // Only the schemas the live database lacks: creating one needs a privilege on the database
    // that the live table's owner may not have.
    let mut schemas: Vec<&str> = targets.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    let mut prelude = Vec::new();
    if !request.data_only {
        let client = live.connect("the live database").await?;
        for schema in schemas {
            let exists: bool = client
                .query_one(
                    "SELECT to_regnamespace($1) IS NOT NULL",
                    &[&quote_ident(schema)],
                )
                .await
                .map_err(|e| Error::postgres("checking the copy's schema", &e))?
                .get(0);
            if !exists {
                prelude.push(format!(
                    "CREATE SCHEMA IF NOT EXISTS {};",
                    quote_ident(schema)
                ));
            }
        }
    }
    let prelude = prelude.join("\n");
    tracing::info!(
        target = live.redacted(),
        "loading the copies in one transaction"
    );
    let counted = copy::load(ctx, &source, &dumped, request.data_only, &live, &prelude).await?;
    let reached = source.reached.clone();
    drop(source);

    let client = live.connect("the live database").await?;
    let mut tables = Vec::new();
    let mut dumped = dumped.iter();
    for (table, target) in found.iter().zip(&targets) {
        // Rows by the names COPY used: the copy's own, or (data only) the target's.
        let own: Vec<&Qualified> = dumped.by_ref().take(table.partitions() + 1).collect();
        let rows = if request.data_only {
            counted.get(target).copied().unwrap_or(0)
        } else {
            own.iter()
                .map(|q| counted.get(*q).copied().unwrap_or(0))
                .sum()
        };
        let compare = names::compare(&table.table, target, &table.key, &table.columns);
        let live_exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.table.sql()])
            .await
            .map_err(|e| Error::postgres("checking the live table", &e))?
            .get(0);
        let count = |query: Option<String>| {
            let client = &client;
            async move {
                let query = query?;
                match client.query_one(&names::count_of(&query), &[]).await {
                    Ok(row) => Some(row.get::<_, i64>(0) as u64),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not compare the copy with the live table");
                        None
                    }
                }
            }
        };
        let (missing_now, changed, added_since) = if live_exists {
            (
                count(Some(compare.missing_now.clone())).await,
                count(compare.changed.clone()).await,
                count(Some(compare.added_since.clone())).await,
            )
        } else {
            (Some(rows), None, None)
        };
        tables.push(RecoveredTable {
            table: table.table.to_string(),
            restored_as: target.to_string(),
            rows,
            partitions: table.partitions(),
            primary_key: table.key.clone(),
            missing_now,
            changed,
            added_since,
            compare,
        });
    }
    Ok(TableReport {
        as_of: request.as_of.to_string(),
        from: if plan.wal.is_some() { "wal" } else { "dump" },
        backup: backup.id.clone(),
        data_as_of: match plan.wal {
            Some(_) => reached,
            None => Some(backup.started_at.to_string()),
        },
        data_age_seconds: plan.data_age_seconds,
        tables,
        left_out: LEFT_OUT,
        recovery_seconds,
        seconds: round(begun.elapsed().as_secs_f64()),
    })
}

fn round(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}
