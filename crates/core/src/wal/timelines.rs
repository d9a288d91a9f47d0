//! The archive's shape: runs of segments per timeline, gaps, timeline histories, and the path
//! recovery takes across timeline switches.

use super::names::{segment_name, segment_number, segment_of_name, WalName};
use super::parse_lsn;

/// One timeline's run of archived segments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TimelineSpan {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Missing runs `(first missing, last missing)`: every moment after one is unrecoverable
    /// from a base backup taken before it.
    pub gaps: Vec<(String, String)>,
}

/// Groups archived segment names (sorted or not) into timelines and finds gaps.
pub fn spans(names: &[String], segment_size: u64) -> Vec<TimelineSpan> {
    let mut segments: Vec<(u32, u64)> = names
        .iter()
        .filter_map(|n| match WalName::parse(n)? {
            WalName::Segment { timeline, log, seg } => {
                Some((timeline, segment_number(log, seg, segment_size)))
            }
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    segments.dedup();
    let mut out: Vec<TimelineSpan> = Vec::new();
    let mut previous: Option<(u32, u64)> = None;
    for (timeline, number) in segments {
        let name = segment_name(timeline, number, segment_size);
        match (previous, out.last_mut()) {
            (Some((tli, prev)), Some(span)) if tli == timeline => {
                if number > prev + 1 {
                    span.gaps.push((
                        segment_name(timeline, prev + 1, segment_size),
                        segment_name(timeline, number - 1, segment_size),
                    ));
                }
                span.last = name;
                span.segments += 1;
            }
            _ => out.push(TimelineSpan {
                timeline,
                first: name.clone(),
                last: name,
                segments: 1,
                gaps: Vec::new(),
            }),
        }
        previous = Some((timeline, number));
    }
    out
}

/// A timeline history file: each ancestor timeline and the LSN where the next one branched
/// off it, oldest first (`1\t0/3000000\tno recovery target specified`).
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let parent = fields.next()?.parse().ok()?;
            let switch = parse_lsn(fields.next()?)?;
            Some((parent, switch))
        })
        .collect()
}

