//! Choosing what a recovery starts from, and checking that it can get to its target: the
//! newest base backup that ended before the target on a path to its timeline, the target
//! within the window the repository can recover, and no archived segment missing on the way.
//!
//! The timeline followed is always named to PostgreSQL by its number. By default it is the
//! production line: of the timelines the base backup leads to, the one archived last, not
//! simply the highest number (which a recovery promoted beside the production server, then
//! left behind, would have); the plan says so when the two differ. A target that the
//! timeline followed does not hold is refused before anything is unpacked.

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
    /// The backups that restore `base`: its full backup, then its incrementals in order
    /// (`base` alone when it is a full backup).
    pub chain: Vec<Manifest>,
    pub window: Window,
    /// Where a recovery to the latest moment must get to: the newest archived segment of the
    /// timeline it follows, as (timeline, segment number).
    pub archive_end: Option<ArchiveEnd>,
    /// The timeline recovery ends on (`recovery_target_timeline`).
    pub timeline: u32,
    /// Why the timeline followed is not the highest-numbered one the base backup leads to.
    pub fork: Option<String>,
    /// The cluster and the generation whose archive recovery reads.
    pub cluster: String,
    pub generation: wal::cluster::Generation,
}

/// What the archive says of its timelines: each one's history, and when its newest file was
/// archived.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    pub histories: Vec<(u32, Vec<(u32, u64)>)>,
    pub last_archived: Vec<(u32, Timestamp)>,
}

