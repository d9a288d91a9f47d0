//! `--create --spool`: a restore whose stages overlap. The archive is spooled to an unnamed
//! file as it arrives; meanwhile lifeboat reads it from the spool as far as it has arrived:
//! the table of contents first, whose pre-data (schemas, types, tables) `pg_restore
//! --section=pre-data` restores at once in one transaction, then each table's `COPY` data,
//! cut into pieces of whole rows, each handed as soon as it has arrived to one of N sessions
//! (connections of lifeboat's own, [`super::session`]) that load it while later rows are
//! still arriving: a large table loads on every session, not on one as with `pg_restore
//! --jobs`. As soon as every piece of a table is in, its indexes and its primary key, unique
//! and exclusion constraints are built by the sessions too, ahead of the pieces still
//! waiting, while later tables load ([`super::work`]). Once the archive is verified and its
//! rows counted, `pg_restore -L --jobs N` restores the rest (sequences' values, large
//! objects, foreign keys, triggers, materialized views, comments, privileges) from the spool.
//!
//! The spool holds a window of the archive, not all of it ([`super::arrival`]): a piece's
//! bytes leave the disk once it is loaded, and the download waits while the sessions are
//! more than [`window`] behind. What `pg_restore` reads afterwards (the table of contents,
//! large objects) stays; the reader tells it where each block it needs starts.
//!
//! Pieces commit one by one, before the archive is verified: this path is taken only into the
//! staging database of `--create` ([`super::created`]), which nobody sees and which is dropped
//! unless the whole restore succeeds.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::archive::{Archive, ProgressWriter};
use super::arrival::{is_stop, Arrival, Frontier, Phase, Tail};
use super::checked::Checked;
use super::session::Session;
use super::spooled::Spool;
use super::work::{Index, Job, Work};
use crate::error::{Error, Result};
use crate::pipeline::Delivered;
use crate::postgres::archive::{copy_chunks, Blocks, Entry};
use crate::postgres::conn::ConnInfo;
use crate::process::{Tool, Unnamed};
use crate::repository::manifest::TableRows;
use crate::Context;

/// Settings of the sessions that load tables, after the archive's own (encoding, standard
/// strings, search path), as `pg_restore` sets its own sessions up; commits need not wait for
/// the disk, as nobody sees the database before the restore ends.
const SESSION: &str = "SET statement_timeout = 0;\nSET lock_timeout = 0;\n\
SET idle_in_transaction_session_timeout = 0;\nSET check_function_bodies = false;\n\
SET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\
SET default_tablespace = '';\nSET synchronous_commit = off;\n";

/// The bytes of `COPY` data a piece holds at least (but its last): an archive's raw size
/// shared out four pieces per session, within 1 and 64 MiB, so that the sessions share even a
/// table that is most of the database, and a piece's transaction stays small.
pub(super) fn piece_size(raw_size: u64, jobs: u32) -> u64 {
    const MIB: u64 = 1 << 20;
    (raw_size / (4 * u64::from(jobs.max(1)))).clamp(MIB, 64 * MIB)
}

/// The bytes of the archive's table data the spool may hold (arrived and not yet loaded)
/// before the download waits: a piece per session and one more being read, and 32 MiB at
/// least. With pieces of at most 64 MiB, a restore on 4 sessions holds at most
/// 320 MiB of table data on disk whatever the size of the database; a smaller one, at most
/// half its archive or 32 MiB.
pub(super) fn window(piece: u64, jobs: u32) -> u64 {
    (piece * (u64::from(jobs.max(1)) + 1)).max(32 << 20)
}

/// What the sessions did while the archive arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loading {
    /// The `COPY` transactions the tables' data was loaded in.
    pub pieces: u64,
    /// The indexes (and primary key, unique and exclusion constraints) built.
    pub indexes: u64,
    /// The most disk the spool file took.
    pub spool_peak: u64,
}

