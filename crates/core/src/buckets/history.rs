//! Removing object history older than `history_days`: which runs and which retired versions
//! go (a pure plan), then doing it in an order that a cut-off prune never breaks.
//!
//! A version retired by run R was last held by the run before R. Every run that started
//! inside the window stays, and so does the newest run before the window (a restore "as of"
//! a moment early in the window needs it). Runs older than that go, and so do the versions
//! retired by that run or earlier: only the removed runs referred to them.
//!
//! Order: run records first (a removed run is no longer listed, so nothing offers to restore
//! it), then the versions of each retired list followed by the list itself, then the indexes
//! of the removed runs. A prune cut off anywhere is finished by the next one, which finds
//! the leftover lists by listing `runs/`.

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::{list_bucket_runs, read_index, record_key, RUNS};
use crate::error::Result;
use crate::storage::Storage;

/// The runs of one object backup and what becomes of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPlan {
    pub cutoff: Timestamp,
    /// Runs kept, with why.
    pub keep: Vec<(String, String)>,
    /// Runs removed.
    pub remove: Vec<String>,
    /// Versions retired by runs up to this one (inclusive) are removed.
    pub purge_through: Option<String>,
}

/// Plans the history of runs `(id, started)` sorted oldest first, at `now`.
pub fn plan(runs: &[(String, Timestamp)], now: Timestamp, history_days: u32) -> HistoryPlan {
    let cutoff = now
        .checked_sub(SignedDuration::from_hours(24 * i64::from(history_days)))
        .unwrap_or(Timestamp::MIN);
    let boundary = runs.iter().rposition(|(_, started)| *started < cutoff);
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for (i, (id, _)) in runs.iter().enumerate() {
        match boundary {
            Some(b) if i < b => remove.push(id.clone()),
            Some(b) if i == b => keep.push((
                id.clone(),
                format!("newest run before the {history_days}-day window"),
            )),
            _ => keep.push((id.clone(), format!("within {history_days} days"))),
        }
    }
    HistoryPlan {
        cutoff,
        keep,
        remove,
        purge_through: boundary.map(|b| runs[b].0.clone()),
    }
}

#[derive(Debug, Default, Serialize)]
pub struct HistoryOutcome {
    pub runs_removed: u64,
    pub versions_removed: u64,
    pub files_removed: u64,
}

/// Plans the history of an object backup (its destination `dest`) as it stands.
pub async fn plan_for(dest: &Storage, history_days: u32, now: Timestamp) -> Result<HistoryPlan> {
    let runs = list_bucket_runs(dest).await?;
    let ids: Vec<(String, Timestamp)> = runs.iter().map(|r| (r.id.clone(), r.started)).collect();
    Ok(plan(&ids, now, history_days))
}

/// Carries out a plan (see the module's header for the order), then removes what unfinished
/// runs left behind (older than a day, so that a run in progress is never touched).
pub async fn execute(
    dest: &Storage,
    plan: &HistoryPlan,
    now: Timestamp,
    checkers: usize,
) -> Result<HistoryOutcome> {
    let mut outcome = HistoryOutcome::default();
    for id in &plan.remove {
        // The marker says the run existed, so that its versions are never taken for leftovers.
        dest.write(&removed_key(id), Vec::new()).await?;
        dest.delete(&record_key(id)).await?;
        outcome.runs_removed += 1;
    }
    let files: Vec<String> = dest.list(RUNS).await?.into_iter().map(|e| e.path).collect();
    let known = |id: &str| files.contains(&record_key(id)) || files.contains(&removed_key(id));
    let day_ago = now
        .checked_sub(SignedDuration::from_hours(24))
        .unwrap_or(Timestamp::MIN);
    let leftover = |id: &str| {
        !known(id) && crate::repository::manifest::id_time(id).is_some_and(|t| t < day_ago)
    };
    let through = plan.purge_through.as_deref().unwrap_or("");
    for key in &files {
        if let Some(id) = run_of(key, ".retired.zst") {
            if known(&id) && id.as_str() <= through {
                let versions = read_index(dest, key, true)
                    .await?
                    .map_ok(|entry| entry.stored_key())
                    .boxed();
                outcome.versions_removed += dest.delete_all(versions, checkers).await?;
                dest.delete(key).await?;
                outcome.files_removed += 1;
            } else if leftover(&id) {
                dest.delete(key).await?;
                outcome.files_removed += 1;
            }
        } else if let Some(id) = run_of(key, ".index.zst") {
            let removed = files.contains(&removed_key(&id)) && id.as_str() < through;
            if removed || leftover(&id) {
                dest.delete(key).await?;
                outcome.files_removed += 1;
            }
        }
    }
    for dir in dest.list_dirs("v/").await? {
        let id = dir
            .trim_start_matches("v/")
            .trim_end_matches('/')
            .to_string();
        if leftover(&id) {
            tracing::info!("removing the copies of unfinished run `{id}`");
            let keys = dest.list_stream(&dir).await?.map_ok(|e| e.path).boxed();
            outcome.versions_removed += dest.delete_all(keys, checkers).await?;
        }
    }
    Ok(outcome)
}

fn removed_key(id: &str) -> String {
    format!("{RUNS}{id}.removed")
}

fn run_of(key: &str, suffix: &str) -> Option<String> {
    key.strip_prefix(RUNS)
        .and_then(|k| k.strip_suffix(suffix))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> Timestamp {
        Timestamp::from_second(day * 86_400).unwrap()
    }

    fn runs(days: &[i64]) -> Vec<(String, Timestamp)> {
        days.iter()
            .map(|d| (format!("run{d:03}"), at(*d)))
            .collect()
    }

    #[test]
    fn nothing_to_remove_inside_the_window() {
        let plan = plan(&runs(&[10, 11, 12]), at(20), 90);
        assert!(plan.remove.is_empty());
        assert_eq!(plan.purge_through, None);
        assert_eq!(plan.keep.len(), 3);
    }

    #[test]
    fn keeps_the_newest_run_before_the_window() {
        // Window of 90 days at day 200 starts at day 110.
        let plan = plan(&runs(&[100, 105, 109, 111, 150]), at(200), 90);
        assert_eq!(plan.remove, vec!["run100", "run105"]);
        assert_eq!(plan.purge_through.as_deref(), Some("run109"));
        assert_eq!(plan.keep[0].0, "run109");
        assert!(plan.keep[0].1.contains("newest run before"));
        assert_eq!(plan.keep.len(), 3);
    }

    #[test]
    fn a_lone_old_run_stays() {
        let plan = plan(&runs(&[1]), at(500), 90);
        assert!(plan.remove.is_empty());
        assert_eq!(plan.purge_through.as_deref(), Some("run001"));
    }

    #[test]
    fn run_ids_carry_their_time() {
        let id = super::super::new_run_id("2026-11-24T02:00:00.123Z".parse().unwrap());
        assert!(id.starts_with("20261124T020000123Z-"), "{id}");
        let t = crate::repository::manifest::id_time(&id).unwrap();
        assert_eq!(t.to_string(), "2026-11-24T02:00:00Z");
        assert_eq!(crate::repository::manifest::id_time("garbage"), None);
        // Backup ids carry theirs the same way.
        let backup = crate::repository::manifest::id_time("20261124T020000Z-ab12").unwrap();
        assert_eq!(backup.to_string(), "2026-11-24T02:00:00Z");
    }

    #[test]
    fn empty_history() {
        let plan = plan(&[], at(500), 90);
        assert!(plan.remove.is_empty() && plan.keep.is_empty());
        assert_eq!(plan.purge_through, None);
    }
}
