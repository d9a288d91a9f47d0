//! The retention policy, and the S3 Object Lock dates it sets, without I/O: until when each
//! committed object is held. A hold never ends later than the date retention is sure to keep
//! the object to, so that `prune` meets a hold only where the policy was shortened since (it
//! then keeps the object and says so). ("Hold" is S3 Object Lock in lifeboat's code; "lock"
//! is only ever the run lock, [`super::lock`].)
//!
//! - a dump (and a Redis snapshot): its start plus `daily_days`; when `prune` keeps it as its
//!   month's first, the first day of the month `monthly_months` after its own; as its year's
//!   first, the first day of the year `yearly_years` after (kept forever: a year from now,
//!   renewed by `prune` whenever less than eleven months are left);
//! - a base backup: its end plus `pitr_days`; an archived WAL file: its push plus `pitr_days`;
//! - the repository's marker: a year from now, renewed like a yearly dump.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::LockMode;
use crate::repository::manifest::BackupKind;

#[derive(Debug, Clone)]
pub struct Policy {
    pub time_zone: TimeZone,
    pub daily_days: u32,
    pub monthly_months: u32,
    /// `None`: yearly backups are kept forever.
    pub yearly_years: Option<u32>,
    pub pitr_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            time_zone: TimeZone::UTC,
            daily_days: 30,
            monthly_months: 12,
            yearly_years: None,
            pitr_days: 7,
        }
    }
}

impl From<&crate::config::RetentionConfig> for Policy {
    fn from(config: &crate::config::RetentionConfig) -> Self {
        Policy {
            time_zone: config.time_zone.zone().clone(),
            daily_days: config.daily_days,
            monthly_months: config.monthly_months,
            yearly_years: config.yearly_years,
            pitr_days: config.pitr_days,
        }
    }
}

/// One backup as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Daily,
    Monthly,
    Yearly,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Daily => "daily",
            Tier::Monthly => "monthly",
            Tier::Yearly => "yearly",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text {
            "daily" => Some(Tier::Daily),
            "monthly" => Some(Tier::Monthly),
            "yearly" => Some(Tier::Yearly),
            _ => None,
        }
    }
}

/// A lock that runs on lasts this long from when it is set.
const ROLLING_DAYS: i64 = 365;
/// ... and is renewed once this much of it has passed.
const RENEW_AFTER_DAYS: i64 = 30;

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// How objects are held (S3 Object Lock): the mode, and the policy that dates the holds.
#[derive(Debug, Clone)]
pub struct Hold {
    pub mode: LockMode,
    pub policy: Policy,
}

/// Until when an object is to be locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Until {
    pub date: Timestamp,
    /// A lock that runs on (renewed while the object is kept), not one that ends.
    pub rolling: bool,
}

impl Until {
    fn fixed(date: Timestamp) -> Until {
        Until {
            date,
            rolling: false,
        }
    }

    /// A lock that runs on, set at `at`.
    pub fn rolling(at: Timestamp) -> Until {
        Until {
            date: at
                .saturating_add(days(ROLLING_DAYS))
                .unwrap_or(Timestamp::MAX),
            rolling: true,
        }
    }

    /// Whether an object locked until `current` (`None`: not locked) needs this lock set:
    /// when its lock ends earlier, and for a rolling lock, once a month of it has passed.
    pub fn extends(&self, current: Option<Timestamp>) -> bool {
        let Some(current) = current else { return true };
        let wanted = if self.rolling {
            self.date
                .checked_sub(days(RENEW_AFTER_DAYS))
                .unwrap_or(self.date)
        } else {
            self.date
        };
        current < wanted
    }
}

impl Hold {
    /// From the configuration (a copy's, through [`crate::config::Config::for_copy`]).
    pub fn from_config(config: &crate::config::Config) -> Option<Hold> {
        config.repository.object_lock.map(|mode| Hold {
            mode,
            policy: Policy::from(&config.retention),
        })
    }

