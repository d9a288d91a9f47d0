//! `--create`: the database appears under its name only when it is whole. It is made under a
//! staging name (`NAME_lifeboat_partial`), restored and checked there, then renamed; a restore
//! that fails or is stopped drops it. A run holds an advisory lock named after the target on the
//! server's `postgres` database throughout, so a second restore of the same name is refused
//! rather than raced, and a staging database found by a run that holds the lock was left by one
//! that was killed: it is dropped if it carries lifeboat's mark, or is empty (killed between
//! `CREATE DATABASE` and the mark).
//!
//! This is what makes a parallel restore (`--spool --jobs N`, which loads in many transactions)
//! as safe as a streamed one onto an empty server, where the time to recover matters most.

use tokio_postgres::Client;

use std::sync::Arc;

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pipeline::{self, Delivered, Expected};
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::Context;

use super::RestoreRequest;
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::postgres::globals::{create_database_sql, DbProperties};

/// How a staging database's comment starts: what a later run may drop.
const MARK: &str = "lifeboat:";
/// What a staging database's name ends with.
const SUFFIX: &str = "_lifeboat_partial";
/// PostgreSQL's longest identifier, in bytes.
const NAME_MAX: usize = 63;

/// The staging database of a restore into `target`: `target` cut to fit, then [`SUFFIX`].
pub fn staging_name(target: &str) -> String {
    let mut end = NAME_MAX - SUFFIX.len();
    if end >= target.len() {
        end = target.len();
    }
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", &target[..end])
}

/// The text whose `hashtext` keys the advisory lock of restores into `target`.
fn lock_text(target: &str) -> String {
    format!("lifeboat restore {target}")
}

/// A database being restored under its staging name, and the session holding the lock.
pub(super) struct Staged {
    server: Client,
    /// How `server` was reached, to reach it again if an idle timeout closed it.
    server_conn: ConnInfo,
    target: String,
    staging: String,
    /// The database's owner, as the backup recorded it.
    owner: String,
    /// Where the restore loads: the target's connection, to the staging database.
    pub conn: ConnInfo,
}

impl Staged {
    /// Takes the lock of `target`'s restores through `server` (a session to the `postgres`
    /// database reached through `server_conn`, kept until the end), refuses a database that
    /// exists, drops a killed run's staging database, and creates the staging database with
    /// `properties`.
    pub async fn create(
        server: Client,
        server_conn: &ConnInfo,
        target: &ConnInfo,
        properties: &DbProperties,
    ) -> Result<Staged> {
        let name = target.dbname().to_string();
        let staging = staging_name(&name);
        let failed = |what: &str| {
            let what = what.to_string();
            move |e: tokio_postgres::Error| Error::postgres(what, &e)
        };
        let locked: bool = server
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext($1))",
                &[&lock_text(&name)],
            )
            .await
            .map_err(failed("taking the restore lock"))?
            .get(0);
        if !locked {
            return Err(Error::NotReady(format!(
                "another restore into database `{name}` is running on this server: wait for it to end (a restore holds the advisory lock `hashtext('{}')` on database `postgres` while it runs)",
                lock_text(&name)
            )));
        }
        // The target and the staging name, with the staging database's comment.
        let found: Vec<(String, Option<String>)> = server
            .query(
                "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
                 WHERE datname IN ($1, $2)",
                &[&name, &staging],
            )
            .await
            .map_err(failed("listing the server's databases"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        if found.iter().any(|(db, _)| *db == name) {
            return Err(Error::NotReady(format!(
                "database `{name}` exists already: restore into it without `--create` (with `--clean` to replace what the backup holds), or drop it first"
            )));
        }
        if let Some((_, comment)) = found.first() {
            // Nobody else restores `name` (the lock is ours): a killed restore left it, if it
            // carries lifeboat's mark, or if it is empty (killed after `CREATE DATABASE`,
            // which the server completes without its client, and before the mark); any other
            // database of that name is not touched.
            let marked = comment.as_deref().is_some_and(|c| c.starts_with(MARK));
            if !marked && !is_empty(&target.with_dbname(&staging)).await {
                return Err(Error::NotReady(format!(
                    "database `{staging}` exists and is not a restore lifeboat left: rename or drop it (a restore into `{name}` with `--create` goes through that name)"
                )));
            }
            drop_database(&server, &staging).await?;
            tracing::warn!(
                "dropped database `{staging}`, left half-restored by a restore into `{name}` that was stopped"
            );
        }
        let staged = Staged {
            conn: target.with_dbname(&staging),
            server,
            server_conn: server_conn.clone(),
            target: name,
            staging,
            owner: properties.owner.clone(),
        };
        let mark = format!(
            "COMMENT ON DATABASE {} IS '{MARK} restore into `{}`, dropped by the next one if left'",
            quote_ident(&staged.staging),
            staged.target.replace('\'', "''")
        );
        // Marked as soon as it exists; its settings after.
        let mut statements = create_database_sql(&staged.staging, properties);
        statements.insert(1, mark);
        for statement in &statements {
            if let Err(e) = staged.server.batch_execute(statement).await {
                let e = Error::postgres(format!("creating database `{}`", staged.staging), &e);
                staged.abandon().await;
                return Err(e);
            }
        }
        tracing::info!(
            "restoring into database `{}`, renamed `{}` once restored and checked",
            staged.staging,
            staged.target
        );
        Ok(staged)
    }

    /// The session to the server, again if it was closed while the restore ran (by an idle
    /// timeout: the lock went with it, and the name is checked again).
    async fn reconnect(&mut self) -> Result<()> {
        if self.server.is_closed() {
            self.server = self.server_conn.connect("the target server").await?;
        }
        Ok(())
    }

    /// Gives the restored database its name (its sessions must have ended).
    pub async fn commit(mut self) -> Result<()> {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&self.staging),
            quote_ident(&self.target)
        );
        self.reconnect().await?;
        self.server.batch_execute(&sql).await.map_err(|e| {
            Error::postgres(
                format!(
                    "renaming the restored database `{}` to `{}` (it is whole: rename it by hand)",
                    self.staging, self.target
                ),
                &e,
            )
        })?;
        let unmark = format!("COMMENT ON DATABASE {} IS NULL", quote_ident(&self.target));
        if let Err(e) = self.server.batch_execute(&unmark).await {
            tracing::warn!(
                "database `{}` keeps lifeboat's comment: {}",
                self.target,
                Error::postgres("removing it", &e)
            );
        }
        tracing::info!(
            "created database `{}` (owner `{}`)",
            self.target,
            self.owner
        );
        Ok(())
    }

    /// Drops the staging database after a failure; a failure to drop is warned about (the
    /// next restore of the same name drops it).
    pub async fn abandon(mut self) {
        let dropped = match self.reconnect().await {
            Ok(()) => drop_database(&self.server, &self.staging).await,
            Err(e) => Err(e),
        };
        match dropped {
            Ok(()) => tracing::info!(
                "dropped database `{}`: the restore did not complete",
                self.staging
            ),
            Err(e) => tracing::warn!(
                "could not drop database `{}` after a failed restore ({e}): the next restore into `{}` drops it",
                self.staging,
                self.target
            ),
        }
    }
}

