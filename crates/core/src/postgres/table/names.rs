//! Names for `restore table`, without I/O: qualified names as the user and `pg_dump` write
//! them, what the recovered copy and its indexes, sequences and partitions are called, the
//! rows counted in a plain dump's `COPY` blocks, and the SQL that compares the copy with the
//! live table.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::postgres::conn::quote_ident;

/// PostgreSQL truncates identifiers to this many bytes.
const MAX_IDENT: usize = 63;

/// `schema.name`, both parts as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Qualified {
    pub schema: String,
    pub name: String,
}

impl Qualified {
    pub fn new(schema: &str, name: &str) -> Qualified {
        Qualified {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Quoted for SQL: `"core"."comic"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Parses `SCHEMA.TABLE`: each part as stored (case kept), or double-quoted (`""` for a
    /// quote) when it holds a dot, a space or a quote.
    pub fn parse(text: &str) -> Result<Qualified> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "table `{text}` {why}: give it as `SCHEMA.TABLE`, double-quoting a part that holds a dot or a quote (`core.\"Comic Pages\"`)"
            ))
        };
        let (schema, rest) = ident(text).ok_or_else(|| bad("has an unfinished quote"))?;
        let rest = rest
            .strip_prefix('.')
            .ok_or_else(|| bad("names no schema"))?;
        let (name, rest) = ident(rest).ok_or_else(|| bad("has an unfinished quote"))?;
        if !rest.is_empty() || schema.is_empty() || name.is_empty() {
            return Err(bad("is not one schema and one table"));
        }
        Ok(Qualified { schema, name })
    }
}

impl std::fmt::Display for Qualified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = |s: &str| {
            if s.contains(['.', '"', ' ']) || s.is_empty() {
                quote_ident(s)
            } else {
                s.to_string()
            }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.name))
    }
}

/// One identifier at the start of `text` (quoted or up to `.`, space or `(`), and the rest.
fn ident(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, c)| *c) == Some('"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some((out, &quoted[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = text.find(['.', ' ', '(']).unwrap_or(text.len());
        Some((text[..end].to_string(), &text[end..]))
    }
}

/// What the recovered copies are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Beside the live table, in its schema, its name followed by the moment's stamp.
    Beside,
    /// This name (one table only).
    As(Qualified),
    /// The same name, in this schema.
    Schema(String),
}

impl Naming {
    /// The copy of `table` recovered as of the moment `stamp` (`20261201_140400`).
    pub fn target(&self, table: &Qualified, stamp: &str) -> Qualified {
        match self {
            Naming::Beside => Qualified {
                schema: table.schema.clone(),
                name: truncate(&format!("{}_{stamp}", table.name)),
            },
            Naming::As(target) => target.clone(),
            Naming::Schema(schema) => Qualified {
                schema: schema.clone(),
                name: table.name.clone(),
            },
        }
    }

    /// Whether companions (indexes, sequences, partitions) are renamed: when the copy shares
    /// a schema with what it was named after, their names would clash.
    pub fn renames(&self) -> bool {
        !matches!(self, Naming::Schema(_))
    }
}

/// The name a companion of a table renamed from `old` to `new` gets: its name with `old`'s
/// prefix replaced by `new`, else `new_` before it (`comic_pkey` → `comic_2026_pkey`).
pub fn companion(name: &str, old: &str, new: &str) -> String {
    match name.strip_prefix(old) {
        Some(rest) => truncate(&format!("{new}{rest}")),
        None => truncate(&format!("{new}_{name}")),
    }
}

