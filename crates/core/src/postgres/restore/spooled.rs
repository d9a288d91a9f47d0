//! `--spool`: the verified archive is spooled to an unnamed file (gone whatever happens), its
//! rows counted on the way, its data offsets indexed, then `pg_restore --jobs` reads it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::archive::{Archive, ProgressWriter};
use super::checked::Checked;
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::conn::ConnInfo;
use crate::process::{Tool, Unnamed};
use crate::repository::manifest::TableRows;
use crate::Context;

/// An unnamed spool file: a decrypted dump is never left in its folder, whatever becomes of
/// lifeboat.
pub(super) struct Spool {
    file: Unnamed,
    dir: PathBuf,
    /// The size of the archive it is for, named when the folder fills up.
    needed: u64,
}

impl Spool {
    /// A spool file in `dir` (else the temporary folder) for an archive of `needed` bytes.
    pub(super) fn create(dir: Option<&Path>, needed: u64) -> Result<Spool> {
        let dir = Spool::folder(dir);
        let file = Unnamed::on_disk(&dir).map_err(|e| {
            spool_error(
                &dir,
                needed,
                Error::io(format!("creating a spool file in `{}`", dir.display()), e),
            )
        })?;
        Ok(Spool { file, dir, needed })
    }

    /// The folder a spool file goes in: `dir`, else the temporary folder.
    pub(super) fn folder(dir: Option<&Path>) -> PathBuf {
        dir.map_or_else(std::env::temp_dir, Path::to_path_buf)
    }

    /// Another handle on the file (its position shared with the others).
    pub(super) fn handle(&self) -> Result<std::fs::File> {
        self.file
            .file()
            .try_clone()
            .map_err(|e| Error::io("opening the spool file", e))
    }

    /// `e`, or, for a full folder, what is needed and how to choose another.
    pub(super) fn error(&self, e: Error) -> Error {
        spool_error(&self.dir, self.needed, e)
    }

    /// Runs `tool` (`pg_restore`) with `jobs` workers on the spooled archive, after writing
    /// its data offsets into its table of contents if it is to read data (a streamed archive
    /// lacks them; without them every worker reads the file from the top to find its table).
    pub(super) async fn pg_restore(
        &self,
        ctx: &Context,
        target: &ConnInfo,
        tool: Tool,
        jobs: u32,
        reads_data: bool,
    ) -> Result<()> {
        if reads_data {
            self.index().await;
        }
        let tool = tool
            .arg(format!("--dbname={}", target.dbname()))
            .arg(format!("--jobs={jobs}"))
            .arg(self.file.path());
        let (tool, _passfile) = target.apply_to(tool)?;
        let mut child = tool.spawn_reader()?;
        let killer = child.killer();
        let restoring = tokio::task::spawn_blocking(move || {
            std::io::copy(&mut child, &mut std::io::sink())
                .map(|_| ())
                .map_err(|e| crate::pipeline::from_io(e, "running pg_restore"))
        });
        tokio::select! {
            done = restoring => done.map_err(|e| Error::thread("restore", e))?,
            () = ctx.cancel.cancelled() => {
                killer.kill();
                Err(Error::Interrupted("restore stopped".into()))
            }
        }
    }

    /// Writes where the data `blocks` start (dump id, offset) into the spooled archive's
    /// table of contents, as its reader saw them go by, for a `pg_restore` that reads them
    /// where the rest of the data is no longer there to be scanned.
    pub(super) async fn set_offsets(&self, blocks: &[(i64, u64)]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let (file, blocks) = (self.handle()?, blocks.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            crate::postgres::archive::set_data_offsets(&file, &blocks)
        })
        .await
        .map_err(|e| Error::thread("restore", e))?
        .map_err(|e| Error::io("writing data offsets into the spooled archive", e))?;
        tracing::debug!(
            entries = written,
            "data offsets written into the spooled archive"
        );
        Ok(())
    }

    /// Writes the archive's data offsets into its table of contents; a failure only slows
    /// the restore.
    async fn index(&self) {
        let indexed = match self.handle() {
            Ok(file) => file,
            Err(e) => return tracing::warn!(error = %e, "could not index the spooled archive"),
        };
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
    }
}

fn spool_error(dir: &Path, needed: u64, e: Error) -> Error {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            Error::NotReady(format!(
                "no space left in `{}` for the spooled archive of a parallel restore ({} needed): free space there, choose another folder with `--spool-dir DIR`, or restore with `--jobs 1`, which needs none",
                dir.display(),
                crate::units::human_bytes(needed)
            ))
        }
        other => other,
    }
}

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
    let spool = Spool::create(spool_dir, archive.manifest.raw_size)?;
    let delivered = archive
        .download(
            Checked::new(ProgressWriter::new(
                std::io::BufWriter::with_capacity(1 << 20, spool.handle()?),
                &archive.task,
            )),
            ctx,
        )
        .await
        .map_err(|e| spool.error(e))?;
    let unchecked = match delivered {
        Delivered::Complete(checked) => {
            let (mut w, unchecked) = checked
                .settle(&archive.manifest.id, tables)
                .await
                .map_err(|(_, e)| spool.error(e))?;
            w.flush()
                .map_err(|e| spool.error(Error::io("writing the spool file", e)))?;
            unchecked
        }
        Delivered::ConsumerClosed(_) => {
            return Err(Error::io(
                "writing the spool file",
                std::io::ErrorKind::BrokenPipe.into(),
            ))
        }
    };
    spool.pg_restore(ctx, target, tool, jobs, true).await?;
    Ok(unchecked)
}
