//! What the WAL archive can recover, per timeline: its segments and gaps, where it branched
//! off, when its newest segment was archived, and the windows of moments that a base backup in
//! the repository and the archived WAL can recover (`list wal`, `status`).
//!
//! Times are those the storage gives its objects: a segment holds no commit later than its
//! archiving, so the window's end is the moment its last replayable segment was stored.

use jiff::Timestamp;
use serde::Serialize;

use super::cluster::WalArchive;
use super::{
    archived_names, forks, parse_lsn, reaches, read_histories, segment_of_name, spans, stored_at,
    Fork, RecoveryStart, TimelineSpan, DEFAULT_SEGMENT_SIZE,
};
use crate::error::Result;
use crate::repository::manifest::{BackupKind, Manifest};
use crate::Context;

/// The archive, timeline by timeline.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub segment_size: u64,
    pub timelines: Vec<TimelineReport>,
    /// Timelines that branched off while their parent went on.
    pub forks: Vec<Fork>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Its segments and gaps.
    #[serde(flatten)]
    pub span: TimelineSpan,
    /// The timeline it branched off, and the LSN where it did.
    pub parent: Option<(u32, String)>,
    pub newest_archived_at: Option<Timestamp>,
    /// The moments a recovery onto this timeline can reach, oldest first.
    pub recoverable: Vec<RecoveryWindow>,
}

/// Moments from `from` to `to`, recoverable from base backup `base_backup` (the oldest one
/// that reaches them) and the archived WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryWindow {
    pub from: Timestamp,
    pub to: Timestamp,
    pub base_backup: String,
}

impl ArchiveReport {
    /// The segment archived last, of any timeline (a timeline left behind by a test restore
    /// may have a higher number but stop early), and when it was stored.
    pub fn newest(&self) -> Option<(&str, Option<Timestamp>)> {
        self.timelines
            .iter()
            .max_by_key(|t| (t.newest_archived_at, t.span.timeline))
            .map(|t| (t.span.last.as_str(), t.newest_archived_at))
    }

    /// The forks off the production line (the timeline archived last and its ancestors): a
    /// timeline left behind while the line it branched off went on. PostgreSQL's own
    /// `recovery_target_timeline = 'latest'` follows the highest number, so it would follow
    /// such a timeline and lose the production line's later commits (lifeboat does not).
    pub fn left_behind(&self) -> Vec<&Fork> {
        let newest = self
            .timelines
            .iter()
            .max_by_key(|t| (t.newest_archived_at, t.span.timeline))
            .map(|t| t.span.timeline);
        let mut line = Vec::new();
        let mut next = newest;
        while let Some(timeline) = next.filter(|t| !line.contains(t)) {
            line.push(timeline);
            next = self
                .timelines
                .iter()
                .find(|t| t.span.timeline == timeline)
                .and_then(|t| t.parent.as_ref())
                .map(|(parent, _)| *parent);
        }
        self.forks
            .iter()
            .filter(|f| !line.contains(&f.timeline))
            .collect()
    }
}

/// Reads the archive's shape and what the repository's base backups (among `manifests`, the
/// repository's; those of this archive's generation) can recover from it.
pub async fn archive_report(
    ctx: &Context,
    repo: &WalArchive<'_>,
    manifests: &[Manifest],
) -> Result<ArchiveReport> {
    let names = archived_names(repo).await?;
    let bases: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == BackupKind::Base && repo.holds(m))
        .collect();
    let segment_size = bases
        .last()
        .and_then(|m| m.base.as_ref())
        .map_or(DEFAULT_SEGMENT_SIZE, |b| b.wal_segment_size);
    let histories = read_histories(ctx, repo, &names).await?;
    let started: Vec<(&Manifest, RecoveryStart)> = bases
        .iter()
        .copied()
        .filter_map(|m| {
            let info = m.base.as_ref()?;
            let start = RecoveryStart {
                timeline: info.timeline,
                start_lsn: parse_lsn(&info.start_lsn)?,
                first: segment_of_name(&info.first_wal, segment_size)?.1,
            };
            Some((m, start))
        })
        .collect();
    let starts: Vec<RecoveryStart> = started.iter().map(|(_, s)| *s).collect();
    let reached = reaches(&names, &starts, &histories, segment_size);

    let mut timelines = Vec::new();
    for span in spans(&names, segment_size) {
        let parent = histories
            .iter()
            .find(|(t, _)| *t == span.timeline)
            .and_then(|(_, h)| h.last())
            .map(|(p, lsn)| (*p, super::format_lsn(*lsn)));
        let branched_at = match parent {
            Some(_) => stored_at(repo, &format!("{:08X}.history", span.timeline)).await?,
            None => None,
        };
        let mut windows = Vec::new();
        for reach in reached.iter().filter(|r| r.timeline == span.timeline) {
            let base = started[reach.base].0;
            let Some(to) = stored_at(repo, &reach.last).await? else {
                continue;
            };
            let from = match branched_at {
                Some(at)
                    if base
                        .base
                        .as_ref()
                        .is_some_and(|b| b.timeline != span.timeline) =>
                {
                    at.max(base.finished_at)
                }
                _ => base.finished_at,
            };
            if from <= to {
                windows.push(RecoveryWindow {
                    from,
                    to,
                    base_backup: base.id.clone(),
                });
            }
        }
        timelines.push(TimelineReport {
            newest_archived_at: stored_at(repo, &span.last).await?,
            span,
            parent,
            recoverable: merge(windows),
        });
    }
    Ok(ArchiveReport {
        segment_size,
        forks: forks(&names, &histories, segment_size),
        timelines,
    })
}

/// Joins overlapping windows, keeping the oldest base backup of each.
fn merge(mut windows: Vec<RecoveryWindow>) -> Vec<RecoveryWindow> {
    windows.sort_by(|a, b| a.from.cmp(&b.from).then(a.base_backup.cmp(&b.base_backup)));
    let mut out: Vec<RecoveryWindow> = Vec::new();
    for window in windows {
        match out.last_mut() {
            Some(last) if window.from <= last.to => last.to = last.to.max(window.to),
            _ => out.push(window),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: &str, to: &str, base: &str) -> RecoveryWindow {
        RecoveryWindow {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            base_backup: base.into(),
        }
    }

    #[test]
    fn overlapping_windows_join_and_a_gap_keeps_them_apart() {
        let merged = merge(vec![
            window("2026-11-20T02:00:00Z", "2026-11-22T09:00:00Z", "b2"),
            window("2026-11-19T02:00:00Z", "2026-11-21T10:00:00Z", "b1"),
            window("2026-11-23T02:00:00Z", "2026-11-25T10:00:00Z", "b3"),
        ]);
        assert_eq!(
            merged,
            vec![
                window("2026-11-19T02:00:00Z", "2026-11-22T09:00:00Z", "b1"),
                window("2026-11-23T02:00:00Z", "2026-11-25T10:00:00Z", "b3"),
            ]
        );
        assert!(merge(Vec::new()).is_empty());
    }
}
