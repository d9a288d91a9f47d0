//! The archive's table of contents (`pg_restore --list`): read from the head of the stored
//! archive, and turned into `pg_restore -L` lists and the SQL of a `--clean` restore.

use super::archive::{finish_child, Archive};
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::conn::quote_ident;
use crate::process::{Tool, Unnamed};
use crate::Context;

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

/// Entries a throwaway copy of a few tables leaves out: what reaches beyond them or is not
/// needed to read them (foreign keys, triggers, policies, large objects, materialized views'
/// data, publications, grants, comments).
const NOT_COPIED: &[&str] = &[
    "FK CONSTRAINT",
    "TRIGGER",
    "EVENT TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "BLOB",
    "BLOBS",
    "BLOB METADATA",
    "LARGE OBJECT",
    "MATERIALIZED VIEW DATA",
    "PUBLICATION",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "SUBSCRIPTION",
    "SUBSCRIPTION TABLE",
    "ACL",
    "DEFAULT ACL",
    "COMMENT",
    "SECURITY LABEL",
    "DATABASE PROPERTIES",
];

/// A `pg_restore -L` list for a throwaway copy of a few tables: every definition the archive
/// holds (the types, functions and sequences they use come with them), the data of `data_of`
/// only, and nothing in [`NOT_COPIED`].
pub fn copy_list(toc: &str, data_of: &[(String, String)]) -> String {
    let mut out = String::new();
    for (line, description) in toc_entries(toc) {
        let kind = TOC_TYPES.iter().find(|t| {
            description.starts_with(**t) && description.as_bytes().get(t.len()) == Some(&b' ')
        });
        let wanted = match kind {
            Some(&"TABLE DATA") => data_of.iter().any(|(schema, name)| {
                description.starts_with(&format!("TABLE DATA {schema} {name} "))
            }),
            Some(kind) => !NOT_COPIED.contains(kind),
            None => false,
        };
        if wanted {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Reads the archive's table of contents (`pg_restore --list`), which sits at its start.
pub(crate) async fn read_toc(ctx: &Context, archive: &Archive<'_>) -> Result<String> {
    let out = Unnamed::memory("lifeboat-toc", b"")
        .map_err(|e| Error::io("creating a file for the table of contents", e))?;
    let tool = Tool::new(ctx.tools.path("pg_restore"))
        .arg("--list")
        .arg(format!("--file={}", out.path().display()));
    let child = tool.spawn_writer()?;
    let delivered = archive.download(child, ctx).await?;
    match delivered {
        Delivered::Complete(child) | Delivered::ConsumerClosed(child) => {
            finish_child(child).await?
        }
    }
    out.read_to_string()
        .map_err(|e| Error::io("reading the table of contents", e))
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

#[cfg(test)]
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
    fn a_copy_list_takes_definitions_and_the_wanted_data() {
        let toc = format!(
            "{TOC}3300; 2606 16500 FK CONSTRAINT core t t_other_fk postgres\n\
             3301; 2620 16501 TRIGGER core t audit postgres\n\
             3302; 0 0 SEQUENCE SET core t_id_seq postgres\n"
        );
        let list = copy_list(&toc, &[("core".to_string(), "t".to_string())]);
        assert!(list.contains("TABLE core t_other") && list.contains("TABLE DATA core t "));
        assert!(!list.contains("TABLE DATA core t_other") && !list.contains("TABLE DATA public"));
        assert!(list.contains("CONSTRAINT core t t_pkey") && list.contains("SEQUENCE SET"));
        assert!(!list.contains("FK CONSTRAINT") && !list.contains("TRIGGER"));
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
