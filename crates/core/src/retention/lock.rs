//! Object Lock dates, without I/O: until when each object is locked. A lock never ends later
//! than the date retention is sure to keep the object to, so that `prune` meets a lock only
//! where the policy was shortened since (it then keeps the object and says so).
//!
//! - a dump (and a Redis snapshot): its start plus `daily_days`; when `prune` keeps it as its
//!   month's first, the first day of the month `monthly_months` after its own; as its year's
//!   first, the first day of the year `yearly_years` after (kept forever: a year from now,
//!   renewed by `prune` whenever less than eleven months are left);
//! - a base backup: its end plus `pitr_days`; an archived WAL file: its push plus `pitr_days`;
//! - the repository's marker: a year from now, renewed like a yearly dump.
//!
//! Cloudflare R2 has no per-object lock: its buckets lock by key prefix and age
//! ([`r2_rules`]), which lifeboat shows and checks ([`r2_conflicts`]) but cannot set. A rule
//! must not outlast retention in any part of its area: R2 refuses the deletion, and `prune`
//! fails on what it was refused (it cannot tell a lock rule from a key without rights).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Policy, Tier};
use crate::config::LockMode;
use crate::repository::manifest::BackupKind;

/// A lock that runs on lasts this long from when it is set.
const ROLLING_DAYS: i64 = 365;
/// ... and is renewed once this much of it has passed.
const RENEW_AFTER_DAYS: i64 = 30;

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// How objects are locked: the mode, and the policy that dates the locks.
#[derive(Debug, Clone)]
pub struct ObjectLock {
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

impl ObjectLock {
    /// From the configuration (a copy's, through [`crate::config::Config::for_copy`]).
    pub fn from_config(config: &crate::config::Config) -> Option<ObjectLock> {
        config.repository.object_lock.map(|mode| ObjectLock {
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

/// A Cloudflare R2 bucket lock rule, in the shape of `wrangler r2 bucket lock set --file`
/// and of Cloudflare's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct R2Rule {
    pub id: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub prefix: String,
    pub condition: R2Condition,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum R2Condition {
    Age {
        #[serde(rename = "maxAgeSeconds")]
        max_age_seconds: u64,
    },
    Date {
        date: String,
    },
    Indefinite,
}

/// A bucket's lock rules, as `wrangler` and the API (`{"result": {"rules": ...}}`) give them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct R2Rules {
    pub rules: Vec<R2Rule>,
}

impl R2Rules {
    /// Reads either shape; the error says what is wrong.
    pub fn parse(text: &str) -> Result<R2Rules, String> {
        #[derive(Deserialize)]
        struct Api {
            result: R2Rules,
        }
        serde_json::from_str::<R2Rules>(text)
            .or_else(|first| {
                serde_json::from_str::<Api>(text)
                    .map(|api| api.result)
                    .map_err(|_| first)
            })
            .map_err(|e| format!("not R2 bucket lock rules (`{{\"rules\": [...]}}`): {e}"))
    }
}

/// The areas of a repository and how long retention keeps what is there at least, in days.
/// WAL file names start with their timeline, `0` below timeline 0x10000000: the prefix
/// `wal/0` leaves out `wal/refused.json`, which lifeboat rewrites.
fn lockable(policy: &Policy) -> [(&'static str, &'static str, u32); 5] {
    [
        ("lifeboat-db", "data/db/", policy.daily_days),
        ("lifeboat-redis", "data/redis/", policy.daily_days),
        ("lifeboat-base", "data/base/", policy.pitr_days),
        // Base backups' manifests are here too, deleted after `pitr_days`; a dump's manifest
        // is rewritten when prune keeps it for its month, after `daily_days`.
        (
            "lifeboat-manifests",
            "manifests/",
            policy.daily_days.min(policy.pitr_days),
        ),
        ("lifeboat-wal", "wal/0", policy.pitr_days),
    ]
}

/// What lifeboat rewrites or deletes as it runs: a lock there breaks it.
const REWRITTEN: [&str; 3] = ["locks/", "verifications/", "wal/refused.json"];

fn under(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{}/{key}", prefix.trim_end_matches('/'))
    }
}

/// The R2 lock rules that match `policy` for a repository below `prefix`: each area locked
/// for as long as retention keeps everything there (monthly and yearly dumps stay locked
/// only as long as daily ones: an R2 rule knows ages, not tiers).
pub fn r2_rules(policy: &Policy, prefix: &str) -> R2Rules {
    R2Rules {
        rules: lockable(policy)
            .into_iter()
            .filter(|(_, _, days)| *days > 0)
            .map(|(id, area, days)| R2Rule {
                id: id.to_string(),
                enabled: true,
                prefix: under(prefix, area),
                condition: R2Condition::Age {
                    max_age_seconds: u64::from(days) * 86_400,
                },
            })
            .collect(),
    }
}

/// What is wrong with a bucket's R2 lock rules for a repository below `prefix`: problems
/// (lifeboat's rewrites refused, locks longer than retention, which fail `prune`) and notes
/// (locks until a date, areas left unlocked).
pub fn r2_conflicts(rules: &R2Rules, policy: &Policy, prefix: &str) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let enabled: Vec<&R2Rule> = rules.rules.iter().filter(|r| r.enabled).collect();
    // A rule covers a key when its prefix starts the key, or the key's area starts the
    // rule's prefix (a rule on part of an area still locks some of it).
    let overlaps =
        |rule: &R2Rule, key: &str| key.starts_with(&rule.prefix) || rule.prefix.starts_with(key);
    for rule in &enabled {
        for key in REWRITTEN.iter().map(|k| under(prefix, k)) {
            if overlaps(rule, &key) {
                problems.push(format!(
                    "R2 lock rule `{}` (prefix `{}`) locks `{key}`, which lifeboat rewrites as it runs: narrow it to the areas `lifecycle` shows",
                    rule.id, rule.prefix
                ));
            }
        }
    }
    for (_, area, keep_days) in lockable(policy) {
        let key = under(prefix, area);
        let covering: Vec<&&R2Rule> = enabled.iter().filter(|r| overlaps(r, &key)).collect();
        if covering.is_empty() {
            notes.push(format!(
                "nothing locks `{key}`: a leaked key can delete what is there"
            ));
        }
        for rule in covering {
            let days = match &rule.condition {
                R2Condition::Indefinite => {
                    problems.push(format!(
                        "R2 lock rule `{}` locks `{key}` forever: prune would be refused what retention lets go, and fail; give it an age of {keep_days} days",
                        rule.id
                    ));
                    continue;
                }
                R2Condition::Date { date } => {
                    notes.push(format!(
                        "R2 lock rule `{}` locks `{key}` until {date}: prune fails on what retention lets go before then",
                        rule.id
                    ));
                    continue;
                }
                R2Condition::Age { max_age_seconds } => max_age_seconds.div_ceil(86_400),
            };
            if days > u64::from(keep_days) {
                problems.push(format!(
                    "R2 lock rule `{}` locks `{key}` for {days} days, but retention lets some of it go after {keep_days}: prune would be refused and fail; use at most {keep_days} days",
                    rule.id
                ));
            }
        }
    }
    (problems, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn lock(policy: Policy) -> ObjectLock {
        ObjectLock {
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

    #[test]
    fn r2_rules_match_the_policy_and_conflicts_are_found() {
        let policy = Policy::default();
        let wanted = r2_rules(&policy, "lifeboat");
        let json = serde_json::to_value(&wanted).unwrap();
        assert_eq!(json["rules"][0]["prefix"], "lifeboat/data/db/");
        assert_eq!(json["rules"][0]["condition"]["type"], "Age");
        assert_eq!(json["rules"][0]["condition"]["maxAgeSeconds"], 30 * 86_400);
        assert_eq!(json["rules"][3]["prefix"], "lifeboat/manifests/");
        assert_eq!(json["rules"][3]["condition"]["maxAgeSeconds"], 7 * 86_400);
        assert_eq!(json["rules"][4]["prefix"], "lifeboat/wal/0");
        // The rules lifeboat shows conflict with nothing and leave nothing unlocked.
        let (problems, notes) = r2_conflicts(&wanted, &policy, "lifeboat");
        assert!(
            problems.is_empty() && notes.is_empty(),
            "{problems:?} {notes:?}"
        );
        // Read back from the API's shape.
        let api = format!("{{\"success\": true, \"result\": {json}}}");
        assert_eq!(R2Rules::parse(&api).unwrap(), wanted);
        assert!(R2Rules::parse("[1]")
            .unwrap_err()
            .contains("not R2 bucket lock rules"));

        // One rule over the whole bucket, forever: it locks the run lock, and nothing is
        // ever pruned.
        let all = R2Rules::parse(
            r#"{"rules": [{"id": "all", "enabled": true, "prefix": "", "condition": {"type": "Indefinite"}}]}"#,
        )
        .unwrap();
        let (problems, _) = r2_conflicts(&all, &policy, "lifeboat");
        assert!(
            problems.iter().any(|p| p.contains("`lifeboat/locks/`")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("forever")),
            "{problems:?}"
        );
        // Manifests and data locked longer than retention keeps them: prune would fail. WAL
        // left unlocked: a note. A disabled rule counts for nothing.
        let some = R2Rules::parse(
            r#"{"rules": [
                {"id": "m", "prefix": "lifeboat/manifests/", "condition": {"type": "Age", "maxAgeSeconds": 7776000}},
                {"id": "d", "prefix": "lifeboat/data/", "condition": {"type": "Age", "maxAgeSeconds": 7776000}},
                {"id": "off", "enabled": false, "prefix": "lifeboat/", "condition": {"type": "Indefinite"}}
            ]}"#,
        )
        .unwrap();
        let (problems, notes) = r2_conflicts(&some, &policy, "lifeboat");
        assert_eq!(problems.len(), 4, "{problems:?}");
        let found = |rule: &str, area: &str, at_most: &str| {
            problems
                .iter()
                .any(|p| p.contains(rule) && p.contains(area) && p.contains(at_most))
        };
        assert!(
            found("rule `m`", "`lifeboat/manifests/` for 90", "at most 7 days"),
            "{problems:?}"
        );
        assert!(
            found("rule `d`", "`lifeboat/data/db/` for 90", "at most 30 days"),
            "{problems:?}"
        );
        assert!(
            found("rule `d`", "`lifeboat/data/base/` for 90", "at most 7 days"),
            "{problems:?}"
        );
        assert_eq!(
            notes,
            ["nothing locks `lifeboat/wal/0`: a leaked key can delete what is there"]
        );
    }
}
