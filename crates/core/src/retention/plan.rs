//! The planner: which backups each rule keeps, and which WAL the kept base backups need.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::{Decision, Item, Policy, Tier, WalPlan};
use crate::repository::manifest::BackupKind;
use crate::wal::WalName;

fn days(n: u32) -> SignedDuration {
    SignedDuration::from_hours(24 * i64::from(n))
}

/// Months since year 0, in the policy's time zone, for calendar comparisons.
fn month_index(t: Timestamp, tz: &TimeZone) -> i64 {
    let z = t.to_zoned(tz.clone());
    i64::from(z.year()) * 12 + i64::from(z.month()) - 1
}

fn year_of(t: Timestamp, tz: &TimeZone) -> i64 {
    i64::from(t.to_zoned(tz.clone()).year())
}

/// Plans every backup at `now`.
pub fn plan_backups(items: &[Item], policy: &Policy, now: Timestamp) -> Vec<Decision> {
    let mut series: BTreeMap<(String, bool), Vec<&Item>> = BTreeMap::new();
    for item in items {
        series
            .entry((item.series.clone(), item.kind == BackupKind::Base))
            .or_default()
            .push(item);
    }
    let mut out = Vec::new();
    for ((_, is_base), mut members) in series {
        members.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        if is_base {
            out.extend(plan_base(&members, policy, now));
        } else {
            out.extend(plan_db(&members, policy, now));
        }
    }
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    keep_chains(items, &mut out);
    out
}

/// A kept incremental keeps the backup it is built on, and so down its chain to the full one;
/// a deleted backup's plan names the incrementals that go with it.
pub fn keep_chains(items: &[Item], decisions: &mut [Decision]) {
    let parent_of = |id: &str| items.iter().find(|i| i.id == id)?.parent.clone();
    // Newest first: a parent kept for its child then keeps its own parent.
    for i in (0..decisions.len()).rev() {
        if !decisions[i].keep {
            continue;
        }
        let mut child = decisions[i].id.clone();
        while let Some(parent) = parent_of(&child) {
            let Some(d) = decisions.iter_mut().find(|d| d.id == parent) else {
                break;
            };
            let reason = format!("incremental `{child}` is built on it");
            if !d.keep {
                d.keep = true;
                d.chain_only = true;
                d.reasons = vec![reason];
            } else if d.chain_only && !d.reasons.contains(&reason) {
                d.reasons.push(reason);
            }
            child = parent;
        }
    }
    for decision in decisions.iter_mut().filter(|d| !d.keep) {
        let dependants: Vec<String> = items
            .iter()
            .filter(|it| it.parent.as_deref() == Some(decision.id.as_str()))
            .map(|it| format!("`{}`", it.id))
            .collect();
        let reason = &mut decision.reasons[0];
        if !dependants.is_empty() && !reason.contains("built on it go with it") {
            reason.push_str(&format!(
                "; the incrementals built on it go with it: {}",
                dependants.join(", ")
            ));
        }
    }
}

