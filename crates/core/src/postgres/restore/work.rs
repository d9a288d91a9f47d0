//! The work of the pipelined restore's sessions ([`super::pipelined`]), handed out in order:
//! the pieces of the tables' data as the reader finds them, and each table's indexes (and
//! primary key, unique and exclusion constraints) as soon as every piece of their table has
//! been handed to its session, ahead of the pieces still waiting, so that index builds overlap
//! the loading of later tables instead of waiting for the last one.
//!
//! An index is queued once its table's pieces are handed out, not once they are loaded: an
//! index built on a table whose last `COPY` is still running waits for its lock (a `COPY`
//! holds `ROW EXCLUSIVE`, which `CREATE INDEX` and `ALTER TABLE` wait for), and one that
//! takes its lock first is kept up to date by the `COPY` that follows. Either way the index
//! is whole; the order only makes it faster. None of this work waits on another
//! session while holding a lock another waits for: no deadlock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::postgres::archive::Piece;

/// Work for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Job {
    /// A piece of the data of `table` (a `TABLE DATA` dump id), loaded by `copy`.
    Piece {
        table: i64,
        copy: Arc<str>,
        piece: Piece,
    },
    /// The statement of an index entry whose tables are loaded.
    Index { dump_id: i64, sql: Arc<str> },
}

/// An index entry to run once `tables` (`TABLE DATA` dump ids) are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Index {
    pub dump_id: i64,
    pub sql: Arc<str>,
    pub tables: Vec<i64>,
}

/// The sessions' work, shared by the reader and the sessions.
pub(super) struct Work {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    tables: HashMap<i64, Table>,
    /// Indexes not yet queued, with how many of their tables are not yet loaded.
    waiting: Vec<(Option<Index>, usize)>,
    /// Jobs taken by a session and not yet done.
    taken: usize,
    /// The reader has handed out every piece.
    closed: bool,
    /// A session or the reader failed: no more work.
    failed: bool,
    /// The pieces handed out.
    pieces: u64,
    /// The indexes done.
    built: HashSet<i64>,
}

#[derive(Default)]
struct Table {
    /// Pieces handed out and not yet done.
    pending: usize,
    /// The reader has read through its data.
    cut: bool,
    /// The positions in `waiting` of the indexes on it.
    indexes: Vec<usize>,
}

