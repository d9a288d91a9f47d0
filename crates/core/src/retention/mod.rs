//! Retention planning, without I/O: backups + policy + now -> keep or delete each one, with the
//! reasons, and which kept backups move to a colder storage tier; WAL kept for the PITR window.
//!
//! Logical dumps, per series (database and dump options): every backup of the last
//! `daily_days`; the first backup of each calendar month for `monthly_months` months; the first
//! of each year for `yearly_years` years (forever when unset); and always the newest. Months
//! and years are calendar periods in the policy's time zone.
//!
//! Base backups: every one that ended inside the PITR window, and the newest that ended before
//! it (recovering to the window's first moment starts from that one); always the newest. A
//! kept incremental keeps every backup of its chain (its parent, that one's parent, down to
//! the full one); a chain goes whole or from its newest end, never from the middle.
//! WAL: every segment from the oldest kept base backup's first segment on; nothing older is
//! needed by any kept base backup. With no base backup, no WAL is deleted.
//!
//! The planner ([`plan`]) is pure; [`prune`] lists the repository, plans and deletes; the
//! bucket's lifecycle rules ([`crate::storage::s3::lifecycle`]) do the same for what lifeboat
//! does not list; [`crate::repository::hold`] dates Object Lock holds, [`r2`] R2's bucket lock
//! rules, and `held` brings both into `prune`.

mod held;
mod plan;
pub mod prune;
pub mod r2;

use jiff::Timestamp;
use serde::Serialize;

use crate::repository::manifest::BackupKind;

pub use plan::{keep_chains, plan_backups, plan_wal};

/// The policy, as configured.
pub use crate::repository::hold::{Policy, Tier};

#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub kind: BackupKind,
    /// Backups compete for keeping only within a series (database and dump options).
    pub series: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// The tier recorded in its manifest (`daily`, `monthly`, `yearly`), if any.
    pub tier: Option<Tier>,
    /// For a base backup: its first WAL segment.
    pub first_wal: Option<String>,
    /// For an incremental base backup: the backup it is built on.
    pub parent: Option<String>,
}

/// What becomes of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub kind: BackupKind,
    pub series: String,
    pub started: Timestamp,
    pub keep: bool,
    /// Why it is kept (all reasons), or why it is deleted (one).
    pub reasons: Vec<String>,
    /// The colder tier it moves to now (kept only as a monthly or yearly backup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote: Option<Tier>,
    /// Kept only because a kept incremental is built on it: the WAL before it is not needed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub chain_only: bool,
}

/// What becomes of the WAL archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// The first segment kept, and the base backup that needs it.
    pub keep_from: Option<(String, String)>,
    /// Archived names to delete.
    pub delete: Vec<String>,
    pub kept: usize,
}