fn truncate(name: &str) -> String {
    let mut end = name.len().min(MAX_IDENT);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Counts the rows of each `COPY ... FROM stdin;` block of a plain-format dump, by the table
/// it loads, one line at a time.
#[derive(Debug, Default)]
pub struct CopyCounter {
    current: Option<Qualified>,
    pub rows: BTreeMap<Qualified, u64>,
}

impl CopyCounter {
    pub fn line(&mut self, line: &[u8]) {
        match &self.current {
            Some(table) => {
                if line == b"\\.\n" || line == b"\\." {
                    self.current = None;
                } else {
                    *self.rows.entry(table.clone()).or_default() += 1;
                }
            }
            None => {
                if let Some(rest) = line.strip_prefix(b"COPY ") {
                    if line.ends_with(b" FROM stdin;\n") {
                        let rest = String::from_utf8_lossy(rest);
                        if let Some(table) = copy_target(&rest) {
                            self.rows.entry(table.clone()).or_default();
                            self.current = Some(table);
                        }
                    }
                }
            }
        }
    }
}

fn copy_target(rest: &str) -> Option<Qualified> {
    let (schema, rest) = ident(rest)?;
    let (name, _) = ident(rest.strip_prefix('.')?)?;
    Some(Qualified { schema, name })
}

/// SQL an operator runs to compare the recovered copy with the live table, and to put back
/// the rows that are gone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compare {
    /// Rows present then and missing now.
    pub missing_now: String,
    /// Rows present both then and now whose contents differ (by primary key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<String>,
    /// Rows added to the live table since.
    pub added_since: String,
    /// Inserts the missing rows back into the live table.
    pub put_back: String,
}

