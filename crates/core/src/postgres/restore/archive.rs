//! What every way of restoring works with: a backup's stored archive, ready to stream
//! (checked, decrypted and decompressed on its way), the bytes counted for the progress
//! display, and a child's input closed off the async threads.

use std::io::Write;
use std::sync::Arc;

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pipeline::{self, Delivered, Expected};
use crate::progress::Task;
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::Context;

/// A backup's stored archive, ready to stream: where it is and how it is checked and opened.
pub(crate) struct Archive<'a> {
    pub repo: &'a Repository,
    pub manifest: &'a Manifest,
    pub expected: Expected,
    pub identities: Option<Arc<Identities>>,
    /// What the bytes restored are reported to.
    pub task: Task,
}

impl<'a> Archive<'a> {
    pub fn new(
        repo: &'a Repository,
        manifest: &'a Manifest,
        identities: Option<Arc<Identities>>,
    ) -> Self {
        Archive {
            repo,
            manifest,
            expected: manifest.expected(),
            identities,
            task: Task::silent(),
        }
    }

    /// Streams the decoded archive into `sink`, verified (see [`pipeline::download`]).
    pub async fn download<W: Write + Send + 'static>(
        &self,
        sink: W,
        ctx: &Context,
    ) -> Result<Delivered<W>> {
        pipeline::download(
            self.repo.storage(),
            &self.manifest.data,
            &self.expected,
            self.identities.clone(),
            sink,
            &ctx.cancel,
        )
        .await
    }
}

/// Closes a child's input and waits for it off the async threads.
pub(crate) async fn finish_child(child: crate::process::ChildWriter) -> Result<()> {
    tokio::task::spawn_blocking(move || child.finish())
        .await
        .map_err(|e| Error::thread("restore", e))?
}

/// Counts restored bytes for the progress display while passing them on.
pub(crate) struct ProgressWriter<W> {
    pub(crate) inner: W,
    task: Task,
}

impl<W> ProgressWriter<W> {
    pub(crate) fn new(inner: W, task: &Task) -> Self {
        ProgressWriter {
            inner,
            task: task.clone(),
        }
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