/// Restores `archive` into `target` (a staging database) with `jobs` sessions, spooled in
/// `spool_dir`, checking the rows of `tables` in the archive; returns the tables the archive
/// could not count, and what the sessions did (`None`: `pg_restore` did it all).
/// `pg_restore` is the tool with the restore's options; the sessions get `pgoptions`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn restore(
    ctx: &Context,
    archive: &Archive<'_>,
    target: &ConnInfo,
    pg_restore: Tool,
    pgoptions: &str,
    jobs: u32,
    spool_dir: Option<&Path>,
    tables: &[&TableRows],
) -> Result<(Vec<TableRows>, Option<Loading>)> {
    let begun = std::time::Instant::now();
    let piece = piece_size(archive.manifest.raw_size, jobs);
    let window = window(piece, jobs);
    // What a full folder is told is needed: the window and the piece being read.
    let spool = Spool::create(spool_dir, archive.manifest.raw_size.min(window + piece))?;
    let frontier = Arc::new(Frontier::new(window));
    let (pre_data, _pre_pass) = target.apply_to(
        pg_restore
            .clone()
            .arg("--section=pre-data")
            .arg("--single-transaction")
            .arg(format!("--dbname={}", target.dbname())),
    )?;
    let sessions = futures::future::try_join_all(
        (0..jobs).map(|_| Session::connect(target, pgoptions, &ctx.cancel)),
    )
    .await?;
    let loader = Loader {
        spool: Arc::new(spool.handle()?),
        frontier: Arc::clone(&frontier),
        pre_data,
        lister: ctx.tools.tool("pg_restore"),
        sessions,
        piece,
        cancel: ctx.cancel.clone(),
    };
    let loading = tokio::task::spawn_blocking(move || loader.run());

    let arrival = Arrival {
        file: spool.handle()?,
        frontier: Arc::clone(&frontier),
        cancel: ctx.cancel.clone(),
    };
    let sink = Checked::new(ProgressWriter::new(
        BufWriter::with_capacity(1 << 20, arrival),
        &archive.task,
    ));
    let downloaded = match archive.download(sink, ctx).await {
        Ok(Delivered::Complete(checked)) => {
            match checked.settle(&archive.manifest.id, tables).await {
                Ok((mut w, unchecked)) => w
                    .flush()
                    .map(|()| unchecked)
                    .map_err(|e| Error::io("writing the spool file", e)),
                Err((_, e)) => Err(e),
            }
        }
        // The loading stopped: it says why.
        Ok(Delivered::ConsumerClosed(_)) => Err(Error::Interrupted("the load stopped".into())),
        Err(e) => Err(e),
    };
    frontier.end(if downloaded.is_ok() {
        Phase::Complete
    } else {
        Phase::Failed
    });
    let loaded = loading.await.map_err(|e| Error::thread("restore", e))?;
    let (unchecked, loaded) = match (downloaded, loaded) {
        // The download ended because the loading failed: the loading says why.
        (Err(Error::Interrupted(_)), Err(e)) if !ctx.cancel.is_cancelled() => {
            return Err(spool.error(e))
        }
        (Err(e), _) | (Ok(_), Err(e)) => return Err(spool.error(e)),
        (Ok(unchecked), Ok(loaded)) => (unchecked, loaded),
    };
    match loaded {
        // An archive lifeboat cannot read block by block: pg_restore restores all of it.
        None => {
            spool
                .pg_restore(ctx, target, pg_restore, jobs, true)
                .await?;
            Ok((unchecked, None))
        }
        Some(Loaded {
            rest,
            data_left,
            mut loading,
        }) => {
            loading.spool_peak = frontier.disk_peak();
            tracing::info!(
                seconds = (begun.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                pieces = loading.pieces,
                indexes = loading.indexes,
                spool_peak = %crate::units::human_bytes(loading.spool_peak),
                "tables loaded and checked, indexes built; restoring the rest"
            );
            let list = Unnamed::memory("lifeboat-restore-list", rest.as_bytes())
                .map_err(|e| Error::io("writing the restore list", e))?;
            let tool = pg_restore.arg(format!("--use-list={}", list.path().display()));
            // The loaded tables' data is gone from the spool: pg_restore must not look for
            // the blocks it reads, but be told where they start.
            spool.set_offsets(&data_left).await?;
            spool.pg_restore(ctx, target, tool, jobs, false).await?;
            Ok((unchecked, Some(loading)))
        }
    }
}

/// What the loader left to `pg_restore`: the `-L` list of entries neither in the pre-data nor
/// loaded nor built, and the data blocks in the archive it did not load (large objects), as
/// their dump id and where they start; and what the sessions did.
struct Loaded {
    rest: String,
    data_left: Vec<(i64, u64)>,
    loading: Loading,
}

/// The reading side: pre-data, then each table's data to a session.
struct Loader {
    spool: Arc<File>,
    frontier: Arc<Frontier>,
    /// `pg_restore --section=pre-data` into the target, to be given the archive's head.
    pre_data: Tool,
    /// `pg_restore`, to list the archive's pre-data entries.
    lister: Tool,
    /// Sessions into the target, one per job.
    sessions: Vec<Session>,
    /// The size of a piece of a table's data ([`piece_size`]).
    piece: u64,
    cancel: tokio_util::sync::CancellationToken,
}

impl Loader {
    /// `None` when the archive cannot be read block by block (pg_restore then restores it
    /// whole once spooled).
    fn run(self) -> Result<Option<Loaded>> {
        let frontier = Arc::clone(&self.frontier);
        let done = self.load();
        if done.is_err() {
            // The download and every session stop.
            frontier.end(Phase::Abandoned);
        }
        // Nothing more is read from the spool as it arrives (an archive not read block by
        // block is spooled whole for pg_restore).
        frontier.pass(u64::MAX);
        done
    }

    fn load(self) -> Result<Option<Loaded>> {
        let tail = Tail {
            file: Arc::clone(&self.spool),
            pos: 0,
            frontier: Arc::clone(&self.frontier),
        };
        let Some(mut blocks) = Blocks::open(tail).map_err(read_error)? else {
            return Ok(None);
        };
        let pre_data = self.restore_pre_data(blocks.data_start)?;
        tracing::info!("schema restored; loading tables as they arrive");
        let entries = std::mem::take(&mut blocks.entries);
        let mut prelude = String::new();
        for entry in entries.iter().filter(|e| e.sets_up_session()) {
            if let Some(sql) = &entry.definition {
                prelude.push_str(sql);
                prelude.push('\n');
            }
        }
        prelude.push_str(SESSION);
        let copies: HashMap<i64, &Entry> = entries
            .iter()
            .filter(|e| e.desc == "TABLE DATA" && e.copy_stmt.is_some())
            .map(|e| (e.dump_id, e))
            .collect();
        let work = Work::new(table_indexes(&entries, &pre_data, &copies));
        let int_size = blocks.int_size();
        let (dispatched, loaded) = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .sessions
                .into_iter()
                .map(|session| {
                    let (work, spool, frontier, prelude) =
                        (&work, &self.spool, &self.frontier, &prelude);
                    scope.spawn(move || {
                        load_tables(session, prelude, work, spool, frontier, int_size)
                    })
                })
                .collect();
            self.frontier.pass(blocks.data_start);
            let dispatched = dispatch(&mut blocks, &copies, self.piece, &work, &self.frontier);
            if dispatched.is_err() {
                work.fail();
                self.frontier.end(Phase::Abandoned);
            }
            work.close();
            let loaded: Vec<Result<()>> = workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect();
            (dispatched, loaded)
        });
        let data_left = first_failure(dispatched, loaded)?;
        let (loaded_ids, pieces) = work.loaded();
        let built = work.built();
        let rest = entries
            .iter()
            .map(|e| e.dump_id)
            .filter(|id| !pre_data.contains(id) && !loaded_ids.contains(id) && !built.contains(id))
            .map(|id| format!("{id}\n"))
            .collect();
        Ok(Some(Loaded {
            rest,
            data_left,
            loading: Loading {
                pieces,
                indexes: built.len() as u64,
                spool_peak: 0,
            },
        }))
    }

    /// Restores the pre-data of the archive whose head (header and table of contents) is
    /// the first `len` bytes of the spool, in one transaction; returns the entries restored.
    fn restore_pre_data(&self, len: u64) -> Result<HashSet<i64>> {
        let mut head = vec![0u8; len as usize];
        self.spool
            .read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("reading the spool file", e))?;
        let head = Unnamed::memory("lifeboat-archive-head", &head)
            .map_err(|e| Error::io("writing the archive's head", e))?;
        let listed = self
            .lister
            .clone()
            .args(["--list", "--section=pre-data"])
            .arg(head.path())
            .output()?;
        let ids = String::from_utf8_lossy(&listed)
            .lines()
            .filter_map(|line| line.split_once(';')?.0.trim().parse().ok())
            .collect();
        let mut child = self.pre_data.clone().arg(head.path()).spawn_reader()?;
        let _stop = child.killer().on_cancel(&self.cancel);
        std::io::copy(&mut child, &mut std::io::sink())
            .map_err(|e| crate::pipeline::from_io(e, "restoring the pre-data"))?;
        Ok(ids)
    }
}