/// The timeline recovery ends on (`recovery_target_timeline = 'latest'`) from a base backup
/// that started at `start_lsn` on `timeline`: the newest whose history passes through that
/// timeline after the start; `histories` holds each archived timeline's parsed history.
pub fn latest_timeline_from(
    timeline: u32,
    start_lsn: u64,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> (u32, Vec<(u32, u64)>) {
    reachable_from(timeline, start_lsn, histories)
        .into_iter()
        .max_by_key(|(tli, _)| *tli)
        .expect("a base backup's own timeline is always reachable")
}

/// The timelines recovery from a base backup that started at `start_lsn` on `timeline` can
/// follow: its own, and each whose history passes through it after the start.
fn reachable_from(
    timeline: u32,
    start_lsn: u64,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Vec<(u32, Vec<(u32, u64)>)> {
    let mut out = vec![(timeline, Vec::new())];
    out.extend(
        histories
            .iter()
            .filter(|(tli, history)| {
                *tli > timeline
                    && history
                        .iter()
                        .any(|(parent, switch)| *parent == timeline && *switch >= start_lsn)
            })
            .cloned(),
    );
    out
}

/// The timeline a recovery to the latest moment follows from a base backup that started at
/// `start_lsn` on `timeline`: of those it can reach, the one archived last (`last_archived`:
/// each timeline's newest archived file, segment or history, and when it was stored), the
/// ties to the higher number. That is the production line: a timeline that a practice
/// recovery forked off and left behind has a higher number than the line that went on, and
/// PostgreSQL's own `latest` would follow it, losing every later commit of the production line.
pub fn production_line(
    timeline: u32,
    start_lsn: u64,
    histories: &[(u32, Vec<(u32, u64)>)],
    last_archived: &[(u32, jiff::Timestamp)],
) -> (u32, Vec<(u32, u64)>) {
    let archived = |tli: u32| {
        last_archived
            .iter()
            .find(|(t, _)| *t == tli)
            .map(|(_, at)| *at)
    };
    reachable_from(timeline, start_lsn, histories)
        .into_iter()
        .max_by_key(|(tli, _)| (archived(*tli), *tli))
        .expect("a base backup's own timeline is always reachable")
}

/// A timeline that branched off its parent while the parent went on: the parent has archived
/// segments after the one it branched off in. A failover leaves none (the old primary stops);
/// a recovery promoted beside a production server that goes on archiving does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fork {
    pub timeline: u32,
    pub parent: u32,
    /// Where it branched off the parent.
    pub at: String,
    /// The parent's newest archived segment.
    pub parent_went_on_to: String,
}

/// The forks in an archive: each timeline whose parent went on past the branch point.
pub fn forks(
    names: &[String],
    histories: &[(u32, Vec<(u32, u64)>)],
    segment_size: u64,
) -> Vec<Fork> {
    let mut out = Vec::new();
    for (timeline, history) in histories {
        let Some((parent, switch)) = history.last() else {
            continue;
        };
        let newest = names
            .iter()
            .filter_map(|n| segment_of_name(n, segment_size))
            .filter(|(t, _)| t == parent)
            .map(|(_, number)| number)
            .max();
        if let Some(newest) = newest.filter(|n| *n > switch / segment_size) {
            out.push(Fork {
                timeline: *timeline,
                parent: *parent,
                at: super::format_lsn(*switch),
                parent_went_on_to: segment_name(*parent, newest, segment_size),
            });
        }
    }
    out.sort_by_key(|f| f.timeline);
    out
}

/// The first segment missing on recovery's path from segment `first` of `timeline` to the
/// newest archived segment of `last_timeline`, following the switches in `history` (that of
/// `last_timeline`), with the path's segment just before it. Each timeline is read up to the
/// segment where the next branched off; the switch segment itself comes from the new one.
pub fn first_gap_on_path(
    names: &[String],
    timeline: u32,
    first: u64,
    last_timeline: u32,
    history: &[(u32, u64)],
    segment_size: u64,
) -> Option<(String, Option<String>)> {
    let archived: std::collections::HashSet<(u32, u64)> = names
        .iter()
        .filter_map(|n| segment_of_name(n, segment_size))
        .collect();
    // (timeline, from, to exclusive) pieces of the path.
    let mut pieces = Vec::new();
    let (mut current, mut from) = (timeline, first);
    let switches: Vec<&(u32, u64)> = history.iter().filter(|(p, _)| *p >= timeline).collect();
    for (i, (parent, switch)) in switches.iter().enumerate() {
        if *parent != current {
            continue;
        }
        let to = switch / segment_size;
        pieces.push((current, from, to.max(from)));
        current = switches
            .get(i + 1)
            .map_or(last_timeline, |(next_parent, _)| *next_parent);
        from = to.max(from);
    }
    let newest = archived
        .iter()
        .filter(|(tli, _)| *tli == current)
        .map(|(_, n)| *n)
        .max();
    if let Some(newest) = newest {
        pieces.push((current, from, newest + 1));
    }
    let mut before = None;
    for (tli, from, to) in pieces {
        for number in from..to {
            if !archived.contains(&(tli, number)) {
                return Some((segment_name(tli, number, segment_size), before));
            }
            before = Some(segment_name(tli, number, segment_size));
        }
    }
    None
}

/// Where recovery from a base backup begins: its timeline, start LSN and first segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStart {
    pub timeline: u32,
    pub start_lsn: u64,
    pub first: u64,
}

/// How far recovery from base backup number `base` can replay on `timeline`: up to segment
/// `last` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub timeline: u32,
    pub base: usize,
    pub last: String,
}

