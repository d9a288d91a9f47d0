//! What `pg_dump` leaves out and an empty server needs: the cluster's roles (with their
//! password hashes when the backup ran as a superuser), memberships and role settings, taken
//! with `pg_dumpall --roles-only` beside every dump and stored sealed like it; and the
//! database's own properties (owner, encoding, locale, `ALTER DATABASE ... SET`).
//!
//! Putting them back is planned first ([`plan_roles`], pure): roles that exist are kept as they
//! are unless replacing is asked for, and the plan says what it will do.

use std::collections::BTreeSet;

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};
use crate::postgres::conn::{quote_ident, ConnInfo};
use crate::process::tools::PgTools;

pub use crate::repository::manifest::{DbProperties, GlobalsInfo};

pub async fn read_properties(client: &impl GenericClient) -> Result<DbProperties> {
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, \
             d.datctype, coalesce((SELECT s.setconfig FROM pg_db_role_setting s \
             WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the database's properties", &e))?;
    Ok(DbProperties {
        owner: row.get(0),
        encoding: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        settings: row.get(4),
    })
}

/// The cluster's roles as SQL; whether password hashes could be read (superusers only).
pub async fn dump_roles(
    tools: &PgTools,
    conn: &ConnInfo,
    client: &impl GenericClient,
) -> Result<(Vec<u8>, bool)> {
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("checking the role's privileges", &e))?
        .get(0);
    let mut tool = tools
        .tool("pg_dumpall")
        .args(["--roles-only", "--no-password"]);
    if !superuser {
        tool = tool.arg("--no-role-passwords");
    }
    let (tool, _passfile) = conn.apply_to(tool)?;
    let sql = tokio::task::spawn_blocking(move || tool.output())
        .await
        .map_err(|e| Error::thread("pg_dumpall", e))??;
    Ok((sql, superuser))
}

/// What putting roles back does, statement by statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RolePlan {
    /// Roles created.
    pub created: Vec<String>,
    /// Roles that exist and are left as they are.
    pub kept: Vec<String>,
    /// Roles that exist and are altered to match the backup (`--replace-roles`).
    pub replaced: Vec<String>,
    /// The statements to run, in order.
    #[serde(skip)]
    pub statements: Vec<String>,
}

/// The role a `CREATE ROLE`/`ALTER ROLE` statement names (quoted or not).
fn role_of(statement: &str) -> Option<String> {
    let rest = statement
        .strip_prefix("CREATE ROLE ")
        .or_else(|| statement.strip_prefix("ALTER ROLE "))?;
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        Some(rest.split([' ', ';']).next()?.to_string())
    }
}

/// Plans the roles of `sql` (pg_dumpall's) onto a server that has `existing`: missing roles
/// are created with their attributes and settings; existing ones are kept, or altered with
/// `replace`; memberships are granted (a grant that exists changes nothing).
pub fn plan_roles(sql: &str, existing: &BTreeSet<String>, replace: bool) -> RolePlan {
    let mut plan = RolePlan::default();
    for line in sql.lines() {
        let statement = line.trim();
        if statement.is_empty() || statement.starts_with("--") || statement.starts_with('\\') {
            continue;
        }
        if statement.starts_with("SET ") {
            plan.statements.push(statement.to_string());
            continue;
        }
        let role = role_of(statement);
        let exists = role.as_ref().is_some_and(|r| existing.contains(r));
        if statement.starts_with("CREATE ROLE ") {
            let role = role.unwrap_or_default();
            match (exists, replace) {
                (false, _) => {
                    plan.created.push(role);
                    plan.statements.push(statement.to_string());
                }
                (true, true) => plan.replaced.push(role),
                (true, false) => plan.kept.push(role),
            }
        } else if statement.starts_with("ALTER ROLE ") {
            if !exists || replace {
                plan.statements.push(statement.to_string());
            }
        } else if statement.starts_with("GRANT ") {
            plan.statements
                .push(without_missing_grantor(statement, existing, &plan.created));
        } else if statement.starts_with("COMMENT ON ROLE ") {
            plan.statements.push(statement.to_string());
        }
    }
    plan
}

/// A membership granted by a role the new server will not have (the old server's own
/// superuser, under another name) is granted by whoever restores instead.
fn without_missing_grantor(
    statement: &str,
    existing: &BTreeSet<String>,
    created: &[String],
) -> String {
    let Some((grant, grantor)) = statement.rsplit_once(" GRANTED BY ") else {
        return statement.to_string();
    };
    let name = grantor.trim_end_matches(';').trim();
    let unquoted = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .map(|n| n.replace("\"\"", "\""))
        .unwrap_or_else(|| name.to_string());
    if existing.contains(&unquoted) || created.contains(&unquoted) {
        statement.to_string()
    } else {
        format!("{grant};")
    }
}