/// The indexes (and primary key, unique and exclusion constraints) of `entries` the sessions
/// build as soon as their table is loaded: those that depend on nothing but the `pre_data`
/// restored, are on at least one table whose data is in `copies` and on no table whose data
/// `pg_restore` loads, and go into the default tablespace. The rest (an index on a
/// partitioned table, which holds no data, say) is left to `pg_restore`.
fn table_indexes(
    entries: &[Entry],
    pre_data: &HashSet<i64>,
    copies: &HashMap<i64, &Entry>,
) -> Vec<Index> {
    // The `TABLE DATA` entry of each table (which it depends on).
    let data_of: HashMap<i64, i64> = entries
        .iter()
        .filter(|e| e.desc == "TABLE DATA")
        .flat_map(|e| e.deps.iter().map(|table| (*table, e.dump_id)))
        .collect();
    entries
        .iter()
        .filter(|e| e.post_data && !e.tablespace && e.is_table_index())
        .filter(|e| e.deps.iter().all(|d| pre_data.contains(d)))
        .filter_map(|e| {
            let tables: Vec<i64> = e
                .deps
                .iter()
                .filter_map(|d| data_of.get(d).copied())
                .collect();
            let loaded = !tables.is_empty() && tables.iter().all(|t| copies.contains_key(t));
            Some(Index {
                dump_id: e.dump_id,
                sql: e.definition.as_deref()?.into(),
                tables,
            })
            .filter(|_| loaded)
        })
        .collect()
}

