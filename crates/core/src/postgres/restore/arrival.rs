//! The spool file of a pipelined restore while it arrives: the download writes it through
//! [`Arrival`], which moves the [`Frontier`] on; readers ([`Tail`]) read as far as it has
//! arrived and wait for more. A failed download stops the readers, a failed load stops the
//! download.
//!
//! The spool holds a window of the archive, not all of it. The table data arrived and not yet
//! loaded is held: the bytes the reader has not passed yet, and each piece of a table it has
//! handed to a session ([`Frontier::owe`]) until the session has loaded it, freed its bytes
//! from the file ([`punch`]) and repaid them. The download waits while more than the window is
//! held, unless nothing is owed and the reader waits for more: then nothing else could end
//! the wait. The pieces owed have arrived whole, so the sessions load them without waiting
//! for the download, and a reader that has not passed what arrived does so without it: the
//! wait always ends. What the reader passes that is not table data (the table of contents,
//! large objects) stays on disk and is not held.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How far the spool file is written, whether it will grow further, and how much of it is
/// owed to the sessions.
pub(super) struct Frontier {
    state: Mutex<State>,
    grown: Condvar,
    repaid: Condvar,
    /// The bytes that may be held before the download waits.
    window: u64,
    /// A piece could not be punched out of the file (said once).
    cannot_free: AtomicBool,
}

#[derive(Default)]
struct State {
    written: u64,
    phase: Phase,
    /// Bytes of pieces handed to sessions and not yet loaded.
    owed: u64,
    /// How far the reader has passed (handed out as pieces, or kept).
    passed: u64,
    /// Readers waiting for more to arrive.
    readers_waiting: u32,
    /// The most disk the spool file ever took.
    disk_peak: u64,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    #[default]
    Arriving,
    /// Downloaded whole and verified.
    Complete,
    /// The download failed.
    Failed,
    /// The loading failed: the download stops too.
    Abandoned,
}

/// The error a reader of the spool gets once the restore has failed elsewhere.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the restore stopped")
    }
}

impl std::error::Error for Stopped {}

pub(super) fn is_stop(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

impl Frontier {
    /// A frontier whose download waits while more than `window` bytes are owed.
    pub(super) fn new(window: u64) -> Frontier {
        Frontier {
            state: Mutex::default(),
            grown: Condvar::new(),
            repaid: Condvar::new(),
            window,
            cannot_free: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn advance(&self, n: u64) {
        self.lock().written += n;
        self.grown.notify_all();
    }

    /// Ends the arrival (the first end said counts).
    pub(super) fn end(&self, phase: Phase) {
        let mut state = self.lock();
        if state.phase == Phase::Arriving {
            state.phase = phase;
        }
        drop(state);
        self.grown.notify_all();
        self.repaid.notify_all();
    }

    /// Waits until bytes beyond `pos` are written; returns how far the file is written,
    /// `pos` or less at its end.
    pub(super) fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.lock();
        loop {
            match state.phase {
                Phase::Failed | Phase::Abandoned => return Err(io::Error::other(Stopped)),
                _ if state.written > pos => return Ok(state.written),
                Phase::Complete => return Ok(state.written),
                Phase::Arriving => {
                    state.readers_waiting += 1;
                    self.repaid.notify_all();
                    state = self
                        .grown
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.readers_waiting -= 1;
                }
            }
        }
    }

    /// The `len` bytes at `at` are handed to a session as a piece, to be freed once loaded.
    pub(super) fn owe(&self, at: u64, len: u64) {
        let mut state = self.lock();
        state.owed += len;
        state.passed = state.passed.max(at + len);
    }

    /// The reader has passed everything before `pos` (`u64::MAX`: it reads no more).
    pub(super) fn pass(&self, pos: u64) {
        let mut state = self.lock();
        state.passed = state.passed.max(pos);
        drop(state);
        self.repaid.notify_all();
    }

    /// The piece of `len` bytes at `at` of the spool `file` is loaded: its bytes leave the
    /// disk ([`punch`]) and are repaid. A file system that cannot free them keeps them, which
    /// is said once: the spool then grows to the whole archive, as it did before windows.
    pub(super) fn free(&self, file: &File, at: u64, len: u64) {
        if !punch(file, at, len) && !self.cannot_free.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the spool's file system cannot free what is loaded (no hole punching): the spool file will take as much disk as the archive"
            );
        }
        self.repay(len);
    }

    /// `n` bytes owed are loaded and freed.
    fn repay(&self, n: u64) {
        let mut state = self.lock();
        state.owed = state.owed.saturating_sub(n);
        drop(state);
        self.repaid.notify_all();
    }

    /// The most disk the spool file took, as its file system counted it after each write.
    pub(super) fn disk_peak(&self) -> u64 {
        self.lock().disk_peak
    }

    /// Waits while more than the window is held; an error once the restore has stopped.
    fn wait_for_room(&self, cancel: &CancellationToken) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if matches!(state.phase, Phase::Failed | Phase::Abandoned) || cancel.is_cancelled() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let held = state.written.saturating_sub(state.passed) + state.owed;
            if held <= self.window || (state.owed == 0 && state.readers_waiting > 0) {
                return Ok(());
            }
            // A stop is seen within a tenth of a second even if nothing is repaid.
            state = self
                .repaid
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Frees `piece`'s bytes of the spool `file` (whole pages inside them: the pages at its
/// ends may hold bytes of the pieces beside it), keeping the file's size and every other
/// offset in it; `false` if the file system cannot, which only keeps them on disk.
fn punch(file: &File, at: u64, len: u64) -> bool {
    const PAGE: u64 = 4096;
    let start = at.div_ceil(PAGE) * PAGE;
    let end = (at + len) / PAGE * PAGE;
    if end <= start {
        return true;
    }
    rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        start,
        end - start,
    )
    .is_ok()
}