impl Lines {
    fn archived_at(&self, timeline: u32) -> Option<Timestamp> {
        self.last_archived
            .iter()
            .find(|(t, _)| *t == timeline)
            .map(|(_, at)| *at)
    }
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
    let all_bases: Vec<Manifest> = repo
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Base)
        .collect();
    if all_bases.is_empty() {
        return Err(Error::Missing(format!(
            "repository `{}` has no base backup: take one with `lifeboat backup base`",
            repo.location()
        )));
    }
    let cluster = which_cluster(ctx, &all_bases, request)?;
    let sole = wal::cluster::sole(ctx, &cluster);
    let generations = wal::cluster::generations(repo, &cluster, sole).await?;
    let archive = match &request.base {
        Some(id) => {
            let chosen = all_bases.iter().find(|m| &m.id == id).ok_or_else(|| {
                Error::Missing(format!(
                    "no base backup `{id}` in repository `{}`: `lifeboat list` shows them",
                    repo.location()
                ))
            })?;
            let system = chosen
                .base
                .as_ref()
                .and_then(|b| b.system_identifier.as_deref())
                .and_then(|id| id.parse().ok());
            let found = match system {
                Some(system) => {
                    wal::cluster::archive_of_system(repo, &cluster, sole, system).await?
                }
                None => generations
                    .first()
                    .map(|g| wal::WalArchive::new(repo, &cluster, g)),
            };
            match found {
                Some(archive) => archive,
                None => wal::cluster::archive(repo, &cluster, sole, None).await?,
            }
        }
        None => {
            // The generation that was live at the target (by default the newest).
            let live = match &request.target {
                Target::Time(t) => generations
                    .iter()
                    .rev()
                    .find(|g| g.since <= *t)
                    .or(generations.first()),
                _ => generations.last(),
            };
            match live {
                Some(g) => wal::WalArchive::new(repo, &cluster, g),
                None => wal::cluster::archive(repo, &cluster, sole, None).await?,
            }
        }
    };
    let bases: Vec<Manifest> = all_bases
        .iter()
        .filter(|m| archive.holds(m))
        .cloned()
        .collect();
    let names = wal::archived_names(&archive).await?;
    let newest_segment_size = bases
        .last()
        .and_then(|m| m.base.as_ref())
        .map_or(wal::DEFAULT_SEGMENT_SIZE, |b| b.wal_segment_size);
    let lines = Lines {
        histories: wal::read_histories(ctx, &archive, &names).await?,
        last_archived: wal::last_archived(&archive, &names, newest_segment_size).await?,
    };
    let next = generations
        .iter()
        .find(|g| g.generation == archive.generation.generation + 1);
    let older = generations
        .iter()
        .rev()
        .find(|g| g.generation + 1 == archive.generation.generation);
    let Some(oldest) = bases.first() else {
        return Err(match older {
            Some(older) => between(request, older, lines.last_archived.iter().map(|(_, at)| *at).max(), &archive.generation, None),
            None => Error::Missing(format!(
                "repository `{}` has no base backup of {}: take one with `lifeboat backup base --db {cluster}`",
                repo.location(),
                archive.describe()
            )),
        });
    };
    let window = Window {
        from: oldest.finished_at,
        // The newest of any timeline: the highest name may be a timeline that stopped early.
        to: lines.last_archived.iter().map(|(_, at)| *at).max(),
    };
    let chosen = match &request.base {
        Some(id) => bases.iter().find(|m| &m.id == id),
        None => choose_base(&bases, &request.target, request.timeline, &lines),
    };
    // A moment after this generation's WAL ended, or before the next one's first base
    // backup: no recovery reaches it.
    if let (Target::Time(t), Some(next)) = (&request.target, next) {
        if window.to.is_none_or(|to| *t > to) {
            return Err(between(request, &archive.generation, window.to, next, None));
        }
    }
    if let (None, Some(older), Target::Time(_)) = (chosen, older, &request.target) {
        return Err(between(
            request,
            older,
            None,
            &archive.generation,
            Some(oldest.finished_at),
        ));
    }
    let base = match (chosen, request.timeline) {
        (Some(base), _) => base,
        (None, TargetTimeline::Id(id))
            if choose_base(&bases, &request.target, TargetTimeline::Latest, &lines).is_some() =>
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
    let (timeline, _) = path_to(base, request.timeline, &lines).ok_or_else(|| {
        Error::Missing(format!(
            "base backup `{}` does not lead to timeline {}: `lifeboat list wal` shows each timeline and the moments it can recover",
            base.id, request.timeline
        ))
    })?;
    check_target_on(
        &request.target,
        timeline,
        &lines,
        &names,
        segment_size,
        &window,
    )?;
    check_wal_continuity(&archive, base, request, &names, &lines).await?;
    // The check above found no gap on the way to the newest segment of the timeline followed.
    let archive_end = names
        .iter()
        .filter_map(|n| wal::segment_of_name(n, segment_size))
        .filter(|(t, _)| *t == timeline)
        .map(|(_, number)| number)
        .max()
        .map(|segment| ArchiveEnd {
            timeline,
            segment,
            segment_size,
        });
    let fork = match (request.timeline, &base.base) {
        (TargetTimeline::Latest, Some(info)) => {
            let start_lsn = wal::parse_lsn(&info.start_lsn).unwrap_or(0);
            let (highest, _) =
                wal::latest_timeline_from(info.timeline, start_lsn, &lines.histories);
            (highest != timeline).then(|| {
                let at = |t: u32| {
                    lines
                        .archived_at(t)
                        .map_or("never".to_string(), |at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                };
                format!(
                    "timeline {highest} branched off and stopped (newest WAL archived {}) while timeline {timeline} went on (newest WAL archived {}): following timeline {timeline}, the production line; `--target-timeline {highest}` follows the other",
                    at(highest),
                    at(timeline)
                )
            })
        }
        _ => None,
    };
    let chain = crate::postgres::incremental::chain_of(&all_bases, base, repo.location())?;
    Ok(Plan {
        base: base.clone(),
        chain,
        window,
        archive_end,
        timeline,
        fork,
        cluster,
        generation: archive.generation.clone(),
    })
}

/// The cluster a recovery is of: `--db`, else the base backup's named with `--base`, else
/// the only cluster with base backups, else the only archiving one.
fn which_cluster(ctx: &Context, bases: &[Manifest], request: &PitrRequest) -> Result<String> {
    if let Some(db) = &request.db {
        return wal::cluster::which(ctx, Some(db));
    }
    if let Some(base) = request
        .base
        .as_ref()
        .and_then(|id| bases.iter().find(|m| &m.id == id))
    {
        return Ok(base.database.clone());
    }
    let mut names: Vec<&str> = bases.iter().map(|m| m.database.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    match names.as_slice() {
        [one] => Ok((*one).to_string()),
        several => wal::cluster::which(ctx, None).map_err(|_| {
            Error::Usage(format!(
                "the repository has base backups of several clusters ({}): name one with `--db NAME`",
                crate::error::listed(several)
            ))
        }),
    }
}

/// The refusal of a target between two generations: after `older`'s WAL ended (`ended`, when
/// known) and before `newer`'s first base backup (`first_base`, when there is one).
fn between(
    request: &PitrRequest,
    older: &wal::cluster::Generation,
    ended: Option<Timestamp>,
    newer: &wal::cluster::Generation,
    first_base: Option<Timestamp>,
) -> Error {
    let ended = ended.map_or(String::new(), |at| {
        format!(", whose archived WAL ends at {at}")
    });
    let first = first_base.map_or(
        " (it has no base backup yet: take one with `lifeboat backup base`)".to_string(),
        |at| format!(", whose first base backup finished at {at}"),
    );
    Error::OutsideWindow {
        target: describe(&request.target),
        problem: format!(
            "between {}{ended} and {}{first}: no recovery reaches it (the major upgrade between them is not in the WAL)",
            older.describe(),
            newer.describe()
        ),
        window: "a moment before the first's end or after the second's first base backup".into(),
    }
}

/// Refuses a target that the timeline followed does not hold: a time after its newest
/// archived WAL, a position past its newest segment. Another timeline that holds it is named.
fn check_target_on(
    target: &Target,
    timeline: u32,
    lines: &Lines,
    names: &[String],
    segment_size: u64,
    window: &Window,
) -> Result<()> {
    let window_on = |to: Option<Timestamp>| Window {
        from: window.from,
        to,
    };
    match target {
        Target::Time(t) => {
            let Some(end) = lines.archived_at(timeline) else {
                return Ok(());
            };
            if *t <= end {
                return Ok(());
            }
            let other = lines
                .last_archived
                .iter()
                .filter(|(tli, at)| *tli != timeline && *at >= *t)
                .max_by_key(|(_, at)| *at)
                .map_or(String::new(), |(tli, at)| {
                    format!(
                        " (timeline {tli} holds WAL until {}: `--target-timeline {tli}` follows it)",
                        at.strftime("%Y-%m-%d %H:%M:%S UTC")
                    )
                });
            Err(Error::OutsideWindow {
                target: t.to_string(),
                problem: format!(
                    "after the newest archived WAL of timeline {timeline}, the one this recovery follows{other}"
                ),
                window: window_on(Some(end)).to_string(),
            })
        }
        Target::Lsn(lsn) | Target::Name(_, lsn) | Target::BeforeXid(_, lsn) => {
            let segments = || {
                names
                    .iter()
                    .filter_map(|n| wal::segment_of_name(n, segment_size))
            };
            let on_line = segments()
                .filter(|(t, _)| *t == timeline)
                .map(|(_, number)| (number + 1) * segment_size)
                .max();
            let archived_end = on_line
                .or_else(|| {
                    segments()
                        .map(|(_, number)| (number + 1) * segment_size)
                        .max()
                })
                .unwrap_or(0);
            if *lsn > archived_end {
                return Err(Error::OutsideWindow {
                    target: wal::format_lsn(*lsn),
                    problem: format!(
                        "after the newest archived WAL (which ends at {} on timeline {timeline})",
                        wal::format_lsn(archived_end)
                    ),
                    window: window.to_string(),
                });
            }
            Ok(())
        }
        Target::Latest | Target::Immediate => Ok(()),
    }
}

/// Chooses the base backup for a target: the newest that ended before it and from which
/// recovery can follow `timeline` (`lines`: each archived timeline's history and when it was
/// last archived).
pub fn choose_base<'a>(
    bases: &'a [Manifest],
    target: &Target,
    timeline: TargetTimeline,
    lines: &Lines,
) -> Option<&'a Manifest> {
    bases
        .iter()
        .filter(|m| match target {
            Target::Time(t) => m.finished_at <= *t,
            Target::Lsn(lsn) | Target::Name(_, lsn) | Target::BeforeXid(_, lsn) => m
                .base
                .as_ref()
                .and_then(|b| wal::parse_lsn(&b.end_lsn))
                .is_some_and(|end| end <= *lsn),
            Target::Latest | Target::Immediate => true,
        })
        .filter(|m| path_to(m, timeline, lines).is_some())
        .max_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)))
}