/// What the reading side and the sessions did, as one result: the first failure that is not
/// a stop another failure caused (the reader's own, such as an archive it cannot read, kept
/// as it is), else what the reader found.
fn first_failure<T>(dispatched: Result<T>, sessions: Vec<Result<()>>) -> Result<T> {
    let mut failures: Vec<Error> = sessions.into_iter().filter_map(Result::err).collect();
    let dispatched = match dispatched {
        Ok(found) => Some(found),
        Err(e) => {
            failures.push(e);
            None
        }
    };
    // Stable: the sessions' failures first, then the reader's, stops last.
    failures.sort_by_key(|e| matches!(e, Error::Interrupted(_)));
    match (failures.into_iter().next(), dispatched) {
        (Some(e), _) => Err(e),
        (None, Some(found)) => Ok(found),
        (None, None) => Err(Error::Internal("the load failed without a reason".into())),
    }
}

/// Walks the archive's data blocks as they arrive, handing each table's data to the sessions
/// in pieces of `piece` bytes, each as soon as it has arrived ([`Work`] keeps count) and owed
/// to the `frontier` until loaded, telling it how far it has passed; returns the other data
/// blocks passed by (large objects), as their dump id and where they start.
fn dispatch<R: Read>(
    blocks: &mut Blocks<R>,
    copies: &HashMap<i64, &Entry>,
    piece: u64,
    work: &Work,
    frontier: &Frontier,
) -> Result<Vec<(i64, u64)>> {
    let mut data_left = Vec::new();
    while let Some(head) = blocks.next_head().map_err(read_error)? {
        frontier.pass(head.chunks_at);
        let Some(entry) = copies.get(&head.dump_id).filter(|_| head.copy_data) else {
            data_left.push((head.dump_id, head.at));
            blocks.skip(&head).map_err(read_error)?;
            // Kept for pg_restore, not held.
            frontier.pass(blocks.pos());
            continue;
        };
        let copy: Arc<str> = entry.copy_stmt.as_deref().unwrap_or_default().into();
        let mut stopped = false;
        let cut = blocks.cut(&head, piece, |piece| {
            frontier.owe(piece.at, piece.span);
            if work.piece(head.dump_id, &copy, piece) {
                Ok(())
            } else {
                stopped = true;
                Err(io::ErrorKind::BrokenPipe.into())
            }
        });
        if stopped {
            // A session has failed: it says why.
            return Err(Error::Interrupted("the sessions stopped".into()));
        }
        cut.map_err(read_error)?;
        work.cut(head.dump_id);
    }
    Ok(data_left)
}