fn plan_db(members: &[&Item], policy: &Policy, now: Timestamp) -> Vec<Decision> {
    let tz = &policy.time_zone;
    let daily_start = now
        .checked_sub(days(policy.daily_days))
        .unwrap_or(Timestamp::MIN);
    let now_month = month_index(now, tz);
    let now_year = year_of(now, tz);
    // The first backup of each month and year (members are sorted by start).
    let mut first_of_month: BTreeMap<i64, &str> = BTreeMap::new();
    let mut first_of_year: BTreeMap<i64, &str> = BTreeMap::new();
    for m in members {
        first_of_month
            .entry(month_index(m.started, tz))
            .or_insert(&m.id);
        first_of_year.entry(year_of(m.started, tz)).or_insert(&m.id);
    }
    let newest = members.last().map(|m| m.id.as_str());
    members
        .iter()
        .map(|m| {
            let local = m.started.to_zoned(tz.clone());
            let month = month_index(m.started, tz);
            let year = year_of(m.started, tz);
            let mut reasons = Vec::new();
            let daily = m.started >= daily_start;
            if daily {
                reasons.push(format!("daily, within {} days", policy.daily_days));
            }
            let monthly = first_of_month.get(&month) == Some(&m.id.as_str())
                && now_month - month < i64::from(policy.monthly_months);
            if monthly {
                reasons.push(format!("monthly {}", local.strftime("%Y-%m")));
            }
            let yearly = first_of_year.get(&year) == Some(&m.id.as_str())
                && policy
                    .yearly_years
                    .is_none_or(|n| now_year - year < i64::from(n));
            if yearly {
                reasons.push(format!("yearly {}", local.strftime("%Y")));
            }
            if Some(m.id.as_str()) == newest {
                reasons.push("newest of its series".into());
            }
            let keep = !reasons.is_empty();
            // Kept only for its month or year: it moves to that tier's storage class.
            let wanted = if daily || !keep {
                None
            } else if yearly {
                Some(Tier::Yearly)
            } else if monthly {
                Some(Tier::Monthly)
            } else {
                None
            };
            let promote = wanted.filter(|t| m.tier.is_none_or(|current| current < *t));
            if !keep {
                reasons.push(format!(
                    "older than {} days, not the first of its month within {} months nor of its year",
                    policy.daily_days, policy.monthly_months
                ));
            }
            Decision {
                id: m.id.clone(),
                kind: m.kind,
                series: m.series.clone(),
                started: m.started,
                keep,
                reasons,
                promote,
                chain_only: false,
            }
        })
        .collect()
}

fn plan_base(members: &[&Item], policy: &Policy, now: Timestamp) -> Vec<Decision> {
    let window_start = now
        .checked_sub(days(policy.pitr_days))
        .unwrap_or(Timestamp::MIN);
    let anchor = members
        .iter()
        .rev()
        .find(|m| m.finished <= window_start)
        .map(|m| m.id.clone());
    let newest = members.last().map(|m| m.id.clone());
    members
        .iter()
        .map(|m| {
            let mut reasons = Vec::new();
            if m.finished > window_start {
                reasons.push(format!("within the {}-day PITR window", policy.pitr_days));
            }
            if Some(&m.id) == anchor.as_ref() {
                reasons.push(format!(
                    "base of the PITR window's start ({} days ago)",
                    policy.pitr_days
                ));
            }
            if Some(&m.id) == newest.as_ref() {
                reasons.push("newest of its series".into());
            }
            let keep = !reasons.is_empty();
            if !keep {
                reasons.push(format!(
                    "older than the {}-day PITR window, replaced by a later base backup",
                    policy.pitr_days
                ));
            }
            Decision {
                id: m.id.clone(),
                kind: m.kind,
                series: m.series.clone(),
                started: m.started,
                keep,
                reasons,
                promote: None,
                chain_only: false,
            }
        })
        .collect()
}

/// Plans the WAL archive: everything before the first segment of the oldest kept base
/// backup goes (timeline history files always stay); with no kept base backup, all stays.
pub fn plan_wal(items: &[Item], decisions: &[Decision], archived: &[String]) -> WalPlan {
    let kept_bases = decisions
        .iter()
        .filter(|d| d.kind == BackupKind::Base && d.keep && !d.chain_only)
        .filter_map(|d| {
            let item = items.iter().find(|i| i.id == d.id)?;
            let first = item.first_wal.clone()?;
            Some((position(&first)?, first, d.id.clone()))
        })
        .min();
    let Some((cut, first, base)) = kept_bases else {
        return WalPlan {
            keep_from: None,
            delete: Vec::new(),
            kept: archived.len(),
        };
    };
    let mut plan = WalPlan {
        keep_from: Some((first, base)),
        ..WalPlan::default()
    };
    for name in archived {
        match position(name) {
            Some(p) if p < cut => plan.delete.push(name.clone()),
            _ => plan.kept += 1,
        }
    }
    plan
}

