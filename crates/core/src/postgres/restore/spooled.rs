//! `--spool`: the verified archive is spooled to an unnamed file (gone whatever happens), its
//! rows counted on the way, its data offsets indexed, then `pg_restore --jobs` reads it.

use std::io::Write;
use std::path::Path;

use super::checked::Checked;
use super::{Archive, ProgressWriter};
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::conn::ConnInfo;
use crate::process::{Tool, Unnamed};
use crate::repository::manifest::TableRows;
use crate::Context;

/// Restores `archive` into `target` with `jobs` workers, spooled in `spool_dir` (else the
/// temporary folder), after checking the rows of `tables` in the archive; returns the tables
/// the archive could not count.
pub(super) async fn restore(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    tool: Tool,
    jobs: u32,
    spool_dir: Option<&Path>,
    tables: &[&TableRows],
) -> Result<Vec<TableRows>> {
    let dir = spool_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let manifest = archive.manifest;
    // A full folder is named, with the size needed and how to choose another.
    let spool_error = |e: Error| {
        match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            Error::NotReady(format!(
                "no space left in `{}` for the spooled archive of a parallel restore ({} needed): free space there, choose another folder with `--spool-dir DIR`, or restore with `--jobs 1`, which needs none",
                dir.display(),
                crate::units::human_bytes(manifest.raw_size)
            ))
        }
        other => other,
    }
    };
    // Unnamed: a decrypted dump is never left in the folder, whatever becomes of lifeboat.
    let spool = Unnamed::on_disk(&dir).map_err(|e| {
        spool_error(Error::io(
            format!("creating a spool file in `{}`", dir.display()),
            e,
        ))
    })?;
    let file = spool
        .file()
        .try_clone()
        .map_err(|e| Error::io("opening the spool file", e))?;
    let delivered = archive
        .download(
            Checked::new(ProgressWriter::new(
                std::io::BufWriter::with_capacity(1 << 20, file),
                &archive.task,
            )),
            ctx,
        )
        .await
        .map_err(spool_error)?;
    let unchecked = match delivered {
        Delivered::Complete(checked) => {
            let (mut w, unchecked) = checked
                .settle(&manifest.id, tables)
                .await
                .map_err(|(_, e)| spool_error(e))?;
            w.flush()
                .map_err(|e| spool_error(Error::io("writing the spool file", e)))?;
            unchecked
        }
        Delivered::ConsumerClosed(_) => {
            return Err(Error::io(
                "writing the spool file",
                std::io::ErrorKind::BrokenPipe.into(),
            ))
        }
    };
    // A streamed archive lacks data offsets; without them every parallel worker reads the
    // file from the top to find its table.
    let indexed = spool
        .file()
        .try_clone()
        .map_err(|e| Error::io("opening the spool file", e))?;
    match tokio::task::spawn_blocking(move || {
        crate::postgres::archive::index_data_offsets(&indexed)
    })
    .await
    {
        Ok(Ok(n)) => tracing::debug!(entries = n, "indexed the spooled archive"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not index the spooled archive; the parallel restore will be slower")
        }
        Err(e) => tracing::warn!(error = %e, "could not index the spooled archive"),
    }
    let tool = tool
        .arg(format!("--dbname={}", target.dbname()))
        .arg(format!("--jobs={jobs}"))
        .arg(spool.path());
    let (tool, passfile) = target.apply_to(tool)?;
    let mut child = tool.spawn_reader()?;
    let killer = child.killer();
    let restoring = tokio::task::spawn_blocking(move || {
        std::io::copy(&mut child, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| crate::pipeline::from_io(e, "running pg_restore"))
    });
    let outcome = tokio::select! {
        done = restoring => done.map_err(|e| Error::thread("restore", e))?,
        () = ctx.cancel.cancelled() => {
            killer.kill();
            Err(Error::Interrupted("restore stopped".into()))
        }
    };
    drop(passfile);
    drop(spool);
    outcome.map(|()| unchecked)
}