/// The timeline recovery from `base` ends on, following `timeline`, with that timeline's
/// history (the switches on the way); `None` when it cannot get there from this base backup.
fn path_to(
    base: &Manifest,
    timeline: TargetTimeline,
    lines: &Lines,
) -> Option<(u32, Vec<(u32, u64)>)> {
    let info = base.base.as_ref()?;
    let start_lsn = wal::parse_lsn(&info.start_lsn).unwrap_or(0);
    let histories = &lines.histories;
    match timeline {
        TargetTimeline::Latest => Some(wal::production_line(
            info.timeline,
            start_lsn,
            histories,
            &lines.last_archived,
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
/// and across each switch to the timeline it follows (by default the production line).
async fn check_wal_continuity(
    repo: &wal::WalArchive<'_>,
    base: &Manifest,
    request: &PitrRequest,
    names: &[String],
    lines: &Lines,
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
        path_to(base, request.timeline, lines).ok_or_else(|| {
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
    let needed_to = match target {
        Target::Lsn(lsn) | Target::Name(_, lsn) | Target::BeforeXid(_, lsn) => Some(*lsn),
        Target::Immediate => wal::parse_lsn(&info.end_lsn),
        _ => None,
    };
    let reachable = match (target, &before_gap) {
        (Target::Lsn(_) | Target::Immediate | Target::Name(..) | Target::BeforeXid(..), _) => {
            wal::segment_of_name(&missing, info.wal_segment_size).is_some_and(|(_, number)| {
                needed_to.is_some_and(|lsn| lsn / info.wal_segment_size < number)
            })
        }
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
                parent: None,
            }),
            tier: None,
            globals: None,
            backup_manifest: None,
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
            choose_base(&bases, target, TargetTimeline::Latest, &Lines::default())
                .map(|m| m.id.clone())
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
        let lines = Lines {
            histories: vec![(2, vec![(1, 0x400_0000)])],
            last_archived: Vec::new(),
        };
        let choose =
            |timeline| choose_base(&bases, &Target::Latest, timeline, &lines).map(|m| m.id.clone());
        assert_eq!(choose(TargetTimeline::Latest), Some(bases[1].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(2)), Some(bases[1].id.clone()));
        // Back on timeline 1: only the backup taken on it.
        assert_eq!(choose(TargetTimeline::Id(1)), Some(bases[0].id.clone()));
        assert_eq!(choose(TargetTimeline::Id(3)), None);
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Latest, &lines),
            Some((2, vec![(1, 0x400_0000)]))
        );
        assert_eq!(
            path_to(&bases[0], TargetTimeline::Current, &lines),
            Some((1, vec![]))
        );
    }
}
