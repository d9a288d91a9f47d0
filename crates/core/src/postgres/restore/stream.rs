//! Restores streamed as the archive arrives: into `pg_restore --single-transaction`, or (for
//! `--clean`, and for a selection or `--schema-only`, where pg_restore stops reading before
//! the archive's end) through `psql` in one transaction that commits only on the download's
//! verdict on the whole archive.
//! Either way the rows are counted on the way ([`super::checked`]) and a mismatch stops the
//! restore before its end.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::archive::{finish_child, Archive, ProgressWriter};
use super::checked::Checked;
use super::script;
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::conn::ConnInfo;
use crate::process::{Tool, Unnamed};
use crate::repository::manifest::TableRows;
use crate::Context;

/// Streams `archive` into `tool` (a `pg_restore` reading its standard input), checking the
/// rows of `tables` on the way; returns those the archive could not count.
pub(super) async fn into_pg_restore(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    tool: Tool,
    tables: &[&TableRows],
) -> Result<Vec<TableRows>> {
    let (tool, _passfile) = target.apply_to(tool)?;
    let child = tool.spawn_writer()?;
    // A stop kills pg_restore: the download may be blocked feeding it.
    let _stop = child.killer().on_cancel(&ctx.cancel);
    let sink = Checked::new(ProgressWriter::new(child, &archive.task));
    match archive.download(sink, ctx).await? {
        Delivered::Complete(checked) => match checked.settle(&archive.manifest.id, tables).await {
            Ok((w, unchecked)) => finish_child(w.inner).await.map(|()| unchecked),
            Err((w, e)) => {
                w.inner.kill();
                Err(e)
            }
        },
        // pg_restore ended early: it says why, or (a selection, read) the tables are counted
        // in the database.
        Delivered::ConsumerClosed(checked) => finish_child(checked.into_inner().inner)
            .await
            .map(|()| tables.iter().map(|t| (*t).clone()).collect()),
    }
}

/// A restore that first runs `prelude` (drops), all in one transaction: pg_restore (with
/// `--single-transaction`) writes the SQL, lifeboat passes it to psql in a transaction of its
/// own ([`script`]), and commits only when the archive was verified and pg_restore succeeded;
/// otherwise psql is killed, and if lifeboat is, psql's input ends without a commit: either
/// way everything rolls back.
pub(super) async fn through_psql(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    pg_restore: Tool,
    prelude: &str,
    pgoptions: &str,
    tables: &[&TableRows],
) -> Result<Vec<TableRows>> {
    // Its BEGIN and COMMIT around the whole script (none around large objects), which
    // lifeboat replaces with its own.
    let (stdin, mut sql) = pg_restore
        .args(["--single-transaction", "--file=-"])
        .spawn_filter()?;
    let psql = ctx.tools.psql_script().env("PGOPTIONS", pgoptions);
    let prelude = prelude.to_string();
    let (psql, passfile) = target.apply_to(psql)?;
    let mut psql = psql.spawn_writer()?;
    // A stop kills psql: the feeding thread, and through it pg_restore and the download, may
    // be blocked on it.
    let _stop = psql.killer().on_cancel(&ctx.cancel);
    // The download's verdict: whether every stored byte was read and matched its hash, and
    // the rows counted matched the backup's. psql may commit only then, and pg_restore can
    // end before the download has said so (it has what it needs once the held-back end is
    // released), so the feeding side waits for it.
    let (verdict, verdict_in_thread) = std::sync::mpsc::channel::<bool>();
    let failed = Arc::new(AtomicBool::new(false));
    let failed_in_thread = Arc::clone(&failed);
    let feeding = tokio::task::spawn_blocking(move || -> Result<()> {
        let copied = script::feed(&mut sql, &prelude, &mut psql);
        if copied.is_err() {
            failed_in_thread.store(true, Ordering::SeqCst);
        }
        match copied {
            Ok(()) if verdict_in_thread.recv().unwrap_or(false) => {
                match psql.write_all(script::COMMIT) {
                    Ok(()) => psql.finish(),
                    Err(_) => Err(psql.stopped("stopped before the commit")),
                }
            }
            Ok(()) => {
                psql.kill();
                Err(Error::Interrupted(
                    "the restore was stopped before it could commit".into(),
                ))
            }
            Err(e) => match crate::pipeline::from_io(e, "restoring") {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
                    Err(psql.stopped("stopped"))
                }
                other => {
                    psql.kill();
                    Err(other)
                }
            },
        }
    });
    let sink = Checked::draining(ProgressWriter::new(stdin, &archive.task), failed);
    let delivered = match archive.download(sink, ctx).await {
        Ok(Delivered::Complete(checked)) => {
            match checked.settle(&archive.manifest.id, tables).await {
                Ok((stdin, unchecked)) => {
                    drop(stdin);
                    let _ = verdict.send(true);
                    Ok(unchecked)
                }
                Err((stdin, e)) => {
                    let _ = verdict.send(false);
                    drop(stdin);
                    Err(e)
                }
            }
        }
        Ok(Delivered::ConsumerClosed(checked)) => {
            drop(checked);
            let _ = verdict.send(false);
            Ok(tables.iter().map(|t| (*t).clone()).collect())
        }
        Err(e) => {
            let _ = verdict.send(false);
            Err(e)
        }
    };
    let fed = feeding.await.map_err(|e| Error::thread("restore", e));
    drop(passfile);
    match (delivered, fed) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e) | Ok(Err(e))) => Err(e),
        (Ok(unchecked), Ok(Ok(()))) => Ok(unchecked),
    }
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
        return into_pg_restore(ctx, archive, target, tool, &[])
            .await
            .map(drop);
    }
    // pg_restore stops reading once it has the listed entries: what it wrote commits only on
    // the verdict of the whole archive.
    let pgoptions = super::settings::pgoptions(&Default::default());
    through_psql(ctx, archive, target, tool, "", &pgoptions, &[])
        .await
        .map(drop)
}
