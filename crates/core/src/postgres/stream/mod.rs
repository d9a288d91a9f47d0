//! `wal-stream`: WAL streamed from a physical replication slot into the repository, so that
//! the recovery point is seconds old instead of a segment (or `archive_timeout`) old.
//!
//! A session connects in replication mode ([`crate::postgres::replication`]), reads the slot
//! (created with `RESERVE_WAL` if missing, so nothing is lost between creation and start) and
//! streams from the first byte of the segment the slot holds. What arrives is kept in memory
//! for the current segment and stored in [`pieces`](crate::wal::pieces) every `[wal]
//! stream_flush_ms` (at once with `stream_sync`); a segment once whole is stored as `wal-push`
//! stores it (the same object, the same content check, so `archive_command` may run beside)
//! and its pieces removed. The flush position told to the server is what is stored, never
//! more: the slot keeps the rest, and with `stream_sync` and the slot in
//! `synchronous_standby_names` a commit returns only once its WAL is in the repository.
//! Storing runs beside receiving ([`Shared`]), so that status updates go out while the
//! storage is slow, in two lanes: pieces (which move the flush position) and whole segments
//! (each after its last piece, so that a synchronous commit never waits behind one); at most
//! [`QUEUED_BYTES`] of whole segments wait in memory. A session that fails is started again
//! from the slot; the end of a timeline starts the next one from its first segment, with its
//! history file stored.

pub mod preflight;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use super::conn::ConnInfo;
use super::replication::{lsn_text, Lsn, Message, Replication, Slot};
use crate::error::{Error, Result};
use crate::repository::{layout, Repository};
use crate::wal::cluster::{self, WalArchive};
use crate::wal::{pieces, push_spool, seal_options, segment_name, store, stored};
use crate::Context;

/// Whole segments that may wait in memory to be stored before receiving pauses: so many
/// bytes of them (at least one segment).
const QUEUED_BYTES: u64 = 64 << 20;
/// Jobs the storing may have waiting.
const JOBS_QUEUED: usize = 16;
/// The longest one store may take before it is tried again.
const STORE_ATTEMPT: Duration = Duration::from_secs(30);
/// A piece is stored once this much arrived, however recent the last one.
const PIECE_BYTES: u64 = 4 << 20;
/// Pieces of a segment after which the next one replaces them.
const MERGE_AFTER: usize = 64;
/// Status updates go out at least this often (well inside `wal_sender_timeout`).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What a stream serves: one cluster's server, into one repository.
pub struct Streamer<'a> {
    ctx: &'a Context,
    repo: &'a Repository,
    cluster: String,
    info: ConnInfo,
    slot: String,
    sync: bool,
    flush_every: Duration,
}

/// The state of the stream and the storing, shared between receiving and storing.
#[derive(Default)]
struct Shared {
    /// The end of what is stored.
    stored: AtomicU64,
    /// Jobs handed to the storing and not done.
    outstanding: AtomicUsize,
    /// Whole segments among them.
    segments: AtomicUsize,
    done: Notify,
    failed: Mutex<Option<Error>>,
    /// The storing of pieces has ended (the session ends).
    pieces_done: std::sync::atomic::AtomicBool,
}

/// A store to do, in order.
struct Job<'r> {
    archive: WalArchive<'r>,
    segment: String,
    what: JobKind,
    /// The stream position once it is done.
    end: Lsn,
}

enum JobKind {
    /// Bytes `start..` of the segment; `merge`: they replace the pieces within them.
    Piece {
        start: u64,
        bytes: Bytes,
        merge: bool,
    },
    /// The whole segment.
    Segment(Bytes),
    /// A timeline's history file.
    History(Vec<u8>),
}

/// How a session ended.
enum Ended {
    Stopped,
    /// The timeline ended: the next one and where it starts.
    Timeline(u32, Lsn),
}

/// `wal_segment_size` as `SHOW` gives it (`16MB`).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = match text[digits.len()..].trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(n * unit)
}

/// Errors a new session does not mend.
fn fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::Config(_)
            | Error::Usage(_)
            | Error::WalRefused { .. }
            | Error::ForeignCluster { .. }
            | Error::DamagedWal { .. }
    )
}

