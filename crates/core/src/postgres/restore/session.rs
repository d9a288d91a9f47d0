//! A session of the pipelined restore ([`super::pipelined`]): one connection to the target,
//! with the restore's settings, used from a blocking thread (the one that reads the spool as
//! it arrives). A piece's `COPY` data goes to the server as the protocol's copy data, with no
//! `psql` between: one process, one pipe and one copy of every byte fewer. A stop (the
//! restore's cancellation) ends what the session waits for, asks the server to cancel what it
//! runs, and drops the connection: an unfinished `COPY` is failed, its transaction rolled back.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio::runtime::Handle;
use tokio_postgres::{Client, CopyInSink};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::postgres::conn::ConnInfo;

/// How much `COPY` data is gathered before it is sent (in one copy-data message).
const SEND: usize = 256 << 10;

/// How long a stop waits for the server to take its cancel request.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) struct Session {
    client: Client,
    target: ConnInfo,
    runtime: Handle,
    cancel: CancellationToken,
}

impl Session {
    /// Connects to `target` with `options` (`-c name=value ...`, as `PGOPTIONS`); a stop of
    /// `cancel` ends its work. Runs on the runtime its blocking use goes back to.
    pub(super) async fn connect(
        target: &ConnInfo,
        options: &str,
        cancel: &CancellationToken,
    ) -> Result<Session> {
        let client = target
            .connect_with_options("the target database", options)
            .await?;
        Ok(Session {
            client,
            target: target.clone(),
            runtime: Handle::current(),
            cancel: cancel.clone(),
        })
    }

    /// Runs `sql` (statements, in the simple protocol); `doing` names it in errors.
    pub(super) fn execute(&self, sql: &str, doing: &str) -> Result<()> {
        self.wait(self.client.batch_execute(sql), doing)
    }

    /// Runs `copy` (a `COPY ... FROM stdin` statement) with the data `fill` writes, in a
    /// transaction of its own. A failure of `fill` that is not the server's is passed to
    /// `unreadable`.
    pub(super) fn copy(
        &self,
        copy: &str,
        fill: impl FnOnce(&mut CopyWriter<'_>) -> io::Result<()>,
        unreadable: impl FnOnce(io::Error) -> Error,
    ) -> Result<()> {
        const DOING: &str = "loading a table";
        let sink = self.wait(self.client.copy_in::<_, Bytes>(copy), DOING)?;
        let mut writer = CopyWriter {
            session: self,
            sink: Box::pin(sink),
            buf: BytesMut::with_capacity(SEND),
            failure: None,
        };
        match fill(&mut writer) {
            // Dropped unfinished, the sink fails the `COPY`.
            Err(e) => Err(writer.failure.take().unwrap_or_else(|| unreadable(e))),
            Ok(()) => {
                let CopyWriter { mut sink, buf, .. } = writer;
                if !buf.is_empty() {
                    self.wait(sink.send(buf.freeze()), DOING)?;
                }
                self.wait(sink.as_mut().finish(), DOING).map(|_rows| ())
            }
        }
    }

    /// Waits for `work` from this blocking thread, or for a stop: then the server is asked to
    /// cancel what it runs (an index build would otherwise go on to its end).
    fn wait<T>(
        &self,
        work: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
        doing: &str,
    ) -> Result<T> {
        self.runtime.block_on(async {
            tokio::select! {
                done = work => done.map_err(|e| Error::postgres(doing, &e)),
                () = self.cancel.cancelled() => {
                    // A server that does not answer does not hold the stop up.
                    let cancel = self.target.cancel(&self.client);
                    let _ = tokio::time::timeout(CANCEL_WAIT, cancel).await;
                    Err(Error::Interrupted("the restore stopped".into()))
                }
            }
        })
    }
}

/// The data of one `COPY`, sent to the server in messages of [`SEND`] bytes.
pub(super) struct CopyWriter<'a> {
    session: &'a Session,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    /// What the server or the connection said when a send failed.
    failure: Option<Error>,
}

impl Write for CopyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND {
            let full = std::mem::replace(&mut self.buf, BytesMut::with_capacity(SEND));
            if let Err(e) = self
                .session
                .wait(self.sink.send(full.freeze()), "loading a table")
            {
                self.failure = Some(e);
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        Ok(data.len())
    }

    /// Data is sent in whole messages, and the rest when the `COPY` ends.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
