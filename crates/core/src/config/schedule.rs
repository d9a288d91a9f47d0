//! Cron schedules of the daemon's jobs (`minute hour day-of-month month day-of-week`), parsed
//! by croner: numbers, ranges, lists, steps, names (`sun`, `jan`) and macros (`@daily`,
//! `@weekly`, ...). When both day fields are restricted, a day matching either runs; when
//! one starts with `*` (`*/2` too), both must match, as in Vixie cron.
//!
//! The next moment is found on the local clock of the time zone: a local time that does not
//! exist (the hour skipped when clocks go forward) runs at the moment after the gap that the
//! same wall-clock reading gives (02:30 runs at 03:30); one that happens twice runs once,
//! the first time.

use std::fmt;

use croner::parser::CronParser;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expand::expand;

#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if !trimmed.starts_with('@') && fields.len() != 5 {
            return Err(format!(
                "schedule `{text}` needs 5 fields (minute hour day-of-month month day-of-week), e.g. `0 2 * * *`, or a macro such as `@daily`"
            ));
        }
        // Vixie cron: a day field that starts with `*` leaves the day to the other one.
        let star_day =
            fields.len() == 5 && (fields[2].starts_with('*') || fields[4].starts_with('*'));
        let cron = CronParser::builder()
            .dom_and_dow(star_day)
            .build()
            .parse(trimmed)
            .map_err(|e| {
                format!(
                    "schedule `{text}`: {}: write it as `minute hour day-of-month month day-of-week`, e.g. `0 2 * * *`",
                    e.to_string().to_lowercase().trim_end_matches('.')
                )
            })?;
        Ok(Schedule {
            text: trimmed.to_string(),
            cron,
        })
    }

    /// The first moment strictly after `after` that the schedule names, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut local = after.to_zoned(tz.clone()).datetime();
        // Matching runs on the wall clock (a zone without jumps); the wall-clock moment found
        // is then placed in `tz`.
        for _ in 0..1000 {
            let wall = local.to_zoned(TimeZone::UTC).ok()?;
            let next = self
                .cron
                .find_next_occurrence(&wall, false)
                .ok()?
                .datetime();
            let placed = tz.to_ambiguous_zoned(next).compatible().ok()?;
            if placed.timestamp() > after {
                return Some(placed.timestamp());
            }
            local = next;
        }
        None
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({})", self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Schedule::parse(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(cron: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        Schedule::parse(cron)
            .unwrap()
            .next_after(after.parse().unwrap(), &tz)
            .unwrap()
            .to_zoned(tz)
            .to_string()
    }

    #[test]
    fn daily_at_two_in_a_time_zone() {
        assert_eq!(
            next("0 2 * * *", "2026-11-24T12:00:00Z", "Asia/Jakarta"),
            "2026-11-25T02:00:00+07:00[Asia/Jakarta]"
        );
        // Strictly after: at 02:00 exactly, the next is tomorrow.
        assert_eq!(
            next("0 2 * * *", "2026-11-24T19:00:00Z", "Asia/Jakarta"),
            "2026-11-26T02:00:00+07:00[Asia/Jakarta]"
        );
    }

    #[test]
    fn weekly_on_sunday_and_steps() {
        // 2026-11-24 is a Tuesday.
        for sunday in ["0 3 * * 0", "0 3 * * 7", "0 3 * * sun", "0 3 * * SUN"] {
            assert_eq!(
                next(sunday, "2026-11-24T00:00:00Z", "UTC"),
                "2026-11-29T03:00:00+00:00[UTC]",
                "{sunday}"
            );
        }
        assert_eq!(
            next("*/15 * * * *", "2026-11-24T00:07:00Z", "UTC"),
            "2026-11-24T00:15:00+00:00[UTC]"
        );
        assert_eq!(
            next("5 1-3/2 * * *", "2026-11-24T01:06:00Z", "UTC"),
            "2026-11-24T03:05:00+00:00[UTC]"
        );
    }

    #[test]
    fn names_and_macros() {
        assert_eq!(
            next("@daily", "2026-11-24T00:07:00Z", "UTC"),
            "2026-11-25T00:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("@weekly", "2026-11-24T00:07:00Z", "UTC"),
            "2026-11-29T00:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-11-24T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00[UTC]"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // The 1st, or any Friday: from Tuesday the 24th, Friday the 27th comes first.
        assert_eq!(
            next("0 0 1 * 5", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-27T00:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29T00:00:00+00:00[UTC]"
        );
        // Vixie: `*/2` in the day-of-month field is a star: odd days that are Mondays.
        assert_eq!(
            next("0 0 */2 * 1", "2026-11-24T00:00:00Z", "UTC"),
            "2026-12-07T00:00:00+00:00[UTC]"
        );
    }

    #[test]
    fn daylight_saving_gaps_and_repeats() {
        // New York springs forward on 2026-03-08: 02:30 does not exist, it runs at 03:30 EDT.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T05:00:00Z", "America/New_York"),
            "2026-03-08T03:30:00-04:00[America/New_York]"
        );
        // Falls back on 2026-11-01: 01:30 happens twice and runs once, the first time (EDT).
        assert_eq!(
            next("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York"),
            "2026-11-01T01:30:00-04:00[America/New_York]"
        );
        assert_eq!(
            next("30 1 * * *", "2026-11-01T05:31:00Z", "America/New_York"),
            "2026-11-02T01:30:00-05:00[America/New_York]"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        assert!(Schedule::parse("0 2 * *")
            .unwrap_err()
            .contains("needs 5 fields"));
        for bad in ["60 2 * * *", "0 x * * *", "*/0 * * * *"] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.starts_with(&format!("schedule `{bad}`: ")), "{err}");
            assert!(err.contains("e.g. `0 2 * * *`"), "{err}");
        }
    }
}