impl<'a> Streamer<'a> {
    pub fn new(ctx: &'a Context, repo: &'a Repository, cluster: &str) -> Result<Streamer<'a>> {
        let (_, pg) = ctx.config.database(Some(cluster))?;
        let info = ConnInfo::new(pg.url.expose(), pg.password.as_ref())?;
        Ok(Streamer {
            ctx,
            repo,
            cluster: cluster.to_string(),
            info,
            slot: ctx.config.wal.stream_slot.clone(),
            sync: ctx.config.wal.stream_sync,
            flush_every: Duration::from_millis(ctx.config.wal.stream_flush_ms.max(1)),
        })
    }

    /// Streams until `ctx.cancel`: sessions one after the other, a failed one started again
    /// after a pause (1 s, doubling to 30 s); an error no new session mends ends it.
    pub async fn run(&self) -> Result<()> {
        let mut resume = None;
        let mut pause = Duration::from_secs(1);
        loop {
            let began = Instant::now();
            match self.session(resume.take()).await {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Timeline(timeline, at)) => {
                    tracing::info!(
                        timeline,
                        at = %lsn_text(at),
                        "the timeline ended; streaming the next one"
                    );
                    resume = Some((timeline, at));
                    continue;
                }
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => {
                    if began.elapsed() > Duration::from_secs(60) {
                        pause = Duration::from_secs(1);
                    }
                    tracing::warn!(error = %e, retry_in_s = pause.as_secs(), "the stream stopped; starting it again from the slot");
                }
            }
            tokio::select! {
                () = self.ctx.cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Creates the slot, holding WAL from the last checkpoint on (what `RESERVE_WAL` keeps
    /// of a physical slot); where it holds from, and on which timeline (the server says: on
    /// a promoted server the checkpoint may be before the switch, on the timeline before).
    async fn create_slot(
        &self,
        conn: &mut Replication,
        system: &super::replication::System,
    ) -> Result<(u32, Lsn)> {
        conn.create_slot(&self.slot).await?;
        match conn.read_slot(&self.slot).await? {
            Slot::At { restart, timeline } => Ok((
                timeline.unwrap_or(system.timeline),
                restart.min(system.position),
            )),
            _ => Err(Error::Postgres {
                context: format!("creating replication slot `{}`", self.slot),
                message: "the slot holds no WAL after its creation".into(),
            }),
        }
    }

    async fn session(&self, resume: Option<(u32, Lsn)>) -> Result<Ended> {
        let mut conn = Replication::connect(&self.info, &self.slot).await?;
        let system = conn.identify_system().await?;
        let shown = conn.show("wal_segment_size").await?;
        let segment_size = parse_size(&shown)
            .filter(|s| s.is_power_of_two())
            .ok_or_else(|| Error::Postgres {
                context: "reading `wal_segment_size`".into(),
                message: format!("`{shown}` is not a segment size"),
            })?;
        let (timeline, from) = match resume {
            Some(at) => at,
            None => match conn.read_slot(&self.slot).await? {
                Slot::At { restart, timeline } => (timeline.unwrap_or(system.timeline), restart),
                Slot::Missing => {
                    let (timeline, at) = self.create_slot(&mut conn, &system).await?;
                    tracing::info!(slot = %self.slot, at = %lsn_text(at), "replication slot created");
                    (timeline, at)
                }
                Slot::Empty => {
                    tracing::error!(slot = %self.slot, "the replication slot was invalidated (`max_slot_wal_keep_size`): WAL since it stopped was not streamed (archive_command still archives it); making it again");
                    conn.drop_slot(&self.slot).await?;
                    self.create_slot(&mut conn, &system).await?
                }
            },
        };
        let history = if timeline > 1 {
            Some(conn.timeline_history(timeline).await?)
        } else {
            None
        };
        let start = from - from % segment_size;
        tracing::info!(
            slot = %self.slot,
            timeline,
            from = %lsn_text(start),
            sync = self.sync,
            "streaming WAL"
        );
        let (mut receiver, mut sender) = conn.start(&self.slot, start, timeline).await?;
        let (messages_tx, mut messages) = mpsc::channel::<Result<Message>>(16);
        let reader = tokio::spawn(async move {
            loop {
                let message = receiver.next().await;
                let last = !matches!(
                    message,
                    Ok(Message::Data { .. } | Message::Keepalive { .. } | Message::CopyDone)
                );
                if messages_tx.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        let _reader = AbortOnDrop(reader);
        let shared = Arc::new(Shared::default());
        shared.stored.store(from, Ordering::SeqCst);
        let (pieces_tx, jobs) = mpsc::channel::<Job<'a>>(JOBS_QUEUED);
        let (segments_tx, segments) = mpsc::channel::<Job<'a>>(JOBS_QUEUED);
        let lanes = Lanes {
            pieces: pieces_tx,
            segments: segments_tx,
        };
        let storing = async {
            let stored = self.store_jobs(jobs, &shared).await;
            shared.pieces_done.store(true, Ordering::SeqCst);
            stored
        };
        let storing_segments = self.store_jobs(segments, &shared);
        let receiving = async {
            let mut state = Receiving {
                timeline,
                segment_size,
                segment_start: start,
                buf: BytesMut::with_capacity(segment_size as usize),
                received: start,
                cut_to: start,
                last_cut: Instant::now(),
                small_pieces: 0,
                merged_to: start,
                archive: None,
                history,
                system_id: system.system_id,
            };
            let mut tick = tokio::time::interval(self.flush_every.min(STATUS_EVERY));
            let mut last_status = Instant::now();
            let ended = loop {
                if let Some(e) = shared.failed.lock().expect("not poisoned").take() {
                    break Err(e);
                }
                let queued = shared.segments.load(Ordering::SeqCst) as u64 * segment_size;
                let room = queued == 0 || queued < QUEUED_BYTES;
                tokio::select! {
                    () = self.ctx.cancel.cancelled() => {
                        state.cut(self, &shared, &lanes, true).await;
                        break Ok(Ended::Stopped);
                    }
                    message = messages.recv(), if room => {
                        match message {
                            None => break Err(Error::Internal("the stream reader stopped".into())),
                            Some(Err(e)) => break Err(e),
                            Some(Ok(Message::Data { start, data })) => {
                                if let Err(e) = state.take(self, start, &data, &shared, &lanes).await {
                                    break Err(e);
                                }
                                state.cut(self, &shared, &lanes, false).await;
                            }
                            Some(Ok(Message::Keepalive { reply, .. })) => {
                                if reply {
                                    let flush = shared.stored.load(Ordering::SeqCst);
                                    if let Err(e) = sender.status(state.received, flush, false).await {
                                        break Err(e);
                                    }
                                    last_status = Instant::now();
                                }
                            }
                            Some(Ok(Message::CopyDone)) => {
                                // The timeline ended: what was received is stored, and the
                                // slot told so, before the server hears the answer.
                                state.cut(self, &shared, &lanes, true).await;
                                while shared.outstanding.load(Ordering::SeqCst) > 0
                                    && shared.failed.lock().expect("not poisoned").is_none()
                                    && !self.ctx.cancel.is_cancelled()
                                {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                let flush = shared.stored.load(Ordering::SeqCst);
                                if let Err(e) = sender.status(state.received, flush, false).await {
                                    break Err(e);
                                }
                                if let Err(e) = sender.done().await {
                                    break Err(e);
                                }
                            }
                            Some(Ok(Message::TimelineEnd(next))) => {
                                break match next {
                                    Some((t, at)) => Ok(Ended::Timeline(t, at)),
                                    None => Err(Error::Unreachable {
                                        what: "the WAL stream".into(),
                                        detail: "the server ended it".into(),
                                    }),
                                };
                            }
                        }
                    }
                    () = shared.done.notified() => {
                        let flush = shared.stored.load(Ordering::SeqCst);
                        if let Err(e) = sender.status(state.received, flush, false).await {
                            break Err(e);
                        }
                        last_status = Instant::now();
                        state.cut(self, &shared, &lanes, false).await;
                    }
                    _ = tick.tick() => {
                        state.cut(self, &shared, &lanes, false).await;
                        if last_status.elapsed() >= STATUS_EVERY {
                            let flush = shared.stored.load(Ordering::SeqCst);
                            if let Err(e) = sender.status(state.received, flush, false).await {
                                break Err(e);
                            }
                            last_status = Instant::now();
                        }
                    }
                }
            };
            drop(lanes);
            ended
        };
        let (ended, stored, stored_segments) = tokio::join!(receiving, storing, storing_segments);
        stored?;
        stored_segments?;
        ended
    }

    /// Stores the jobs of one lane in order; each is tried again (every store is idempotent)
    /// until it is done, the stream is stopped, or it fails in a way trying again does not
    /// mend. Pieces (and history files) advance the flush position; whole segments, in a lane
    /// of their own, never hold a piece (a synchronous commit) behind them.
    async fn store_jobs(&self, mut jobs: mpsc::Receiver<Job<'a>>, shared: &Shared) -> Result<()> {
        while let Some(job) = jobs.recv().await {
            let mut pause = Duration::from_millis(200);
            loop {
                let attempt =
                    tokio::time::timeout(STORE_ATTEMPT, self.store_job(&job, shared)).await;
                match attempt {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) if fatal(&e) => {
                        tracing::error!(wal = %job.segment, error = %e, "cannot store streamed WAL");
                        *shared.failed.lock().expect("not poisoned") = Some(e);
                        shared.done.notify_one();
                        return Ok(());
                    }
                    outcome => {
                        let error = match outcome {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {} s", STORE_ATTEMPT.as_secs()),
                        };
                        tracing::warn!(wal = %job.segment, error, "storing streamed WAL failed; trying again");
                    }
                }
                if self.ctx.cancel.is_cancelled() && pause > Duration::from_secs(2) {
                    tracing::warn!(wal = %job.segment, "stopping with streamed WAL not stored; the slot keeps it for the next start");
                    return Ok(());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            if matches!(job.what, JobKind::Segment(_)) {
                shared.segments.fetch_sub(1, Ordering::SeqCst);
            } else {
                shared.stored.fetch_max(job.end, Ordering::SeqCst);
                shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            shared.done.notify_one();
        }
        Ok(())
    }

    /// Stores WAL file `name` whole, as `wal-push` does.
    async fn store_whole(&self, name: &str, raw: Vec<u8>) -> Result<()> {
        let spool = push_spool(self.ctx, self.repo, &self.cluster)?;
        store(self.ctx, self.repo, &self.cluster, &spool, name, raw).await
    }

    async fn store_job(&self, job: &Job<'_>, shared: &Shared) -> Result<()> {
        match &job.what {
            JobKind::Piece {
                start,
                bytes,
                merge,
            } => {
                let end = start + bytes.len() as u64;
                let seal = seal_options(self.ctx);
                let encrypted = !seal.recipients.is_empty();
                let key =
                    layout::wal_piece(job.archive.prefix(), &job.segment, *start, end, encrypted);
                let name = pieces::sealed_name(&job.segment, *start, end);
                let raw = bytes.clone();
                let sealed = tokio::task::spawn_blocking(move || stored::seal(&name, &raw, &seal))
                    .await
                    .map_err(|e| Error::thread("compression", e))??;
                // A piece stored again (after a restart) holds the same bytes.
                job.archive.storage().write(&key, sealed).await?;
                tracing::debug!(wal = %job.segment, start, end, merge, "piece stored");
                if *merge {
                    for piece in pieces::list(&job.archive, &job.segment).await? {
                        if piece.start >= *start && piece.end <= end && piece.key != key {
                            job.archive.storage().delete(&piece.key).await?;
                        }
                    }
                }
            }
            JobKind::Segment(bytes) => {
                self.store_whole(&job.segment, bytes.to_vec()).await?;
                // Its last piece first, so that none is stored after the others are removed
                // (if the storing of pieces ended without it, the next stream removes them).
                while shared.stored.load(Ordering::SeqCst) < job.end {
                    if shared.pieces_done.load(Ordering::SeqCst) {
                        tracing::info!(wal = %job.segment, "streamed segment stored");
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                pieces::remove(&job.archive, &job.segment).await?;
                tracing::info!(wal = %job.segment, "streamed segment stored");
            }
            JobKind::History(content) => {
                self.store_whole(&job.segment, content.clone()).await?;
            }
        }
        Ok(())
    }
}

/// Tidies the pieces of segments before `current`: those of a segment stored whole since (a
/// stream stopped before its segment was, and `archive_command` stored it) are removed; a
/// segment whose pieces hold all of it (a stream stopped between its last piece and storing
/// it whole) is stored whole, then its pieces removed. Pieces of a segment stored nowhere
/// else are kept.
async fn tidy(
    ctx: &Context,
    repo: &Repository,
    cluster: &str,
    archive: &WalArchive<'_>,
    current: &str,
) -> Result<()> {
    for segment in pieces::segments_with_pieces(archive).await? {
        if segment.as_str() >= current {
            continue;
        }
        if crate::wal::stored_at(archive, &segment).await?.is_none() {
            let Some((raw, covered)) = pieces::assemble(ctx, archive, &segment).await? else {
                continue;
            };
            if covered != raw.len() as u64 {
                continue;
            }
            let spool = push_spool(ctx, repo, cluster)?;
            store(ctx, repo, cluster, &spool, &segment, raw).await?;
        }
        pieces::remove(archive, &segment).await?;
        tracing::info!(wal = %segment, "removed the pieces of a segment stored whole");
    }
    Ok(())
}

/// Where jobs go: pieces (and history files) in order, whole segments beside them.
struct Lanes<'r> {
    pieces: mpsc::Sender<Job<'r>>,
    segments: mpsc::Sender<Job<'r>>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The receiving side of a session.
struct Receiving<'r> {
    timeline: u32,
    segment_size: u64,
    /// Where the segment being received starts, and its bytes so far.
    segment_start: Lsn,
    buf: BytesMut,
    received: Lsn,
    /// The end of what was handed to the storing.
    cut_to: Lsn,
    last_cut: Instant,
    /// Pieces of the segment since the last merge, and where it ended: every
    /// [`MERGE_AFTER`] pieces, one piece replaces them, so that a segment assembled at
    /// recovery is a few reads, however often it was stored.
    small_pieces: usize,
    merged_to: Lsn,
    /// Known once the first page (its system identifier and version) arrived.
    archive: Option<WalArchive<'r>>,
    /// The timeline's history file, stored first.
    history: Option<(String, Vec<u8>)>,
    system_id: u64,
}

impl<'r> Receiving<'r> {
    fn segment(&self) -> String {
        segment_name(
            self.timeline,
            self.segment_start / self.segment_size,
            self.segment_size,
        )
    }

    async fn hand(&self, shared: &Shared, jobs: &Lanes<'r>, job: Job<'r>) {
        if matches!(job.what, JobKind::Segment(_)) {
            shared.segments.fetch_add(1, Ordering::SeqCst);
            if jobs.segments.send(job).await.is_err() {
                shared.segments.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        shared.outstanding.fetch_add(1, Ordering::SeqCst);
        if jobs.pieces.send(job).await.is_err() {
            shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes WAL `data` that begins at `start`.
    async fn take(
        &mut self,
        streamer: &Streamer<'r>,
        start: Lsn,
        data: &[u8],
        shared: &Shared,
        jobs: &Lanes<'r>,
    ) -> Result<()> {
        if start > self.received {
            return Err(Error::Unreachable {
                what: "the WAL stream".into(),
                detail: format!(
                    "it skipped from {} to {}",
                    lsn_text(self.received),
                    lsn_text(start)
                ),
            });
        }
        let skip = (self.received - start) as usize;
        let mut data = data.get(skip..).unwrap_or_default();
        while !data.is_empty() {
            let room = (self.segment_size as usize) - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.received += take as u64;
            if self.archive.is_none() {
                self.find_archive(streamer, shared, jobs).await?;
            }
            if self.buf.len() as u64 == self.segment_size {
                // Its last bytes as a piece: the flush position moves with pieces only.
                self.cut(streamer, shared, jobs, true).await;
                let bytes = self.buf.split().freeze();
                self.buf.reserve(self.segment_size as usize);
                let job = Job {
                    archive: self.archive.clone().ok_or_else(|| {
                        Error::Internal("a whole segment without its archive".into())
                    })?,
                    segment: self.segment(),
                    what: JobKind::Segment(bytes),
                    end: self.received,
                };
                self.hand(shared, jobs, job).await;
                self.segment_start = self.received;
                self.cut_to = self.received;
                self.merged_to = self.received;
                self.small_pieces = 0;
            }
        }
        Ok(())
    }

    /// The archive of the cluster's generation the first page names; what is stored of the
    /// first segment already (its pieces before a restart) is not stored again.
    async fn find_archive(
        &mut self,
        streamer: &Streamer<'r>,
        shared: &Shared,
        jobs: &Lanes<'r>,
    ) -> Result<()> {
        let Some(header) = crate::wal::segment::SegmentHeader::read(&self.buf) else {
            if self.buf.len() >= 64 {
                return Err(Error::DamagedWal {
                    name: self.segment(),
                    detail: "the stream does not begin with a WAL page header".into(),
                });
            }
            return Ok(());
        };
        if header.system_id != self.system_id {
            return Err(Error::Internal(
                "the stream's pages name another system than the server".into(),
            ));
        }
        let spool = push_spool(streamer.ctx, streamer.repo, &streamer.cluster)?;
        let archive = cluster::route(
            streamer.repo,
            Some(&spool),
            &streamer.cluster,
            cluster::sole(streamer.ctx, &streamer.cluster),
            Some((header.system_id, header.magic)),
            "wal-stream",
        )
        .await?;
        let segment = self.segment();
        let ranges: Vec<(u64, u64)> = pieces::list(&archive, &segment)
            .await?
            .iter()
            .map(|p| (p.start, p.end))
            .collect();
        self.cut_to = self.segment_start + pieces::coverage(&ranges);
        self.merged_to = self.cut_to;
        if let Some((name, content)) = self.history.take() {
            let job = Job {
                archive: archive.clone(),
                segment: name,
                what: JobKind::History(content),
                end: shared.stored.load(Ordering::SeqCst),
            };
            self.hand(shared, jobs, job).await;
        }
        // Best effort: what is left is tidied by the next start.
        if let Err(e) = tidy(
            streamer.ctx,
            streamer.repo,
            &streamer.cluster,
            &archive,
            &segment,
        )
        .await
        {
            tracing::warn!(error = %e, "could not tidy the pieces of earlier segments");
        }
        self.archive = Some(archive);
        Ok(())
    }

    /// Hands what was received since the last piece to the storing: when the storing is idle,
    /// at once with `stream_sync` (or `now`), else once `stream_flush_ms` passed or
    /// [`PIECE_BYTES`] arrived.
    async fn cut(&mut self, streamer: &Streamer<'_>, shared: &Shared, jobs: &Lanes<'r>, now: bool) {
        let Some(archive) = &self.archive else { return };
        if self.received <= self.cut_to
            || (!now && shared.outstanding.load(Ordering::SeqCst) > 0)
            || !(now
                || streamer.sync
                || self.last_cut.elapsed() >= streamer.flush_every
                || self.received - self.cut_to >= PIECE_BYTES)
        {
            return;
        }
        let merge = self.small_pieces + 1 >= MERGE_AFTER && self.merged_to < self.cut_to;
        let from = if merge {
            self.small_pieces = 0;
            self.merged_to - self.segment_start
        } else {
            self.small_pieces += 1;
            self.cut_to - self.segment_start
        } as usize;
        if merge {
            self.merged_to = self.received;
        }
        let job = Job {
            archive: archive.clone(),
            segment: self.segment(),
            what: JobKind::Piece {
                start: from as u64,
                bytes: Bytes::copy_from_slice(&self.buf[from..]),
                merge,
            },
            end: self.received,
        };
        self.cut_to = self.received;
        self.last_cut = Instant::now();
        self.hand(shared, jobs, job).await;
    }
}

/// What `wal-stream --dry-run` (and `doctor`) say of a stream before it runs.
#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    /// WAL written per second, measured.
    pub write_rate_bytes_per_s: f64,
    pub flush_ms: u64,
    pub segment_size: u64,
    /// Objects written per month (pieces and whole segments): R2 Class A requests.
    pub requests_per_month: u64,
    /// At R2's Class A price (4.50 USD per million, after the free million).
    pub usd_per_month: f64,
}

/// The requests a stream makes per month at `rate` bytes of WAL per second.
pub fn forecast(rate: f64, flush_ms: u64, segment_size: u64, sync: bool) -> Forecast {
    const MONTH: f64 = 30.0 * 86_400.0;
    // A piece per interval while WAL is written (a server with any traffic writes some every
    // interval); in sync mode one per commit group, at most one per round trip (~20 ms).
    let interval = if sync {
        0.02
    } else {
        flush_ms.max(1) as f64 / 1000.0
    };
    let pieces = if rate > 0.0 { MONTH / interval } else { 0.0 };
    // Each whole segment: one write, one list (its pieces), one read is free (Class B).
    let segments = rate * MONTH / segment_size as f64 * 2.0;
    let requests = (pieces + segments).round() as u64;
    Forecast {
        write_rate_bytes_per_s: rate,
        flush_ms,
        segment_size,
        requests_per_month: requests,
        usd_per_month: (requests.saturating_sub(1_000_000) as f64) * 4.5 / 1e6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_read_as_show_gives_them() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("64kB"), Some(64 << 10));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn the_forecast_counts_a_piece_per_interval_and_each_segment() {
        let idle = forecast(0.0, 1000, 16 << 20, false);
        assert_eq!(idle.requests_per_month, 0);
        let busy = forecast(1_048_576.0, 1000, 16 << 20, false);
        // 2 592 000 pieces + 2 × 162 000 segments.
        assert_eq!(busy.requests_per_month, 2_592_000 + 324_000);
        assert!((busy.usd_per_month - (2_916_000.0 - 1e6) * 4.5 / 1e6).abs() < 1e-6);
        let slower = forecast(1_048_576.0, 10_000, 16 << 20, false);
        assert_eq!(slower.requests_per_month, 259_200 + 324_000);
        assert!(forecast(1.0, 1000, 16 << 20, true).requests_per_month > busy.requests_per_month);
    }
}