/// The spool file as the download writes it: each write moves the frontier on; once the
/// loading has failed, writes fail (as into a closed pipe) and the download ends.
pub(super) struct Arrival {
    pub(super) file: File,
    pub(super) frontier: Arc<Frontier>,
    pub(super) cancel: CancellationToken,
}

impl Write for Arrival {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.frontier.wait_for_room(&self.cancel)?;
        let n = self.file.write(buf)?;
        // Disk grows only by writes: the most it takes is seen right after one.
        if let Ok(meta) = self.file.metadata() {
            let mut state = self.frontier.lock();
            state.disk_peak = state.disk_peak.max(meta.blocks() * 512);
        }
        self.frontier.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The spool file read from `pos` as far as it has arrived, waiting for more.
pub(super) struct Tail {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) frontier: Arc<Frontier>,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.frontier.wait_beyond(self.pos)?;
        let n = (buf.len() as u64).min(end.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_reads_what_arrives_waits_for_more_and_stops_with_the_arrival() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let frontier = Arc::new(Frontier::new(u64::MAX));
        let mut arrival = Arrival {
            file: file.try_clone().unwrap(),
            frontier: Arc::clone(&frontier),
            cancel: CancellationToken::new(),
        };
        arrival.write_all(b"abc").unwrap();
        let mut tail = Tail {
            file: Arc::clone(&file),
            pos: 1,
            frontier: Arc::clone(&frontier),
        };
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            tail.read_to_end(&mut all).map(|_| all)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished(), "the tail waits for more");
        arrival.write_all(b"def").unwrap();
        frontier.end(Phase::Complete);
        assert_eq!(reader.join().unwrap().unwrap(), b"bcdef");

