//! The copy itself: on the server that holds the tables as they were, each table (with its
//! partitions) is found, cut loose from what reaches beyond it (its parent, foreign keys to
//! other tables, triggers, policies, rules) and given its new name, companions included; then
//! `pg_dump` of just those tables streams through `psql` into the live database, in one
//! transaction, the `COPY` rows counted on the way.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use tokio_postgres::{Client, GenericClient};

use super::names::{companion, CopyCounter, Naming, Qualified};
use super::source::Source;
use crate::error::{Error, Result};
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::postgres::restore::script;
use crate::Context;

/// A table found on the source, with its partitions.
#[derive(Debug)]
pub(super) struct Found {
    pub table: Qualified,
    oid: u32,
    /// The table and its partitions (all levels), root first.
    rels: Vec<(u32, Qualified)>,
    /// The primary key's columns, in order.
    pub key: Vec<String>,
    /// Columns that can be written (not generated), in order.
    pub columns: Vec<String>,
}

impl Found {
    pub fn partitions(&self) -> usize {
        self.rels.len() - 1
    }
}

async fn strings(
    client: &impl GenericClient,
    sql: &str,
    oid: u32,
    what: &str,
) -> Result<Vec<String>> {
    Ok(client
        .query(sql, &[&oid])
        .await
        .map_err(|e| Error::postgres(what, &e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Finds `table` on the source; `moment` says when, for the message if it did not exist.
pub(super) async fn find(client: &Client, table: &Qualified, moment: &str) -> Result<Found> {
    let row = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| Error::postgres("finding the table", &e))?
        .ok_or_else(|| {
            Error::Missing(format!(
                "table `{table}` did not exist {moment} (names are case-sensitive; quote a part that holds a dot)"
            ))
        })?;
    let oid: u32 = row.get(0);
    let rels = client
        .query(
            "SELECT t.relid::oid, n.nspname::text, c.relname::text FROM pg_partition_tree($1::oid::regclass) t \
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') ORDER BY t.level, c.relname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::postgres("listing the table's partitions", &e))?
        .iter()
        .map(|r| (r.get::<_, u32>(0), Qualified::new(r.get(1), r.get(2))))
        .collect::<Vec<_>>();
    // A table that is neither partitioned nor a partition has no partition tree.
    let rels = if rels.is_empty() {
        vec![(oid, table.clone())]
    } else {
        rels
    };
    let key = strings(
        client,
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
        oid,
        "reading the table's primary key",
    )
    .await?;
    let columns = strings(
        client,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 \
         AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        oid,
        "reading the table's columns",
    )
    .await?;
    Ok(Found {
        table: table.clone(),
        oid,
        rels,
        key,
        columns,
    })
}

/// Statements (one per row of `sql`, which builds them with `format`) run on the source.
async fn run_built(
    client: &impl GenericClient,
    sql: &str,
    oids: &[u32],
    what: &str,
) -> Result<usize> {
    let statements: Vec<String> = client
        .query(sql, &[&oids])
        .await
        .map_err(|e| Error::postgres(what, &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for statement in &statements {
        client
            .batch_execute(statement)
            .await
            .map_err(|e| Error::postgres(format!("{what}: `{statement}`"), &e))?;
    }
    Ok(statements.len())
}

/// Cuts `found` loose on the source and renames it to `target` (see the module's header);
/// returns the names `pg_dump` must be given: the table's and its partitions'.
pub(super) async fn prepare(
    client: &mut Client,
    found: &Found,
    target: &Qualified,
    naming: &Naming,
    data_only: bool,
) -> Result<Vec<Qualified>> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::postgres("starting a transaction on the recovered server", &e))?;
    tx.batch_execute("SET LOCAL search_path = ''")
        .await
        .map_err(|e| Error::postgres("setting the search path", &e))?;
    let oids: Vec<u32> = found.rels.iter().map(|(oid, _)| *oid).collect();
    // Off its parent (a partition) or the tables it inherits from.
    run_built(
        &tx,
        "SELECT CASE WHEN c.relispartition \
           THEN format('ALTER TABLE %s DETACH PARTITION %s', i.inhparent::regclass, i.inhrelid::regclass) \
           ELSE format('ALTER TABLE %s NO INHERIT %s', i.inhrelid::regclass, i.inhparent::regclass) END \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhrelid = ANY($1) AND NOT i.inhparent = ANY($1)",
        &oids,
        "detaching the table from its parent",
    )
    .await?;
    for (sql, what) in [
        (
            "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) \
             FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY($1) \
             AND NOT confrelid = ANY($1) AND conparentid = 0",
            "dropping foreign keys to other tables",
        ),
        (
            "SELECT format('DROP TRIGGER %I ON %s', tgname, tgrelid::regclass) FROM pg_trigger \
             WHERE tgrelid = ANY($1) AND NOT tgisinternal AND tgparentid = 0",
            "dropping triggers",
        ),
        (
            "SELECT format('DROP POLICY %I ON %s', polname, polrelid::regclass) FROM pg_policy \
             WHERE polrelid = ANY($1)",
            "dropping row security policies",
        ),
        (
            "SELECT format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', oid::regclass) FROM pg_class \
             WHERE oid = ANY($1) AND relrowsecurity",
            "disabling row security",
        ),
        (
            "SELECT format('DROP RULE %I ON %s', rulename, ev_class::regclass) FROM pg_rewrite \
             WHERE ev_class = ANY($1) AND rulename <> '_RETURN'",
            "dropping rules",
        ),
    ] {
        run_built(&tx, sql, &oids, what).await?;
    }
    let root = &found.rels[0].1;
    let mut names = Vec::new();
    if data_only {
        // The rows go into an existing table: the copy's sequences stay behind, and only the
        // table's name matters (`--load-via-partition-root` loads partitions through it).
        run_built(
            &tx,
            "SELECT format('ALTER TABLE %s ALTER COLUMN %I DROP IDENTITY', attrelid::regclass, attname) \
             FROM pg_attribute WHERE attrelid = ANY($1) AND attidentity <> '' AND attinhcount = 0",
            &oids,
            "dropping identities",
        )
        .await?;
        run_built(
            &tx,
            "SELECT format('ALTER SEQUENCE %s OWNED BY NONE', d.objid::regclass) FROM pg_depend d \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.refobjid = ANY($1) AND d.deptype = 'a'",
            &oids,
            "letting go of owned sequences",
        )
        .await?;
        rename_and_move(&tx, root, target).await?;
        names.push(target.clone());
        names.extend(found.rels[1..].iter().map(|(_, q)| q.clone()));
    } else {
        for (oid, rel) in &found.rels {
            let new = if naming.renames() {
                Qualified::new(
                    &target.schema,
                    &if oid == &found.oid {
                        target.name.clone()
                    } else {
                        companion(&rel.name, &root.name, &target.name)
                    },
                )
            } else {
                Qualified::new(&target.schema, &rel.name)
            };
            if naming.renames() {
                rename_companions(&tx, *oid, &rel.name, &new.name).await?;
            }
            move_statistics(&tx, *oid, &new.schema).await?;
            rename_and_move(&tx, rel, &new).await?;
            names.push(new);
        }
    }
    tx.commit()
        .await
        .map_err(|e| Error::postgres("preparing the copy on the recovered server", &e))?;
    Ok(names)
}

/// Renames `rel`'s indexes, owned sequences and statistics as `old` → `new` names them.
async fn rename_companions(
    client: &impl GenericClient,
    oid: u32,
    old: &str,
    new: &str,
) -> Result<()> {
    let rows = client
        .query(
            "SELECT 'INDEX', n.nspname::text, c.relname::text FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE i.indrelid = $1 \
             UNION ALL SELECT 'SEQUENCE', n.nspname::text, c.relname::text FROM pg_depend d \
               JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S' JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND d.deptype IN ('a', 'i') \
             UNION ALL SELECT 'STATISTICS', n.nspname::text, s.stxname::text FROM pg_statistic_ext s \
               JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.stxrelid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::postgres("listing the table's indexes and sequences", &e))?;
    for row in rows {
        let (kind, schema, name): (&str, String, String) = (row.get(0), row.get(1), row.get(2));
        let statement = format!(
            "ALTER {kind} {} RENAME TO {}",
            Qualified::new(&schema, &name).sql(),
            quote_ident(&companion(&name, old, new))
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| Error::postgres(format!("renaming `{statement}`"), &e))?;
    }
    Ok(())
}

/// Extended statistics do not follow their table to another schema on their own.
async fn move_statistics(client: &impl GenericClient, oid: u32, schema: &str) -> Result<()> {
    let statements: Vec<String> = client
        .query(
            "SELECT format('ALTER STATISTICS %I.%I SET SCHEMA %I', n.nspname, s.stxname, $2::text) \
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace \
             WHERE s.stxrelid = $1 AND n.nspname <> $2::text",
            &[&oid, &schema],
        )
        .await
        .map_err(|e| Error::postgres("listing the table's statistics", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for statement in statements {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| Error::postgres(format!("moving `{statement}`"), &e))?;
    }
    Ok(())
}

async fn rename_and_move(
    client: &impl GenericClient,
    from: &Qualified,
    to: &Qualified,
) -> Result<()> {
    let mut statements = Vec::new();
    if from.name != to.name {
        statements.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            from.sql(),
            quote_ident(&to.name)
        ));
    }
    if from.schema != to.schema {
        statements.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&to.schema)
        ));
        statements.push(format!(
            "ALTER TABLE {} SET SCHEMA {}",
            Qualified::new(&from.schema, &to.name).sql(),
            quote_ident(&to.schema)
        ));
    }
    for statement in statements {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| Error::postgres(format!("renaming the copy: `{statement}`"), &e))?;
    }
    Ok(())
}

