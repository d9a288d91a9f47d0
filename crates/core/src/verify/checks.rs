//! The checks of a restored backup (row counts as recorded, critical tables not empty,
//! configured SQL true), and the quick check: the stored bytes read against the manifest's
//! hash while `pg_restore --list` (or `tar --list`) reads the table of contents.

use std::io::{self, Write};

use super::scratch::Restored;
use super::{Check, VerifyRequest};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::pipeline::{self, Delivered};
use crate::postgres::conn::quote_ident;
use crate::repository::keys::identities_for;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::Context;

/// Critical tables not empty, configured SQL checks true.
pub(super) fn run_checks(
    target: &Restored,
    database: Option<&PostgresConfig>,
    checks: &mut Vec<Check>,
) {
    let Some(database) = database else {
        return;
    };
    for table in &database.critical_tables {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(schema),
            quote_ident(name)
        );
        let check = match target.psql(&sql) {
            Ok(out) => {
                let rows: u64 = out.trim().parse().unwrap_or(0);
                Check {
                    damaged: false,
                    name: format!("critical table {table}"),
                    passed: rows > 0,
                    detail: if rows > 0 {
                        format!("{rows} rows")
                    } else {
                        "empty".into()
                    },
                }
            }
            Err(e) => Check {
                damaged: false,
                name: format!("critical table {table}"),
                passed: false,
                detail: e.to_string(),
            },
        };
        checks.push(check);
    }
    for sql in &database.checks {
        let check = match target.psql(sql) {
            Ok(out) => {
                let firsts: Vec<&str> = out
                    .lines()
                    .map(|l| l.split('|').next().unwrap_or_default().trim())
                    .collect();
                let passed = !firsts.is_empty() && firsts.iter().all(|v| *v == "t");
                Check {
                    damaged: false,
                    name: format!("check `{sql}`"),
                    passed,
                    detail: if passed {
                        "true".into()
                    } else if firsts.is_empty() {
                        "returned no rows".into()
                    } else {
                        format!("returned `{}`", firsts.join(", "))
                    },
                }
            }
            Err(e) => Check {
                damaged: false,
                name: format!("check `{sql}`"),
                passed: false,
                detail: e.to_string(),
            },
        };
        checks.push(check);
    }
}

/// Reads the stored bytes against the manifest's hash while `pg_restore --list` (or `tar
/// --list`) reads the table of contents.
pub(super) async fn quick_check(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    request: &VerifyRequest,
) -> Result<Check> {
    let listing = crate::process::Unnamed::memory("lifeboat-listing", b"")
        .map_err(|e| Error::io("creating a file for the listing", e))?;
    let tool = match manifest.kind {
        BackupKind::Db => ctx
            .tools
            .tool("pg_restore")
            .arg("--list")
            .arg(format!("--file={}", listing.path().display())),
        BackupKind::Base => crate::process::Tool::new("tar")
            .args(["--list", "--file=-"])
            .arg(format!("--index-file={}", listing.path().display())),
        // An RDB file starts with `REDIS` and its version: `dd` keeps that much.
        BackupKind::Redis => crate::process::Tool::new("dd")
            .args(["bs=9", "count=1", "iflag=fullblock", "status=none"])
            .arg(format!("of={}", listing.path().display())),
    };
    let name = tool.name();
    let child = tool.spawn_writer()?;
    let identities = identities_for(&ctx.config, manifest, request.identity.as_deref())?;
    let delivered = pipeline::download(
        repo.storage(),
        &manifest.data,
        &manifest.expected(),
        identities,
        KeepReading::new(child),
        &ctx.cancel,
    )
    .await;
    let child = match delivered {
        Ok(Delivered::Complete(w) | Delivered::ConsumerClosed(w)) => w.into_inner(),
        // The detail alone: the error the failed check becomes names the backup.
        Err(Error::Integrity { detail, .. } | Error::Mismatch { detail, .. }) => {
            return Ok(Check {
                damaged: true,
                name: "stored bytes".into(),
                passed: false,
                detail,
            })
        }
        Err(e) => return Err(e),
    };
    let finished = tokio::task::spawn_blocking(move || child.finish())
        .await
        .map_err(|e| Error::thread(&name, e))?;
    let toc = listing.read_to_string().unwrap_or_default();
    Ok(match finished {
        Err(e) => Check {
            damaged: false,
            name: "table of contents".into(),
            passed: false,
            detail: e.to_string(),
        },
        Ok(()) => contents_check(manifest, &toc),
    })
}

/// The table of contents lists every table the manifest counted (a dump) or the cluster's
/// control file (a base backup).
pub(super) fn contents_check(manifest: &Manifest, toc: &str) -> Check {
    let missing: Vec<String> = match manifest.kind {
        BackupKind::Db => manifest
            .tables
            .iter()
            .filter(|t| {
                let needle = format!(" TABLE DATA {} {} ", t.schema, t.name);
                !toc.lines().any(|l| l.contains(&needle))
            })
            .map(|t| t.qualified())
            .collect(),
        BackupKind::Base => ["global/pg_control", "PG_VERSION"]
            .iter()
            .filter(|f| !toc.lines().any(|l| l.trim_start_matches("./") == **f))
            .map(|f| f.to_string())
            .collect(),
        BackupKind::Redis if toc.starts_with("REDIS") => Vec::new(),
        BackupKind::Redis => vec!["the RDB header".into()],
    };
    let entries = toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    Check {
        damaged: false,
        name: "stored bytes and table of contents".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("hash as recorded, {entries} entries readable")
        } else {
            format!(
                "hash as recorded, but missing from the contents: {}",
                missing.join(", ")
            )
        },
    }
}

/// Forwards to a child until it stops reading (it has the table of contents), then swallows
/// the rest so that the download still hashes every stored byte.
pub(super) struct KeepReading {
    inner: crate::process::ChildWriter,
    closed: bool,
}

impl KeepReading {
    fn new(inner: crate::process::ChildWriter) -> Self {
        KeepReading {
            inner,
            closed: false,
        }
    }

    fn into_inner(self) -> crate::process::ChildWriter {
        self.inner
    }
}

impl Write for KeepReading {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}
