//! Choosing what a recovery starts from, and checking that it can get to its target: the
//! newest base backup that ended before the target on a path to its timeline, the target
//! within the window the repository can recover, and no archived segment missing on the way.

use jiff::Timestamp;

use super::{describe, PitrRequest, Target, TargetTimeline};
use crate::error::{Error, Result};
use crate::repository::manifest::{BackupKind, Manifest};
use crate::repository::Repository;
use crate::wal;
use crate::Context;

/// What a recovery will use.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base: Manifest,
    pub window: Window,
    /// Where a recovery to the latest moment must get to: the newest archived segment of the
    /// timeline it follows, as (timeline, segment number).
    pub archive_end: Option<ArchiveEnd>,
}

/// The newest archived segment of a timeline.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveEnd {
    pub timeline: u32,
    pub segment: u64,
    pub segment_size: u64,
}

/// What the repository can recover to: from the end of the oldest base backup to the newest
/// archived WAL.
#[derive(Debug, Clone)]
pub struct Window {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(f, "{} to {}", self.from, to),
            None => write!(f, "{} onwards", self.from),
        }
    }
}

/// Chooses the base backup for `request` and checks that recovery from it reaches the target.
pub async fn plan(ctx: &Context, repo: &Repository, request: &PitrRequest) -> Result<Plan> {
    let bases: Vec<Manifest> = repo
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Base)
        .collect();
    let oldest = bases.first().ok_or_else(|| {
        Error::Missing(format!(
            "repository `{}` has no base backup: take one with `lifeboat backup base`",
            repo.location()
        ))
    })?;
    let names = wal::archived_names(repo).await?;
    let histories = wal::read_histories(ctx, repo, &names).await?;
    let window = Window {
        from: oldest.finished_at,
        to: newest_wal_time(repo, &names).await?,
    };
    let chosen = match &request.base {
        Some(id) => bases.iter().find(|m| &m.id == id),
        None => choose_base(&bases, &request.target, request.timeline, &histories),
    };
    let base = match (chosen, request.timeline) {
        (Some(base), _) => base,
        (None, TargetTimeline::Id(id))
            if choose_base(&bases, &request.target, TargetTimeline::Latest, &histories)
                .is_some() =>
        {
            return Err(Error::Missing(format!(
                "no base backup before target `{}` leads to timeline {id}: `lifeboat list wal` shows each timeline and the moments it can recover",
                describe(&request.target)
            )))
        }
        (None, _) => {
            return Err(Error::OutsideWindow {
                target: describe(&request.target),
                problem: "before the oldest base backup".into(),
                window: window.to_string(),
            })
        }
    };
    if let (Target::Time(t), Some(to)) = (&request.target, window.to) {
        if *t > to {
            return Err(Error::OutsideWindow {
                target: t.to_string(),
                problem: "after the newest archived WAL".into(),
                window: window.to_string(),
            });
        }
    }
    let segment_size = base
        .base
        .as_ref()
        .map_or(wal::DEFAULT_SEGMENT_SIZE, |b| b.wal_segment_size);
    let segments = || {
        names
            .iter()
            .filter_map(move |n| wal::segment_of_name(n, segment_size))
    };
    if let Target::Lsn(lsn) = request.target {
        let archived_end = segments()
            .map(|(_, number)| (number + 1) * segment_size)
            .max()
            .unwrap_or(0);
        if lsn > archived_end {
            return Err(Error::OutsideWindow {
                target: wal::format_lsn(lsn),
                problem: format!(
                    "after the newest archived WAL (which ends at {})",
                    wal::format_lsn(archived_end)
                ),
                window: window.to_string(),
            });
        }
    }
    check_wal_continuity(repo, base, request, &names, &histories).await?;
    // The check above found no gap on the way to the newest segment of the timeline followed.
    let archive_end = path_to(base, request.timeline, &histories).and_then(|(timeline, _)| {
        segments()
            .filter(|(t, _)| *t == timeline)
            .map(|(_, number)| number)
            .max()
            .map(|segment| ArchiveEnd {
                timeline,
                segment,
                segment_size,
            })
    });
    Ok(Plan {
        base: base.clone(),
        window,
        archive_end,
    })
}

