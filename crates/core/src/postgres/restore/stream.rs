//! One-job restores, streamed: into `pg_restore --single-transaction`, or (for `--clean`)
//! through `psql` in one transaction that commits only on the download's verdict.

use super::{finish_child, Archive, ProgressWriter};
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::conn::ConnInfo;
use crate::process::Tool;
use crate::Context;

/// Streams `archive` into `tool` (a `pg_restore` reading its standard input).
pub(super) async fn into_pg_restore(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    tool: Tool,
) -> Result<()> {
    let (tool, _passfile) = target.apply_to(tool)?;
    let child = tool.spawn_writer()?;
    match archive
        .download(ProgressWriter::new(child, &archive.task), ctx)
        .await
    {
        Ok(Delivered::Complete(w) | Delivered::ConsumerClosed(w)) => finish_child(w.inner).await,
        Err(e) => Err(e),
    }
}

/// A restore that first runs `prelude` (drops), all in one transaction: pg_restore writes the
/// SQL, lifeboat passes it to psql, and psql is allowed to commit only when the archive was
/// verified and pg_restore succeeded; otherwise psql is killed and everything rolls back.
pub(super) async fn through_psql(
    ctx: &Context,
    archive: &Archive<'_>,
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
    let delivered = archive
        .download(ProgressWriter::new(stdin, &archive.task), ctx)
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
    let fed = feeding.await.map_err(|e| Error::thread("restore", e))?;
    drop(passfile);
    delivered.and(fed)
}
