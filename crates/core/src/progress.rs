//! Progress of long work, reported to whoever drives the engine.
//!
//! The engine only calls [`Progress`]; the CLI decides whether that draws a bar on a terminal
//! or logs a line now and then, so the daemon and cron get logs while a person gets a bar.

/// Receives progress of one long task at a time.
pub trait Progress: Send + Sync {
    /// A task starts; `total` is its size in bytes when known.
    fn begin(&self, task: &str, total: Option<u64>);
    /// `bytes` more bytes are done.
    fn advance(&self, bytes: u64);
    /// A word on where the task is (objects scanned, copied...), shown next to the bytes.
    fn note(&self, _detail: &str) {}
    /// The task ended (well or not).
    fn end(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _task: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn end(&self) {}
}