    /// A backup's lock: as committed (`tier` unset or daily), or kept for its month or year.
    pub fn backup(
        &self,
        kind: BackupKind,
        started: Timestamp,
        finished: Timestamp,
        tier: Option<Tier>,
        at: Timestamp,
    ) -> Until {
        let policy = &self.policy;
        let tz = &policy.time_zone;
        let local = started.to_zoned(tz.clone());
        let first_of = |year: i16, month: i8| {
            jiff::civil::date(year, month, 1)
                .to_zoned(tz.clone())
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MAX)
        };
        match (kind, tier) {
            (BackupKind::Base, _) => Until::fixed(
                finished
                    .saturating_add(days(policy.pitr_days.into()))
                    .unwrap_or(Timestamp::MAX),
            ),
            (_, Some(Tier::Yearly)) => match policy.yearly_years {
                None => Until::rolling(at),
                Some(years) => {
                    let year = i64::from(local.year()) + i64::from(years);
                    Until::fixed(first_of(i16::try_from(year).unwrap_or(i16::MAX), 1))
                }
            },
            (_, Some(Tier::Monthly)) => {
                let index = i64::from(local.year()) * 12 + i64::from(local.month()) - 1
                    + i64::from(policy.monthly_months);
                let year = i16::try_from(index.div_euclid(12)).unwrap_or(i16::MAX);
                let month = i8::try_from(index.rem_euclid(12) + 1).unwrap_or(1);
                Until::fixed(first_of(year, month))
            }
            _ => Until::fixed(
                started
                    .saturating_add(days(policy.daily_days.into()))
                    .unwrap_or(Timestamp::MAX),
            ),
        }
    }

    /// An archived WAL file's lock, pushed at `at`.
    pub fn wal(&self, at: Timestamp) -> Until {
        Until::fixed(
            at.saturating_add(days(self.policy.pitr_days.into()))
                .unwrap_or(Timestamp::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn lock(policy: Policy) -> Hold {
        Hold {
            mode: LockMode::Governance,
            policy,
        }
    }

    #[test]
    fn locks_end_when_retention_may_let_go() {
        let l = lock(Policy::default());
        let started = t("2026-01-15T02:00:00Z");
        let finished = t("2026-01-15T02:10:00Z");
        let at = t("2026-03-01T00:00:00Z");
        let daily = l.backup(BackupKind::Db, started, finished, None, at);
        assert_eq!(daily, Until::fixed(t("2026-02-14T02:00:00Z")));
        // Kept as January's first for 12 months: until the first of January 2027.
        let monthly = l.backup(BackupKind::Db, started, finished, Some(Tier::Monthly), at);
        assert_eq!(monthly.date, t("2027-01-01T00:00:00Z"));
        // Kept forever: a year from now, renewed.
        let yearly = l.backup(BackupKind::Db, started, finished, Some(Tier::Yearly), at);
        assert_eq!(yearly, Until::rolling(at));
        assert_eq!(yearly.date, t("2027-03-01T00:00:00Z"));
        let base = l.backup(BackupKind::Base, started, finished, None, at);
        assert_eq!(base.date, t("2026-01-22T02:10:00Z"));
        assert_eq!(l.wal(at).date, t("2026-03-08T00:00:00Z"));
        // Yearly for 3 years, in a time zone east of UTC: the local new year.
        let l = lock(Policy {
            time_zone: jiff::tz::TimeZone::get("Asia/Tokyo").unwrap(),
            yearly_years: Some(3),
            ..Policy::default()
        });
        let yearly = l.backup(BackupKind::Db, started, finished, Some(Tier::Yearly), at);
        assert_eq!(yearly.date, t("2028-12-31T15:00:00Z"));
        // Monthly across a year's end: November + 12 months is the next November.
        let november = t("2026-11-03T02:00:00Z");
        let monthly = l.backup(BackupKind::Db, november, november, Some(Tier::Monthly), at);
        assert_eq!(monthly.date, t("2027-10-31T15:00:00Z"));
    }

    #[test]
    fn a_lock_is_set_when_it_ends_earlier_and_a_rolling_one_monthly() {
        let fixed = Until::fixed(t("2026-06-01T00:00:00Z"));
        assert!(fixed.extends(None));
        assert!(fixed.extends(Some(t("2026-05-31T23:59:59Z"))));
        assert!(!fixed.extends(Some(t("2026-06-01T00:00:00Z"))));
        assert!(!fixed.extends(Some(t("2027-01-01T00:00:00Z"))));
        let at = t("2026-06-01T00:00:00Z");
        let rolling = Until::rolling(at);
        // Set 20 days ago: left alone; set 40 days ago: renewed.
        assert!(!rolling.extends(Some(Until::rolling(t("2026-05-12T00:00:00Z")).date)));
        assert!(rolling.extends(Some(Until::rolling(t("2026-04-22T00:00:00Z")).date)));
    }
}