/// Whether the database `conn` reaches holds nothing but what `CREATE DATABASE ... TEMPLATE
/// template0` puts there: no schema, relation, function, type or large object of its own (all
/// such objects get OIDs from 16384 on). One that cannot be reached counts as not empty.
async fn is_empty(conn: &ConnInfo) -> bool {
    const SQL: &str = "SELECT (SELECT count(*) FROM pg_namespace WHERE oid >= 16384) \
        + (SELECT count(*) FROM pg_class WHERE oid >= 16384) \
        + (SELECT count(*) FROM pg_proc WHERE oid >= 16384) \
        + (SELECT count(*) FROM pg_type WHERE oid >= 16384) \
        + (SELECT count(*) FROM pg_largeobject_metadata)";
    let Ok(client) = conn.connect("the staging database").await else {
        return false;
    };
    match client.query_one(SQL, &[]).await {
        Ok(row) => row.get::<_, i64>(0) == 0,
        Err(_) => false,
    }
}

/// Drops database `name`, ending its sessions (a killed restore's workers may linger).
async fn drop_database(server: &Client, name: &str) -> Result<()> {
    let version: i32 = server
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| Error::postgres("reading the server's version", &e))?
        .get(0);
    let force = if version >= 130_000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    server
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(name)
        ))
        .await
        .map_err(|e| Error::postgres(format!("dropping database `{name}`"), &e))
}

/// `--globals` and `--create`: the roles the server lacks, then the database, made as the
/// backup recorded them under its staging name ([`created`]), through the server's `postgres`
/// database.
pub(super) async fn prepare_server(
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
        crate::error::listed(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_fit_postgres_identifiers() {
        assert_eq!(staging_name("yomira"), "yomira_lifeboat_partial");
        let long = "d".repeat(70);
        let name = staging_name(&long);
        assert_eq!(name.len(), NAME_MAX);
        assert!(name.ends_with(SUFFIX));
        // Cut at a character, never inside one.
        let wide = format!("a{}", "é".repeat(30));
        let name = staging_name(&wide);
        assert_eq!(name, format!("a{}{SUFFIX}", "é".repeat(22)));
    }
}