impl Work {
    /// Work whose `indexes` wait for their tables' data.
    pub(super) fn new(indexes: Vec<Index>) -> Work {
        let mut state = State::default();
        for index in indexes {
            let at = state.waiting.len();
            for table in &index.tables {
                state.tables.entry(*table).or_default().indexes.push(at);
            }
            let left = index.tables.len();
            state.waiting.push((Some(index), left));
        }
        Work {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a piece of `table` out; `false` once the work has failed.
    pub(super) fn piece(&self, table: i64, copy: &Arc<str>, piece: Piece) -> bool {
        let mut state = self.lock();
        if state.failed {
            return false;
        }
        state.tables.entry(table).or_default().pending += 1;
        state.pieces += 1;
        state.queue.push_back(Job::Piece {
            table,
            copy: Arc::clone(copy),
            piece,
        });
        self.changed.notify_one();
        true
    }

    /// Every piece of `table` has been handed out.
    pub(super) fn cut(&self, table: i64) {
        let mut state = self.lock();
        state.tables.entry(table).or_default().cut = true;
        if state.settle(table) {
            self.changed.notify_all();
        }
    }

    /// No more pieces: the sessions end once the work handed out is done.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Something failed: the sessions take no more work.
    pub(super) fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.queue.clear();
        self.changed.notify_all();
    }

    /// The next job, waiting for one; `None` when there is no more.
    pub(super) fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.failed {
                return None;
            }
            if let Some(job) = state.queue.pop_front() {
                state.taken += 1;
                return Some(job);
            }
            if state.closed && state.taken == 0 {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A session has done `job`.
    pub(super) fn done(&self, job: &Job) {
        let mut state = self.lock();
        state.taken -= 1;
        match job {
            Job::Piece { table, .. } => {
                if let Some(t) = state.tables.get_mut(table) {
                    t.pending -= 1;
                }
                state.settle(*table);
            }
            Job::Index { dump_id, .. } => {
                state.built.insert(*dump_id);
            }
        }
        self.changed.notify_all();
    }

    /// The indexes the sessions built.
    pub(super) fn built(&self) -> HashSet<i64> {
        self.lock().built.clone()
    }

    /// The tables whose data was handed out whole ([`Work::cut`]), and in how many pieces.
    pub(super) fn loaded(&self) -> (HashSet<i64>, u64) {
        let state = self.lock();
        let cut = state
            .tables
            .iter()
            .filter(|(_, t)| t.cut)
            .map(|(id, _)| *id);
        (cut.collect(), state.pieces)
    }
}

impl State {
    /// Queues the indexes `table` held back, if it is loaded; whether any were.
    fn settle(&mut self, table: i64) -> bool {
        let Some(t) = self.tables.get_mut(&table) else {
            return false;
        };
        if !t.cut || t.pending > 0 {
            return false;
        }
        let mut ready = Vec::new();
        for at in std::mem::take(&mut t.indexes) {
            let (index, left) = &mut self.waiting[at];
            *left -= 1;
            if *left == 0 {
                ready.extend(index.take());
            }
        }
        // Ahead of the pieces waiting, in the archive's order.
        for index in ready.iter().rev() {
            self.queue.push_front(Job::Index {
                dump_id: index.dump_id,
                sql: Arc::clone(&index.sql),
            });
        }
        !ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(at: u64) -> Piece {
        Piece {
            at,
            len: None,
            span: 100,
        }
    }

    fn index(dump_id: i64, tables: &[i64]) -> Index {
        Index {
            dump_id,
            sql: format!("CREATE INDEX i{dump_id}").into(),
            tables: tables.to_vec(),
        }
    }

    fn name(job: &Job) -> String {
        match job {
            Job::Piece { table, piece, .. } => format!("t{table}@{}", piece.at),
            Job::Index { dump_id, .. } => format!("i{dump_id}"),
        }
    }

    #[test]
    fn an_index_comes_once_its_tables_pieces_are_done_ahead_of_later_pieces() {
        // Index 10 is on table 1, index 11 on table 2, index 12 on both.
        let work = Work::new(vec![index(10, &[1]), index(11, &[2]), index(12, &[1, 2])]);
        let copy: Arc<str> = "COPY".into();
        assert!(work.piece(1, &copy, piece(0)));
        assert!(work.piece(1, &copy, piece(100)));
        let a = work.next().unwrap();
        let b = work.next().unwrap();
        assert_eq!((name(&a), name(&b)), ("t1@0".into(), "t1@100".into()));
        work.cut(1);
        assert!(work.piece(2, &copy, piece(200)));
        work.done(&a);
        // One piece of table 1 is still being written: its index waits.
        let c = work.next().unwrap();
        assert_eq!(name(&c), "t2@200");
        assert!(work.piece(2, &copy, piece(300)));
        work.done(&b);
        // Table 1 is in: its index comes before table 2's next piece.
        let d = work.next().unwrap();
        assert_eq!(name(&d), "i10");
        work.done(&d);
        work.cut(2);
        let e = work.next().unwrap();
        assert_eq!(name(&e), "t2@300");
        work.done(&c);
        work.close();
        // Table 2's last piece is taken, not done: a session waiting is not let go.
        std::thread::scope(|s| {
            let waiting = s.spawn(|| work.next().map(|j| name(&j)));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !waiting.is_finished(),
                "a session left before the last index"
            );
            work.done(&e);
            // Both indexes of table 2 come, in the archive's order.
            assert_eq!(waiting.join().unwrap().as_deref(), Some("i11"));
        });
        assert_eq!(work.next().map(|j| name(&j)).as_deref(), Some("i12"));
        // Two jobs are taken: no end yet; the end once they are done.
        let i11 = Job::Index {
            dump_id: 11,
            sql: "x".into(),
        };
        let i12 = Job::Index {
            dump_id: 12,
            sql: "x".into(),
        };
        work.done(&i11);
        work.done(&i12);
        assert_eq!(work.next(), None);
        assert_eq!(work.built(), HashSet::from([10, 11, 12]));
    }

    #[test]
    fn an_index_on_a_table_never_read_is_left_and_a_failure_ends_the_work() {
        // Table 3's data never comes (the archive holds no block for it): its index is not
        // built here, and is left to the rest.
        let work = Work::new(vec![index(20, &[3]), index(21, &[4])]);
        let copy: Arc<str> = "COPY".into();
        // A table with no piece at all (an empty block gives one) still settles.
        work.cut(4);
        let i = work.next().unwrap();
        assert_eq!(name(&i), "i21");
        work.done(&i);
        work.close();
        assert_eq!(work.next(), None);
        assert_eq!(work.built(), HashSet::from([21]));

        let work = Work::new(vec![]);
        assert!(work.piece(5, &copy, piece(0)));
        work.fail();
        assert_eq!(work.next(), None, "work handed out after a failure");
        assert!(!work.piece(5, &copy, piece(1)));
    }
}