/// One session: its settings, then the work it is given: a `COPY` for a piece, its data read
/// from the spool (each piece commits on its own, then leaves the spool), or an index's
/// statement.
fn load_tables(
    session: Session,
    prelude: &str,
    work: &Work,
    spool: &Arc<File>,
    frontier: &Arc<Frontier>,
    int_size: usize,
) -> Result<()> {
    let loaded = (|| -> Result<()> {
        session.execute(prelude, "setting up a session")?;
        while let Some(job) = work.next() {
            match &job {
                Job::Piece { copy, piece, .. } => {
                    let tail = Tail {
                        file: Arc::clone(spool),
                        pos: piece.at,
                        frontier: Arc::clone(frontier),
                    };
                    session.copy(
                        copy,
                        |out| copy_chunks(tail, int_size, piece.len, out),
                        read_error,
                    )?;
                    frontier.free(spool, piece.at, piece.span);
                }
                Job::Index { sql, .. } => session.execute(sql, "building an index")?,
            }
            work.done(&job);
        }
        Ok(())
    })();
    if loaded.is_err() {
        work.fail();
        frontier.end(Phase::Abandoned);
    }
    loaded
}

fn read_error(e: io::Error) -> Error {
    if is_stop(&e) {
        Error::Interrupted("the restore stopped".into())
    } else {
        crate::pipeline::from_io(e, "reading the spooled archive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_share_the_archive_out_among_the_sessions_within_bounds() {
        const MIB: u64 = 1 << 20;
        // The realistic benchmark's 123 MiB archive, 4 sessions: 16 pieces of 7.7 MiB.
        assert_eq!(piece_size(123 * MIB, 4), 123 * MIB / 16);
        assert_eq!(piece_size(3 * MIB, 2), MIB);
        assert_eq!(piece_size(0, 0), MIB);
        assert_eq!(piece_size(500 << 30, 8), 64 * MIB);
        // The spool's window: a piece a session and one more, 32 MiB at least.
        assert_eq!(window(piece_size(1024 * MIB, 4), 4), 320 * MIB);
        assert_eq!(window(piece_size(500 << 30, 4), 4), 320 * MIB);
        assert_eq!(window(MIB, 2), 32 * MIB);
        assert_eq!(window(64 * MIB, 8), 576 * MIB);
        assert_eq!(window(64 * MIB, 0), 128 * MIB);
    }

    #[test]
    fn indexes_wait_for_tables_the_sessions_load_and_the_rest_is_left_to_pg_restore() {
        let entry = |dump_id, desc: &str, deps: &[i64]| Entry {
            dump_id,
            desc: desc.into(),
            copy_stmt: (desc == "TABLE DATA").then(|| "COPY x FROM stdin;".into()),
            definition: matches!(desc, "INDEX" | "CONSTRAINT" | "FK CONSTRAINT")
                .then(|| format!("-- {dump_id}")),
            post_data: matches!(desc, "INDEX" | "CONSTRAINT" | "FK CONSTRAINT" | "COMMENT"),
            tablespace: false,
            deps: deps.to_vec(),
        };
        let entries = vec![
            entry(1, "TABLE", &[]), // a
            entry(2, "TABLE", &[]), // p, partitioned: no data
            entry(3, "TABLE", &[]), // b, its data loaded by pg_restore
            entry(4, "TABLE", &[]), // c
            entry(11, "TABLE DATA", &[1]),
            entry(13, "TABLE DATA", &[3]),
            entry(14, "TABLE DATA", &[4]),
            entry(21, "INDEX", &[1]),      // on a: built
            entry(22, "CONSTRAINT", &[2]), // on p: left
            entry(23, "INDEX", &[3]),      // on b: left
            Entry {
                tablespace: true,
                ..entry(24, "INDEX", &[1])
            }, // left
            entry(25, "FK CONSTRAINT", &[4, 1, 21]), // left
            entry(26, "INDEX", &[1, 21]),  // on a post-data entry: left
            entry(27, "COMMENT", &[21]),   // left
            entry(28, "CONSTRAINT", &[4, 1]), // on a and c (an exclusion, say): built
        ];
        let pre_data = HashSet::from([1, 2, 3, 4]);
        let copies: HashMap<i64, &Entry> = entries
            .iter()
            .filter(|e| [11, 14].contains(&e.dump_id))
            .map(|e| (e.dump_id, e))
            .collect();
        let indexes = table_indexes(&entries, &pre_data, &copies);
        let found: Vec<(i64, &str, &[i64])> = indexes
            .iter()
            .map(|i| (i.dump_id, &*i.sql, i.tables.as_slice()))
            .collect();
        assert_eq!(
            found,
            [(21, "-- 21", &[11][..]), (28, "-- 28", &[14, 11][..])]
        );
    }

    #[test]
    fn the_cause_of_a_failed_load_is_reported_not_the_stops_it_caused() {
        let stop = || Err(Error::Interrupted("the restore stopped".into()));
        let unreadable = || {
            Err::<u32, _>(read_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a readable custom-format archive: unknown block type",
            )))
        };
        // The reader could not read the archive; the sessions were stopped by it.
        let e = first_failure(unreadable(), vec![stop(), Ok(())]).unwrap_err();
        assert!(!matches!(e, Error::Interrupted(_)), "{e}");
        assert!(e.to_string().contains("unknown block type"), "{e}");
        // A session failed; the reader and the other session were stopped by it.
        let refused = Err(Error::Postgres {
            context: "loading a table".into(),
            message: "error: row 5000 refused; context: COPY picky, line 5000".into(),
        });
        let stopped = Err::<u32, _>(Error::Interrupted("the sessions stopped".into()));
        let e = first_failure(stopped, vec![stop(), refused]).unwrap_err();
        assert!(e.to_string().contains("row 5000 refused"), "{e}");
        assert_eq!(first_failure(Ok(7), vec![Ok(()), Ok(())]).unwrap(), 7);
    }
}