        // A failed download stops a waiting reader; a failed load stops the download.
        let frontier = Arc::new(Frontier::new(u64::MAX));
        let mut tail = Tail {
            file: Arc::clone(&file),
            pos: 6,
            frontier: Arc::clone(&frontier),
        };
        let reader = std::thread::spawn(move || tail.read(&mut [0u8; 4]));
        std::thread::sleep(std::time::Duration::from_millis(50));
        frontier.end(Phase::Failed);
        assert!(is_stop(&reader.join().unwrap().unwrap_err()));
        let frontier = Arc::new(Frontier::new(u64::MAX));
        let mut arrival = Arrival {
            file: file.try_clone().unwrap(),
            frontier: Arc::clone(&frontier),
            cancel: CancellationToken::new(),
        };
        frontier.end(Phase::Abandoned);
        frontier.end(Phase::Complete);
        assert_eq!(
            arrival.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn the_download_waits_while_more_than_the_window_is_owed_and_a_stop_ends_the_wait() {
        let file = tempfile::tempfile().unwrap();
        let arrival = |frontier: &Arc<Frontier>, cancel: &CancellationToken| Arrival {
            file: file.try_clone().unwrap(),
            frontier: Arc::clone(frontier),
            cancel: cancel.clone(),
        };
        let frontier = Arc::new(Frontier::new(10));
        let cancel = CancellationToken::new();
        let mut writer = arrival(&frontier, &cancel);
        writer.write_all(b"0123456789").unwrap();
        // Ten bytes arrived, not passed yet: held, within the window.
        writer.write_all(b"abcdef").unwrap();
        let held = |writer: Arrival| {
            let waiting = std::thread::spawn(move || writer_write(writer, b"y"));
            std::thread::sleep(Duration::from_millis(150));
            assert!(!waiting.is_finished(), "wrote past the window");
            waiting
        };
        // Sixteen held: it waits, until the reader passes ten (kept: a large object, say).
        let waiting = held(writer);
        frontier.pass(10);
        let mut writer = waiting.join().unwrap().unwrap();
        // The next seven handed out as a piece: owed, still held.
        frontier.owe(10, 7);
        writer.write_all(b"12345").unwrap();
        // Seven owed and five not passed: it waits, even with a reader waiting for more
        // (the piece owed will be repaid), until the piece is loaded.
        let waiting = held(writer);
        let reader = {
            let frontier = Arc::clone(&frontier);
            std::thread::spawn(move || frontier.wait_beyond(100))
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !waiting.is_finished(),
            "wrote past the window, a piece owed"
        );
        frontier.repay(7);
        let mut writer = waiting.join().unwrap().unwrap();
        // Nothing owed and the reader waiting for more: on past the window, or it would wait
        // for ever.
        writer.write_all(&[b'z'; 10]).unwrap();
        writer.write_all(b"w").unwrap();
        assert_eq!(frontier.lock().written, 34);
        assert!(frontier.disk_peak() >= 34, "{}", frontier.disk_peak());
        frontier.end(Phase::Complete);
        assert_eq!(reader.join().unwrap().unwrap(), 34);
        // A failed load and a cancel each end a wait, with an error.
        let frontier = Arc::new(Frontier::new(10));
        writer.frontier = Arc::clone(&frontier);
        frontier.owe(0, 20);
        let waiting = std::thread::spawn(move || writer.write(b"z"));
        std::thread::sleep(Duration::from_millis(50));
        frontier.end(Phase::Abandoned);
        let e = waiting.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let frontier = Arc::new(Frontier::new(0));
        let mut writer = arrival(&frontier, &cancel);
        frontier.owe(0, 1);
        let waiting = std::thread::spawn(move || writer.write(b"z"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished());
        cancel.cancel();
        let e = waiting.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    fn writer_write(mut writer: Arrival, bytes: &[u8]) -> io::Result<Arrival> {
        writer.write_all(bytes).map(|()| writer)
    }

    #[test]
    fn a_punched_piece_leaves_the_disk_and_nothing_else_moves() {
        let file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
        file.write_all_at(&bytes, 0).unwrap();
        file.sync_all().unwrap();
        let before = file.metadata().unwrap().blocks();
        // A piece not on page bounds: only the whole pages inside it go.
        let (at, len) = (1000, 600_000);
        if !punch(&file, at, len) {
            eprintln!("this file system cannot punch holes: skipped");
            return;
        }
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), bytes.len() as u64);
        // 512-byte blocks: about 600,000 bytes freed.
        assert!(
            before - meta.blocks() >= 1100,
            "{before} -> {}",
            meta.blocks()
        );
        let mut read = vec![0u8; bytes.len()];
        file.read_exact_at(&mut read, 0).unwrap();
        let (start, end) = (4096, (at + len) as usize / 4096 * 4096);
        assert_eq!(read[..start], bytes[..start]);
        assert!(read[start..end].iter().all(|b| *b == 0));
        assert_eq!(read[end..], bytes[end..]);
        // Less than a page: nothing to free, nothing changed.
        assert!(punch(&file, 700_001, 4000));
        file.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(read[end..], bytes[end..]);
    }
}
