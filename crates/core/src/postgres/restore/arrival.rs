//! The spool file of a pipelined restore while it arrives: the download writes it through
//! [`Arrival`], which moves the [`Frontier`] on; readers ([`Tail`]) read as far as it has
//! arrived and wait for more. A failed download stops the readers, a failed load stops the
//! download.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// How far the spool file is written, and whether it will grow further.
#[derive(Default)]
pub(super) struct Frontier {
    state: Mutex<(u64, Phase)>,
    grown: Condvar,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Phase)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn stopped(&self) -> bool {
        matches!(self.lock().1, Phase::Failed | Phase::Abandoned)
    }

    pub(super) fn advance(&self, n: u64) {
        self.lock().0 += n;
        self.grown.notify_all();
    }

    /// Ends the arrival (the first end said counts).
    pub(super) fn end(&self, phase: Phase) {
        let mut state = self.lock();
        if state.1 == Phase::Arriving {
            state.1 = phase;
        }
        drop(state);
        self.grown.notify_all();
    }

    /// Waits until bytes beyond `pos` are written; returns how far the file is written,
    /// `pos` or less at its end.
    pub(super) fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.lock();
        loop {
            match state.1 {
                Phase::Failed | Phase::Abandoned => return Err(io::Error::other(Stopped)),
                _ if state.0 > pos => return Ok(state.0),
                Phase::Complete => return Ok(state.0),
                Phase::Arriving => {
                    state = self
                        .grown
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
    }
}

/// The spool file as the download writes it: each write moves the frontier on; once the
/// loading has failed, writes fail (as into a closed pipe) and the download ends.
pub(super) struct Arrival {
    pub(super) file: File,
    pub(super) frontier: Arc<Frontier>,
}

impl Write for Arrival {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.frontier.stopped() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = self.file.write(buf)?;
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
        let frontier = Arc::new(Frontier::default());
        let mut arrival = Arrival {
            file: file.try_clone().unwrap(),
            frontier: Arc::clone(&frontier),
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
        let frontier = Arc::new(Frontier::default());
        let mut tail = Tail {
            file: Arc::clone(&file),
            pos: 6,
            frontier: Arc::clone(&frontier),
        };
        let reader = std::thread::spawn(move || tail.read(&mut [0u8; 4]));
        std::thread::sleep(std::time::Duration::from_millis(50));
        frontier.end(Phase::Failed);
        assert!(is_stop(&reader.join().unwrap().unwrap_err()));
        let frontier = Arc::new(Frontier::default());
        let mut arrival = Arrival {
            file: file.try_clone().unwrap(),
            frontier: Arc::clone(&frontier),
        };
        frontier.end(Phase::Abandoned);
        frontier.end(Phase::Complete);
        assert_eq!(
            arrival.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