/// Chooses the base backup for a target: the newest that ended before it and from which
/// recovery can follow `timeline` (`histories`: each archived timeline's parsed history).
pub fn choose_base<'a>(
    bases: &'a [Manifest],
    target: &Target,
    timeline: TargetTimeline,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Option<&'a Manifest> {
    bases
        .iter()
        .filter(|m| match target {
            Target::Time(t) => m.finished_at <= *t,
            Target::Lsn(lsn) => m
                .base
                .as_ref()
                .and_then(|b| wal::parse_lsn(&b.end_lsn))
                .is_some_and(|end| end <= *lsn),
            Target::Latest => true,
        })
        .filter(|m| path_to(m, timeline, histories).is_some())
        .max_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)))
}

/// The timeline recovery from `base` ends on, following `timeline`, with that timeline's
/// history (the switches on the way); `None` when it cannot get there from this base backup.
fn path_to(
    base: &Manifest,
    timeline: TargetTimeline,
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Option<(u32, Vec<(u32, u64)>)> {
    let info = base.base.as_ref()?;
    let start_lsn = wal::parse_lsn(&info.start_lsn).unwrap_or(0);
    match timeline {
        TargetTimeline::Latest => Some(wal::latest_timeline_from(
            info.timeline,
            start_lsn,
            histories,
        )),
        TargetTimeline::Current => Some((info.timeline, Vec::new())),
        TargetTimeline::Id(id) if id == info.timeline => Some((id, Vec::new())),
        TargetTimeline::Id(id) => {
            let (_, history) = histories.iter().find(|(t, _)| *t == id)?;
            history
                .iter()
                .any(|(parent, switch)| *parent == info.timeline && *switch >= start_lsn)
                .then(|| (id, history.clone()))
        }
    }
}

/// Refuses a recovery that a hole in the archive would stop short of its target: WAL replays
/// only in sequence, so a missing segment makes every later moment unrecoverable. The path
/// checked is the one recovery takes: from the base backup's first segment along its timeline,
/// and across each switch to the timeline it follows (by default the newest that branched off
/// after the backup started, as `recovery_target_timeline = 'latest'` does).
async fn check_wal_continuity(
    repo: &Repository,
    base: &Manifest,
    request: &PitrRequest,
    names: &[String],
    histories: &[(u32, Vec<(u32, u64)>)],
) -> Result<()> {
    let Some(info) = &base.base else {
        return Ok(());
    };
    let first = wal::segment_of_name(&info.first_wal, info.wal_segment_size);
    let (Some((_, first)), true) = (first, names.contains(&info.first_wal)) else {
        return Err(Error::Missing(format!(
            "WAL segment `{}`, the first that base backup `{}` needs, is missing from the archive",
            info.first_wal, base.id
        )));
    };
    let (last_timeline, history) =
        path_to(base, request.timeline, histories).ok_or_else(|| {
            Error::Missing(format!(
                "base backup `{}` does not lead to timeline {}: `lifeboat list wal` shows each timeline and the moments it can recover",
                base.id, request.timeline
            ))
        })?;
    let Some((missing, before_gap)) = wal::first_gap_on_path(
        names,
        info.timeline,
        first,
        last_timeline,
        &history,
        info.wal_segment_size,
    ) else {
        return Ok(());
    };
    let target = &request.target;
    let reachable = match (target, &before_gap) {
        (Target::Lsn(lsn), _) => wal::segment_of_name(&missing, info.wal_segment_size)
            .is_some_and(|(_, number)| lsn / info.wal_segment_size < number),
        (Target::Time(t), Some(last)) => wal::stored_at(repo, last)
            .await?
            .is_some_and(|until| *t <= until),
        _ => false,
    };
    if reachable {
        Ok(())
    } else {
        Err(Error::Missing(format!(
            "WAL segment `{missing}` is missing from the archive: recovery from base backup `{}` cannot pass it; `lifeboat list wal` shows the gaps",
            base.id
        )))
    }
}

/// When the newest archived WAL segment among `names` was stored.
async fn newest_wal_time(repo: &Repository, names: &[String]) -> Result<Option<Timestamp>> {
    let newest = names
        .iter()
        .filter(|n| matches!(wal::WalName::parse(n), Some(wal::WalName::Segment { .. })))
        .max();
    match newest {
        Some(name) => wal::stored_at(repo, name).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::BackupKind;
    use crate::repository::manifest::BaseInfo;

    fn base(id: &str, finished: &str, end_lsn: &str) -> Manifest {
        let t: Timestamp = finished.parse().unwrap();
        Manifest {
            format: 1,
            id: id.into(),
            kind: BackupKind::Base,
            database: "main".into(),
            dbname: "yomira".into(),
            options: Default::default(),
            server_version: "15".into(),
            client_version: "15".into(),
            started_at: t,
            finished_at: t,
            data: String::new(),
            raw_size: 0,
            stored_size: 0,
            sha256: String::new(),
            compression: crate::repository::manifest::Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            storage_class: None,
            tool_version: String::new(),
            tables: Vec::new(),
            base: Some(BaseInfo {
                start_lsn: "0/1000000".into(),
                end_lsn: end_lsn.into(),
                timeline: 1,
                first_wal: String::new(),
                last_wal: String::new(),
                wal_segment_size: wal::DEFAULT_SEGMENT_SIZE,
                system_identifier: None,
            }),
            tier: None,
            globals: None,
        }
    }

    #[test]
    fn chooses_the_newest_base_before_the_target() {
        let bases = vec![
            base("20260101T000000Z-0001", "2026-01-01T00:10:00Z", "0/3000000"),
            base("20260102T000000Z-0002", "2026-01-02T00:10:00Z", "0/9000000"),
        ];
        let at = |t: &str| Target::Time(t.parse().unwrap());
        let choose = |target: &Target| {
            choose_base(&bases, target, TargetTimeline::Latest, &[]).map(|m| m.id.clone())
        };
        assert_eq!(
            choose(&at("2026-01-01T12:00:00Z")),
            Some(bases[0].id.clone())
        );
        assert_eq!(
            choose(&at("2026-01-03T00:00:00Z")),
            Some(bases[1].id.clone())
        );
        assert_eq!(choose(&at("2026-01-01T00:05:00Z")), None);
        assert_eq!(choose(&Target::Lsn(0x5000000)), Some(bases[0].id.clone()));
        assert_eq!(choose(&Target::Latest), Some(bases[1].id.clone()));
    }

    #[test]
    fn a_chosen_timeline_takes_the_base_backups_that_lead_to_it() {
        let mut on_two = base("20260103T000000Z-0003", "2026-01-03T00:10:00Z", "0/A000000");
        on_two.base.as_mut().unwrap().timeline = 2;
        on_two.base.as_mut().unwrap().start_lsn = "0/9800000".into();
        let bases = vec![
            base("20260101T000000Z-0001", "2026-01-01T00:10:00Z", "0/3000000"),
            on_two,
        ];
        // Timeline 2 branched off timeline 1 at 0/4000000, after the first backup started.
        let histories = vec![(2, vec![(1, 0x400_0000)])];
        let choose = |timeline| {
            choose_base(&bases, &Target::Latest, timeline, &histories).map(|m| m.id.clone())
        };
        assert_eq!(choose(TargetTimeline::Latest), Some(bases[1].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(2)), Some(bases[1].id.clone()));
        // Back on timeline 1: only the backup taken on it.
        assert_eq!(choose(TargetTimeline::Id(1)), Some(bases[0].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(3)), None);
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Latest, &histories),
            Some((2, vec![(1, 0x400_0000)]))
        );
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Current, &histories),
            Some((1, vec![]))
        );
    }
}
