//! What a run did, step by step: what `run` prints, notifications carry and the daemon keeps
//! for `/metrics`.

use jiff::Timestamp;
use serde::Serialize;

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub ok: bool,
    /// The backup or run id, the plan's outcome, or the error.
    pub detail: String,
    pub bytes: Option<u64>,
    pub seconds: f64,
}

/// What a run of a job did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job: String,
    pub repository: String,
    pub host: String,
    pub started: Timestamp,
    pub seconds: f64,
    pub ok: bool,
    pub steps: Vec<StepReport>,
    /// Why the run did not start (the repository unreachable, another run holding the lock):
    /// its `start` step says so; this keeps the error's kind for the exit code.
    #[serde(skip)]
    pub not_started: Option<std::sync::Arc<crate::Error>>,
}

impl RunReport {
    pub fn failed(&self) -> Vec<&StepReport> {
        self.steps.iter().filter(|s| !s.ok).collect()
    }
}

/// Seconds to one decimal, as reports show them.
pub fn tenths(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}
