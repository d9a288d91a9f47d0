//! Progress of long work, reported to whoever drives the engine.
//!
//! The engine starts a [`Task`] for each piece of long work ([`Progress::start`]) and reports
//! on it through the handle; several may run at once (parallel copies, a dump and its upload).
//! The CLI decides whether that draws bars on a terminal or logs a line now and then, so the
//! daemon and cron get logs while a person gets bars. A task ends when the last clone of its
//! handle is dropped.

use std::sync::Arc;

/// Where tasks are reported.
pub trait Progress: Send + Sync {
    /// A task starts; `total` is its size in bytes when known.
    fn start(&self, label: &str, total: Option<u64>) -> Task;
}

/// What a reporter does with one task's news.
pub trait TaskSink: Send + Sync {
    /// `bytes` more bytes are done.
    fn advance(&self, bytes: u64);
    /// A word on where the task is (objects scanned, copied...), shown next to the bytes.
    fn note(&self, _detail: &str) {}
    /// The task ended (well or not).
    fn finish(&self) {}
}

/// The handle of one running task; clones report on the same task, which ends when the last
/// of them is dropped.
#[derive(Clone)]
pub struct Task(Arc<Finishing>);

struct Finishing(Box<dyn TaskSink>);

impl Drop for Finishing {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl Task {
    pub fn new(sink: impl TaskSink + 'static) -> Task {
        Task(Arc::new(Finishing(Box::new(sink))))
    }

    /// A task nobody watches.
    pub fn silent() -> Task {
        Task::new(Silent)
    }

    pub fn advance(&self, bytes: u64) {
        self.0 .0.advance(bytes);
    }

    pub fn note(&self, detail: &str) {
        self.0 .0.note(detail);
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: Option<u64>) -> Task {
        Task::silent()
    }
}

struct Silent;

impl TaskSink for Silent {
    fn advance(&self, _bytes: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counting(Arc<AtomicU64>, Arc<AtomicU64>);

    impl TaskSink for Counting {
        fn advance(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
        fn finish(&self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_task_ends_once_when_its_last_handle_goes() {
        let (done, ended) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = Task::new(Counting(done.clone(), ended.clone()));
        let other = task.clone();
        std::thread::spawn(move || other.advance(5)).join().unwrap();
        task.advance(2);
        assert_eq!(ended.load(Ordering::Relaxed), 0);
        drop(task);
        assert_eq!(
            (done.load(Ordering::Relaxed), ended.load(Ordering::Relaxed)),
            (7, 1)
        );
    }
}