/// The roles on the server `client` is connected to.
pub async fn existing_roles(client: &Client) -> Result<BTreeSet<String>> {
    let rows = client
        .query("SELECT rolname FROM pg_roles", &[])
        .await
        .map_err(|e| Error::postgres("listing the server's roles", &e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Runs a role plan, in one transaction.
pub async fn apply_roles(client: &mut Client, plan: &RolePlan) -> Result<()> {
    let txn = client
        .transaction()
        .await
        .map_err(|e| Error::postgres("creating the roles", &e))?;
    for statement in &plan.statements {
        txn.batch_execute(statement).await.map_err(|e| {
            Error::postgres(
                format!(
                    "creating the roles: `{}`",
                    statement.chars().take(80).collect::<String>()
                ),
                &e,
            )
        })?;
    }
    txn.commit()
        .await
        .map_err(|e| Error::postgres("creating the roles", &e))
}

/// Settings whose value is a list that `SET` takes unquoted (pg_dump's `GUC_LIST_QUOTE` ones).
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// The statements that create database `name` with `properties` (run outside a transaction).
pub fn create_database_sql(name: &str, properties: &DbProperties) -> Vec<String> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = vec![format!(
        "CREATE DATABASE {} WITH TEMPLATE = template0 OWNER = {} ENCODING = {} LC_COLLATE = {} LC_CTYPE = {}",
        quote_ident(name),
        quote_ident(&properties.owner),
        literal(&properties.encoding),
        literal(&properties.collate),
        literal(&properties.ctype),
    )];
    for setting in &properties.settings {
        let Some((key, value)) = setting.split_once('=') else {
            continue;
        };
        let value = if LIST_SETTINGS.contains(&key) {
            value.to_string()
        } else {
            literal(value)
        };
        out.push(format!(
            "ALTER DATABASE {} SET {key} = {value}",
            quote_ident(name)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMPALL: &str = "--\n-- Roles\n--\n\nSET default_transaction_read_only = off;\n\
        CREATE ROLE app;\nALTER ROLE app WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$x';\n\
        CREATE ROLE \"read \"\"only\";\nALTER ROLE \"read \"\"only\" WITH NOLOGIN;\n\
        CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\n\
        ALTER ROLE app SET statement_timeout TO '5s';\n\
        GRANT \"read \"\"only\" TO app GRANTED BY postgres;\n";

    #[test]
    fn missing_roles_are_created_and_existing_ones_kept() {
        let existing: BTreeSet<String> = ["postgres".to_string()].into();
        let plan = plan_roles(DUMPALL, &existing, false);
        assert_eq!(plan.created, ["app", "read \"only"]);
        assert_eq!(plan.kept, ["postgres"]);
        assert!(plan.replaced.is_empty());
        assert!(plan.statements.iter().all(|s| !s.contains("ROLE postgres")));
        assert!(plan
            .statements
            .iter()
            .any(|s| s.starts_with("ALTER ROLE app SET statement_timeout")));
        assert_eq!(
            plan.statements.last().unwrap(),
            "GRANT \"read \"\"only\" TO app GRANTED BY postgres;"
        );
        // A grantor the new server lacks: granted by whoever restores.
        let plan = plan_roles(DUMPALL, &BTreeSet::new(), false);
        let plan_elsewhere = plan_roles(
            &DUMPALL.replace("GRANTED BY postgres", "GRANTED BY \"old admin\""),
            &existing,
            false,
        );
        assert_eq!(
            plan_elsewhere.statements.last().unwrap(),
            "GRANT \"read \"\"only\" TO app;"
        );
        assert!(plan.created.contains(&"postgres".to_string()));
        // Replacing alters the existing one, and creates nothing twice.
        let plan = plan_roles(DUMPALL, &existing, true);
        assert_eq!(plan.replaced, ["postgres"]);
        assert!(plan
            .statements
            .iter()
            .any(|s| s == "ALTER ROLE postgres WITH SUPERUSER;"));
        assert!(!plan.statements.iter().any(|s| s == "CREATE ROLE postgres;"));
    }

    #[test]
    fn a_database_is_created_with_its_properties() {
        let sql = create_database_sql(
            "yo mira",
            &DbProperties {
                owner: "app".into(),
                encoding: "UTF8".into(),
                collate: "C".into(),
                ctype: "C".into(),
                settings: vec![
                    "search_path=core, public".into(),
                    "statement_timeout=5s".into(),
                ],
            },
        );
        assert_eq!(
            sql[0],
            "CREATE DATABASE \"yo mira\" WITH TEMPLATE = template0 OWNER = \"app\" ENCODING = 'UTF8' LC_COLLATE = 'C' LC_CTYPE = 'C'"
        );
        assert_eq!(
            sql[1],
            "ALTER DATABASE \"yo mira\" SET search_path = core, public"
        );
        assert_eq!(
            sql[2],
            "ALTER DATABASE \"yo mira\" SET statement_timeout = '5s'"
        );
    }
}