/// Comparison SQL for the copy `copy` of `live`, matched by `key` (the primary key's
/// columns) or, without one, by whole rows. `columns` are the live table's writable ones.
pub fn compare(live: &Qualified, copy: &Qualified, key: &[String], columns: &[String]) -> Compare {
    let (l, c) = (live.sql(), copy.sql());
    let cols = columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    if key.is_empty() {
        return Compare {
            missing_now: format!("SELECT * FROM {c} EXCEPT ALL SELECT * FROM {l}"),
            changed: None,
            added_since: format!("SELECT * FROM {l} EXCEPT ALL SELECT * FROM {c}"),
            put_back: format!(
                "INSERT INTO {l} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM (SELECT * FROM {c} EXCEPT ALL SELECT * FROM {l}) missing"
            ),
        };
    }
    let matches = |a: &str, b: &str| {
        key.iter()
            .map(|k| format!("{a}.{0} = {b}.{0}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let order = key
        .iter()
        .map(|k| format!("r.{}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let missing = format!(
        "FROM {c} r WHERE NOT EXISTS (SELECT 1 FROM {l} l WHERE {})",
        matches("l", "r")
    );
    let picked = columns
        .iter()
        .map(|col| format!("r.{}", quote_ident(col)))
        .collect::<Vec<_>>()
        .join(", ");
    Compare {
        missing_now: format!("SELECT r.* {missing} ORDER BY {order}"),
        changed: Some(format!(
            "SELECT r.*, l.* FROM {c} r JOIN {l} l ON {} WHERE to_jsonb(r) IS DISTINCT FROM to_jsonb(l) ORDER BY {order}",
            matches("l", "r")
        )),
        added_since: format!(
            "SELECT l.* FROM {l} l WHERE NOT EXISTS (SELECT 1 FROM {c} r WHERE {}) ORDER BY {}",
            matches("r", "l"),
            order.replace("r.", "l.")
        ),
        put_back: format!("INSERT INTO {l} ({cols}) OVERRIDING SYSTEM VALUE SELECT {picked} {missing}"),
    }
}

/// `SELECT count(*)` over one of [`Compare`]'s queries.
pub fn count_of(query: &str) -> String {
    let body = query
        .rsplit_once(" ORDER BY ")
        .map_or(query, |(body, _)| body);
    format!("SELECT count(*) FROM ({body}) AS rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_written_or_quoted() {
        assert_eq!(
            Qualified::parse("core.comic").unwrap(),
            Qualified::new("core", "comic")
        );
        assert_eq!(
            Qualified::parse("core.\"Comic Pages.v2\"").unwrap(),
            Qualified::new("core", "Comic Pages.v2")
        );
        assert_eq!(
            Qualified::parse("\"my \"\"odd\"\" schema\".T").unwrap(),
            Qualified::new("my \"odd\" schema", "T")
        );
        for bad in [
            "comic",
            "core.",
            ".comic",
            "a.b.c",
            "core.\"open",
            "core.comic x",
        ] {
            let e = Qualified::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        let odd = Qualified::new("core", "Comic Pages.v2");
        assert_eq!(odd.to_string(), "core.\"Comic Pages.v2\"");
        assert_eq!(Qualified::parse(&odd.to_string()).unwrap(), odd);
        assert_eq!(odd.sql(), "\"core\".\"Comic Pages.v2\"");
    }

    #[test]
    fn copies_and_companions_are_named() {
        let comic = Qualified::new("core", "comic");
        assert_eq!(
            Naming::Beside.target(&comic, "20261201_140400"),
            Qualified::new("core", "comic_20261201_140400")
        );
        assert_eq!(
            Naming::Schema("recovered".into()).target(&comic, "x"),
            Qualified::new("recovered", "comic")
        );
        let long = Qualified::new("core", &"é".repeat(40));
        let named = Naming::Beside.target(&long, "20261201_140400");
        assert!(named.name.len() <= MAX_IDENT && named.name.starts_with('é'));
        assert_eq!(
            companion("comic_pkey", "comic", "comic_old"),
            "comic_old_pkey"
        );
        assert_eq!(
            companion("idx_title", "comic", "comic_old"),
            "comic_old_idx_title"
        );
        assert!(!Naming::Schema("r".into()).renames() && Naming::Beside.renames());
    }

    #[test]
    fn copy_blocks_are_counted_by_table() {
        let dump = "SET x = 1;\nCOPY core.\"Odd Name\" (id, \"a b\") FROM stdin;\n1\tx\n2\t\\N\n\\.\n\
            COPY core.events_2026_11 (id) FROM stdin;\n\\.\nCOPY core.events_2026_12 (id) FROM stdin;\n7\n\\.\n\
            CREATE INDEX i ON core.t USING btree (a);\n";
        let mut counter = CopyCounter::default();
        for line in dump.split_inclusive('\n') {
            counter.line(line.as_bytes());
        }
        assert_eq!(counter.rows[&Qualified::new("core", "Odd Name")], 2);
        assert_eq!(counter.rows[&Qualified::new("core", "events_2026_11")], 0);
        assert_eq!(counter.rows[&Qualified::new("core", "events_2026_12")], 1);
        assert_eq!(counter.rows.len(), 3);
    }

    #[test]
    fn comparisons_match_by_key_or_by_whole_rows() {
        let live = Qualified::new("core", "comic");
        let copy = Qualified::new("core", "comic_x");
        let cols = vec!["id".to_string(), "title".to_string()];
        let by_key = compare(&live, &copy, &["id".into()], &cols);
        assert!(by_key.missing_now.contains(
            "FROM \"core\".\"comic_x\" r WHERE NOT EXISTS (SELECT 1 FROM \"core\".\"comic\" l WHERE l.\"id\" = r.\"id\")"
        ));
        assert!(by_key.put_back.starts_with(
            "INSERT INTO \"core\".\"comic\" (\"id\", \"title\") OVERRIDING SYSTEM VALUE SELECT r.\"id\", r.\"title\" FROM"
        ));
        assert_eq!(
            count_of(&by_key.missing_now),
            format!(
                "SELECT count(*) FROM ({}) AS rows",
                by_key.missing_now.trim_end_matches(" ORDER BY r.\"id\"")
            )
        );
        let whole = compare(&live, &copy, &[], &cols);
        assert!(whole.changed.is_none());
        assert!(whole.missing_now.contains("EXCEPT ALL"));
    }
}