/// A WAL file's place in the WAL stream: its log and segment (timelines share the numbering);
/// `None` for history files, which are never deleted.
fn position(name: &str) -> Option<(u32, u32)> {
    match WalName::parse(name)? {
        WalName::Segment { log, seg, .. }
        | WalName::Partial { log, seg, .. }
        | WalName::Backup { log, seg, .. } => Some((log, seg)),
        WalName::History { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn db(id: &str, started: &str) -> Item {
        Item {
            id: id.into(),
            kind: BackupKind::Db,
            series: "db main".into(),
            started: t(started),
            finished: t(started),
            tier: None,
            first_wal: None,
            parent: None,
        }
    }

    fn base(id: &str, started: &str, first_wal: &str) -> Item {
        Item {
            id: id.into(),
            kind: BackupKind::Base,
            series: "base main".into(),
            started: t(started),
            finished: t(started) + SignedDuration::from_mins(10),
            tier: None,
            first_wal: Some(first_wal.into()),
            parent: None,
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    fn reasons<'a>(decisions: &'a [Decision], id: &str) -> &'a [String] {
        &decisions.iter().find(|d| d.id == id).unwrap().reasons
    }

    /// A backup every day at 02:00 UTC from `from` for `n` days, ids `dYYYY-MM-DD`.
    fn daily(from: &str, n: i64) -> Vec<Item> {
        let start = t(from);
        (0..n)
            .map(|i| {
                let at = start + SignedDuration::from_hours(24 * i);
                db(&format!("d{}", &at.to_string()[..10]), &at.to_string())
            })
            .collect()
    }

    #[test]
    fn empty_repository_plans_nothing() {
        let policy = Policy::default();
        assert!(plan_backups(&[], &policy, t("2026-11-24T00:00:00Z")).is_empty());
        assert_eq!(
            plan_wal(&[], &[], &["000000010000000000000001".into()])
                .delete
                .len(),
            0
        );
    }

    #[test]
    fn a_year_of_daily_backups() {
        let items = daily("2025-11-01T02:00:00Z", 389); // to 2026-11-24
        let now = t("2026-11-24T12:00:00Z");
        let plan = plan_backups(&items, &Policy::default(), now);
        let kept = kept(&plan);
        // 30 dailies (2026-10-26 .. 2026-11-24, counting the one exactly 30 days back is out).
        let dailies = plan
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r.starts_with("daily")))
            .count();
        assert_eq!(dailies, 30);
        // Monthly: 2025-12 .. 2026-11 (12 months); 2025-11 is out of the 12 months.
        for month in ["2025-12", "2026-01", "2026-06", "2026-11"] {
            let id = format!("d{month}-01");
            assert!(kept.contains(&id.as_str()), "{id} not kept");
            assert!(reasons(&plan, &id).contains(&format!("monthly {month}")));
        }
        // 2025-11-01 is the first of 2025 in this repository: yearly, forever.
        assert_eq!(reasons(&plan, "d2025-11-01"), ["yearly 2025"]);
        assert_eq!(
            reasons(&plan, "d2026-01-01"),
            ["monthly 2026-01", "yearly 2026"]
        );
        assert!(!kept.contains(&"d2025-11-02"));
        assert!(!kept.contains(&"d2026-10-24"));
        assert_eq!(kept.len(), 30 + 11 + 1); // November 2026's first is also a daily
                                             // Promotions: kept only for its month or year, outside the daily window.
        let promoted = |id: &str| plan.iter().find(|d| d.id == id).unwrap().promote;
        assert_eq!(promoted("d2026-01-01"), Some(Tier::Yearly));
        assert_eq!(promoted("d2026-02-01"), Some(Tier::Monthly));
        assert_eq!(promoted("d2026-11-01"), None); // still a daily
    }

    #[test]
    fn calendar_months_follow_the_time_zone() {
        // 2026-02-28T23:30 in UTC is already March 1st in Jakarta (+07:00).
        let items = vec![
            db("a", "2026-02-10T02:00:00Z"),
            db("b", "2026-02-28T23:30:00Z"),
            db("c", "2026-03-02T02:00:00Z"),
        ];
        let now = t("2026-06-01T00:00:00Z");
        let utc = plan_backups(&items, &Policy::default(), now);
        assert_eq!(kept(&utc), ["a", "c"]);
        let jakarta = Policy {
            time_zone: TimeZone::get("Asia/Jakarta").unwrap(),
            ..Policy::default()
        };
        let local = plan_backups(&items, &jakarta, now);
        assert_eq!(kept(&local), ["a", "b", "c"]);
        assert!(reasons(&local, "b").contains(&"monthly 2026-03".to_string()));
    }

    #[test]
    fn dst_change_does_not_shift_the_month() {
        // New York leaves DST on 2026-11-01 at 02:00 local; 2026-11-01T04:30Z is 23:30 on
        // October 31st there (still EDT, -04:00), 05:30Z is 01:30 EDT on November 1st.
        let ny = Policy {
            time_zone: TimeZone::get("America/New_York").unwrap(),
            ..Policy::default()
        };
        let items = vec![
            db("oct", "2026-10-15T12:00:00Z"),
            db("oct-last", "2026-11-01T03:30:00Z"),
            db("nov-first", "2026-11-01T04:30:00Z"),
            db("nov", "2026-11-02T12:00:00Z"),
        ];
        let plan = plan_backups(&items, &ny, t("2027-01-15T00:00:00Z"));
        assert_eq!(kept(&plan), ["oct", "nov-first", "nov"]);
    }

    #[test]
    fn several_backups_a_day_and_gaps() {
        let items = vec![
            db("jan-a", "2026-01-05T02:00:00Z"),
            db("jan-b", "2026-01-05T14:00:00Z"),
            // No backup at all in February and March.
            db("apr-a", "2026-04-20T02:00:00Z"),
            db("apr-b", "2026-04-20T03:00:00Z"),
        ];
        let plan = plan_backups(&items, &Policy::default(), t("2026-07-01T00:00:00Z"));
        assert_eq!(kept(&plan), ["jan-a", "apr-a", "apr-b"]);
        assert_eq!(reasons(&plan, "apr-b"), ["newest of its series"]);
        assert!(reasons(&plan, "jan-b")[0].starts_with("older than 30 days"));
    }

    #[test]
    fn the_newest_backup_is_never_deleted() {
        let items = vec![
            db("old", "2020-03-05T02:00:00Z"),
            db("older", "2020-01-05T02:00:00Z"),
        ];
        let policy = Policy {
            yearly_years: Some(1),
            ..Policy::default()
        };
        let plan = plan_backups(&items, &policy, t("2026-11-24T00:00:00Z"));
        assert_eq!(kept(&plan), ["old"]);
    }

    #[test]
    fn series_do_not_compete() {
        let mut schema_only = db("s", "2026-01-01T02:00:00Z");
        schema_only.series = "db main schema-only".into();
        let items = vec![db("full", "2026-01-02T02:00:00Z"), schema_only];
        let plan = plan_backups(&items, &Policy::default(), t("2026-01-10T00:00:00Z"));
        assert_eq!(kept(&plan), ["s", "full"]);
        assert_eq!(reasons(&plan, "full")[1], "monthly 2026-01");
    }

    #[test]
    fn a_policy_change_applies_to_old_backups() {
        let items = daily("2026-01-01T02:00:00Z", 120);
        let now = t("2026-05-01T12:00:00Z");
        let long = plan_backups(
            &items,
            &Policy {
                daily_days: 90,
                ..Policy::default()
            },
            now,
        );
        let short = plan_backups(
            &items,
            &Policy {
                daily_days: 7,
                ..Policy::default()
            },
            now,
        );
        // 90 days back from May 1st 12:00 is Jan 31st 12:00: Feb 1st .. Apr 30th, plus Jan 1st.
        assert_eq!(kept(&long).len(), 89 + 1);
        // 7 days back: Apr 25th .. 30th, plus the first of Jan, Feb, Mar and Apr.
        assert_eq!(kept(&short).len(), 6 + 4);
    }

    #[test]
    fn promotion_happens_once() {
        let mut item = db("feb", "2026-02-01T02:00:00Z");
        let later = db("mar", "2026-03-01T02:00:00Z");
        let now = t("2026-06-01T00:00:00Z");
        let plan = plan_backups(&[item.clone(), later.clone()], &Policy::default(), now);
        assert_eq!(plan[0].promote, Some(Tier::Yearly));
        item.tier = Some(Tier::Yearly);
        let plan = plan_backups(&[item, later], &Policy::default(), now);
        assert_eq!(plan[0].promote, None);
    }

    #[test]
    fn base_backups_and_wal_cover_the_pitr_window() {
        let items = vec![
            base("b1", "2026-11-01T02:00:00Z", "000000010000000000000010"),
            base("b2", "2026-11-10T02:00:00Z", "000000010000000000000020"),
            base("b3", "2026-11-16T02:00:00Z", "000000010000000000000030"),
            base("b4", "2026-11-20T02:00:00Z", "000000020000000000000040"),
        ];
        let now = t("2026-11-24T12:00:00Z"); // window starts 2026-11-17T12:00Z
        let plan = plan_backups(&items, &Policy::default(), now);
        assert_eq!(kept(&plan), ["b3", "b4"]);
        assert!(reasons(&plan, "b3")[0].starts_with("base of the PITR window's start"));
        let archived: Vec<String> = [
            "000000010000000000000011",
            "000000010000000000000020.00000028.backup",
            "00000001000000000000002F",
            "000000010000000000000030",
            "000000010000000000000031.partial",
            "00000002.history",
            "000000020000000000000031",
            "000000020000000000000041",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let wal = plan_wal(&items, &plan, &archived);
        assert_eq!(
            wal.keep_from,
            Some(("000000010000000000000030".into(), "b3".into()))
        );
        assert_eq!(
            wal.delete,
            [
                "000000010000000000000011",
                "000000010000000000000020.00000028.backup",
                "00000001000000000000002F"
            ]
        );
        assert_eq!(wal.kept, 5);
    }

    #[test]
    fn without_base_backups_no_wal_is_deleted() {
        let archived = vec!["000000010000000000000011".to_string()];
        let items = vec![db("d", "2026-01-01T00:00:00Z")];
        let plan = plan_backups(&items, &Policy::default(), t("2026-11-24T00:00:00Z"));
        let wal = plan_wal(&items, &plan, &archived);
        assert!(wal.delete.is_empty() && wal.keep_from.is_none());
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain_and_a_chain_goes_whole() {
        let child = |id: &str, started: &str, wal: &str, parent: &str| Item {
            parent: Some(parent.into()),
            ..base(id, started, wal)
        };
        let items = vec![
            // An old chain nothing needs any more.
            base("old", "2026-10-01T02:00:00Z", "000000010000000000000001"),
            child(
                "old+1",
                "2026-10-02T02:00:00Z",
                "000000010000000000000002",
                "old",
            ),
            // A chain whose second incremental is the base of the PITR window's start.
            base("full", "2026-11-01T02:00:00Z", "000000010000000000000010"),
            child(
                "one",
                "2026-11-02T02:00:00Z",
                "000000010000000000000020",
                "full",
            ),
            child(
                "two",
                "2026-11-10T02:00:00Z",
                "000000010000000000000030",
                "one",
            ),
            child(
                "three",
                "2026-11-20T02:00:00Z",
                "000000010000000000000040",
                "two",
            ),
        ];
        let plan = plan_backups(&items, &Policy::default(), t("2026-11-21T00:00:00Z"));
        assert_eq!(kept(&plan), ["full", "one", "two", "three"]);
        assert_eq!(reasons(&plan, "one"), ["incremental `two` is built on it"]);
        assert!(reasons(&plan, "two")[0].starts_with("base of the PITR window's start"));
        let old = reasons(&plan, "old");
        assert!(
            old[0].ends_with("the incrementals built on it go with it: `old+1`"),
            "{old:?}"
        );
        // Planned again (prune does, after locks): said once.
        let mut again = plan.clone();
        keep_chains(&items, &mut again);
        assert_eq!(again, plan);
        // The WAL from the window's base on: what comes before it only the chain's data needs.
        let archived: Vec<String> = [
            "000000010000000000000011",
            "00000001000000000000002F",
            "000000010000000000000030",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let wal = plan_wal(&items, &plan, &archived);
        assert_eq!(
            wal.keep_from,
            Some(("000000010000000000000030".into(), "two".into()))
        );
        assert_eq!(wal.delete.len(), 2);
    }
}