/// For every archived timeline and every base backup whose recovery can follow it (taken on
/// it, or on an ancestor before the timeline branched off), the newest segment of that
/// timeline that replay gets to: the one before the first missing segment on the way, else
/// the timeline's newest. A base backup that a gap stops before it reaches a timeline does not
/// reach it. `histories` holds each timeline's parsed history file.
pub fn reaches(
    names: &[String],
    starts: &[RecoveryStart],
    histories: &[(u32, Vec<(u32, u64)>)],
    segment_size: u64,
) -> Vec<Reach> {
    let mut out = Vec::new();
    for span in spans(names, segment_size) {
        let timeline = span.timeline;
        let history: &[(u32, u64)] = histories
            .iter()
            .find(|(t, _)| *t == timeline)
            .map_or(&[], |(_, h)| h.as_slice());
        for (base, start) in starts.iter().enumerate() {
            let on_path = start.timeline == timeline
                || history.iter().any(|(parent, switch)| {
                    *parent == start.timeline && *switch >= start.start_lsn
                });
            if !on_path {
                continue;
            }
            let last = match first_gap_on_path(
                names,
                start.timeline,
                start.first,
                timeline,
                history,
                segment_size,
            ) {
                None => span.last.clone(),
                Some((_, Some(before)))
                    if segment_of_name(&before, segment_size)
                        .is_some_and(|(t, _)| t == timeline) =>
                {
                    before
                }
                Some(_) => continue,
            };
            out.push(Reach {
                timeline,
                base,
                last,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::DEFAULT_SEGMENT_SIZE;

    fn archive_of(list: &[(u32, u64)]) -> Vec<String> {
        list.iter()
            .map(|(t, n)| segment_name(*t, *n, DEFAULT_SEGMENT_SIZE))
            .collect()
    }

    #[test]
    fn gaps_are_found_along_the_timeline_path() {
        let seg = DEFAULT_SEGMENT_SIZE;
        let history = parse_history("1\t0/5000028\tno recovery target specified\n");
        assert_eq!(history, vec![(1, 0x500_0028)]);
        // Timeline 1 from 2 to 5, its segment 6 lost after the switch to timeline 2 at
        // segment 5, which goes on from there: nothing missing on the way.
        let archive = archive_of(&[(1, 2), (1, 3), (1, 4), (1, 7), (2, 5), (2, 6), (2, 7)]);
        assert_eq!(first_gap_on_path(&archive, 1, 2, 2, &history, seg), None);
        // Staying on timeline 1, 5 and 6 are missing.
        assert_eq!(
            first_gap_on_path(&archive, 1, 2, 1, &[], seg),
            Some((segment_name(1, 5, seg), Some(segment_name(1, 4, seg))))
        );
        // A hole before the switch, and one after it on the new timeline.
        let holed = archive_of(&[(1, 2), (1, 4), (2, 5), (2, 6)]);
        assert_eq!(
            first_gap_on_path(&holed, 1, 2, 2, &history, seg),
            Some((segment_name(1, 3, seg), Some(segment_name(1, 2, seg))))
        );
        let holed = archive_of(&[(1, 2), (1, 3), (1, 4), (2, 5), (2, 7)]);
        assert_eq!(
            first_gap_on_path(&holed, 1, 2, 2, &history, seg),
            Some((segment_name(2, 6, seg), Some(segment_name(2, 5, seg))))
        );
        // A base backup taken on timeline 2 starts there.
        assert_eq!(first_gap_on_path(&archive, 2, 5, 2, &history, seg), None);
    }

    #[test]
    fn recovery_follows_the_newest_timeline_that_branched_after_the_backup() {
        let histories = vec![
            (2, vec![(1, 0x300_0000)]),
            (3, vec![(1, 0x300_0000), (2, 0x900_0000)]),
            // Branched off timeline 1 before the backup started: not on its path.
            (4, vec![(1, 0x100_0000)]),
        ];
        assert_eq!(latest_timeline_from(1, 0x200_0000, &histories).0, 3);
        assert_eq!(latest_timeline_from(1, 0x400_0000, &histories).0, 1);
        assert_eq!(latest_timeline_from(2, 0x400_0000, &histories).0, 3);
        assert_eq!(latest_timeline_from(3, 0x400_0000, &histories), (3, vec![]));
    }

    #[test]
    fn the_latest_moment_follows_the_timeline_archived_last_not_the_highest_number() {
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        // Timeline 2 branched off timeline 1 at 0/5000028 (a practice recovery, promoted),
        // archived until 10:05; timeline 1 went on until 10:30.
        let histories = vec![(2, vec![(1, 0x500_0028)])];
        let forked = [
            (1, at("2026-12-06T10:30:00Z")),
            (2, at("2026-12-06T10:05:00Z")),
        ];
        assert_eq!(
            production_line(1, 0x200_0028, &histories, &forked),
            (1, vec![])
        );
        // PostgreSQL's `latest` would take timeline 2.
        assert_eq!(latest_timeline_from(1, 0x200_0028, &histories).0, 2);
        // A failover: the old line stopped before the new one was archived.
        let failover = [
            (1, at("2026-12-06T10:00:00Z")),
            (2, at("2026-12-06T10:05:00Z")),
        ];
        assert_eq!(
            production_line(1, 0x200_0028, &histories, &failover),
            (2, vec![(1, 0x500_0028)])
        );
        // A timeline with nothing archived yet but its history comes after one with
        // segments of the same moment only by number.
        let same = [
            (1, at("2026-12-06T10:05:00Z")),
            (2, at("2026-12-06T10:05:00Z")),
        ];
        assert_eq!(production_line(1, 0x200_0028, &histories, &same).0, 2);
        // A base backup taken on timeline 1 after the branch point cannot follow timeline 2.
        assert_eq!(
            production_line(1, 0x600_0028, &histories, &failover),
            (1, vec![])
        );
    }

    #[test]
    fn a_fork_is_a_branch_whose_parent_went_on() {
        let seg = DEFAULT_SEGMENT_SIZE;
        let histories = vec![(2, vec![(1, 0x500_0028)])];
        // The parent stopped in the segment of the switch: a failover, no fork.
        let failover = archive_of(&[(1, 4), (1, 5), (2, 5), (2, 6)]);
        assert_eq!(forks(&failover, &histories, seg), vec![]);
        let forked = archive_of(&[(1, 4), (1, 5), (1, 6), (1, 7), (2, 5)]);
        assert_eq!(
            forks(&forked, &histories, seg),
            vec![Fork {
                timeline: 2,
                parent: 1,
                at: "0/5000028".into(),
                parent_went_on_to: segment_name(1, 7, seg),
            }]
        );
    }

    #[test]
    fn spans_and_gaps() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "000000010000000100000000",
            "00000002.history",
            "000000020000000000000005",
            "000000010000000000000006",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = spans(&names, DEFAULT_SEGMENT_SIZE);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].first, "000000010000000000000001");
        assert_eq!(got[0].last, "000000010000000100000000");
        assert_eq!(got[0].segments, 5);
        assert_eq!(
            got[0].gaps,
            vec![
                (
                    "000000010000000000000003".to_string(),
                    "000000010000000000000004".to_string()
                ),
                (
                    "000000010000000000000007".to_string(),
                    "0000000100000000000000FF".to_string()
                ),
            ]
        );
        assert_eq!(got[1].timeline, 2);
        assert!(got[1].gaps.is_empty());
        assert!(spans(&[], DEFAULT_SEGMENT_SIZE).is_empty());
    }

    #[test]
    fn what_each_base_backup_reaches_on_each_timeline() {
        let seg = DEFAULT_SEGMENT_SIZE;
        let histories = vec![(2, vec![(1, 0x500_0028)])];
        let on_one = RecoveryStart {
            timeline: 1,
            start_lsn: 0x200_0028,
            first: 2,
        };
        let on_two = RecoveryStart {
            timeline: 2,
            start_lsn: 0x600_0028,
            first: 6,
        };
        let reach = |timeline, base, last: (u32, u64)| Reach {
            timeline,
            base,
            last: segment_name(last.0, last.1, seg),
        };
        // Timeline 1 lost segments 5 and 6 after timeline 2 branched off in segment 5.
        let archive = archive_of(&[(1, 2), (1, 3), (1, 4), (1, 7), (2, 5), (2, 6), (2, 7)]);
        assert_eq!(
            reaches(&archive, &[on_one, on_two], &histories, seg),
            vec![
                // On timeline 1 the backup stops at the hole; timeline 2 takes it to its end.
                reach(1, 0, (1, 4)),
                reach(2, 0, (2, 7)),
                reach(2, 1, (2, 7)),
            ]
        );
        // A hole on timeline 1 before the switch: timeline 2 is out of the first backup's
        // reach, not of the second's.
        let holed = archive_of(&[(1, 2), (1, 4), (2, 5), (2, 6), (2, 7)]);
        assert_eq!(
            reaches(&holed, &[on_one, on_two], &histories, seg),
            vec![reach(1, 0, (1, 2)), reach(2, 1, (2, 7))]
        );
        // A backup taken after timeline 2 branched off does not follow it.
        let late = RecoveryStart {
            timeline: 1,
            start_lsn: 0x700_0028,
            first: 7,
        };
        assert_eq!(
            reaches(&archive, &[late], &histories, seg),
            vec![reach(1, 0, (1, 7))]
        );
        // Its first segment missing: it reaches nothing.
        let missing_first = RecoveryStart {
            timeline: 1,
            start_lsn: 0x600_0028,
            first: 6,
        };
        assert_eq!(reaches(&archive, &[missing_first], &histories, seg), vec![]);
    }
}