/// `pg_dump` of `tables` on the source, through `psql` into `live` in one transaction that
/// first runs `prelude`, and commits only once all of the dump has been passed on (a killed
/// lifeboat commits nothing: [`crate::postgres::restore::script`]); returns the rows loaded
/// into each table `COPY` named.
pub(super) async fn load(
    ctx: &Context,
    source: &Source,
    tables: &[Qualified],
    data_only: bool,
    live: &ConnInfo,
    prelude: &str,
) -> Result<BTreeMap<Qualified, u64>> {
    let mut dump = source.pg_dump(ctx).args([
        "--format=plain",
        "--no-owner",
        "--no-privileges",
        "--no-publications",
        "--no-subscriptions",
        "--no-security-labels",
        "--no-tablespaces",
    ]);
    if data_only {
        dump = dump.args(["--data-only", "--load-via-partition-root"]);
    }
    for table in tables {
        // In a pattern, double quotes make every character literal.
        dump = dump.arg(format!(
            "--table={}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        ));
    }
    let reader = dump.spawn_reader()?;
    let (psql, passfile) = live.apply_to(ctx.tools.psql_script())?;
    let mut psql = psql.spawn_writer()?;
    let begin = script::begin(prelude);
    let cancel = ctx.cancel.clone();
    let counted = tokio::task::spawn_blocking(move || -> Result<BTreeMap<Qualified, u64>> {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
        let mut counter = CopyCounter::default();
        if let Err(e) = psql.write_all(begin.as_bytes()) {
            return Err(psql.stopped(format!("stopped ({e})")));
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            if cancel.is_cancelled() {
                psql.kill();
                return Err(Error::Interrupted(
                    "the copy was stopped before it could commit".into(),
                ));
            }
            let read = match reader.read_until(b'\n', &mut line) {
                Ok(read) => read,
                Err(e) => {
                    psql.kill();
                    return Err(crate::pipeline::from_io(e, "reading pg_dump"));
                }
            };
            if read == 0 {
                break;
            }
            counter.line(&line);
            if let Err(e) = psql.write_all(&line) {
                return Err(psql.stopped(format!("stopped ({e})")));
            }
        }
        // Only now may psql commit.
        if let Err(e) = psql.write_all(script::COMMIT) {
            return Err(psql.stopped(format!("stopped ({e})")));
        }
        psql.finish()?;
        Ok(counter.rows)
    })
    .await
    .map_err(|e| Error::thread("copy", e))?;
    drop(passfile);
    counted
}
