//! Cron schedules (`minute hour day-of-month month day-of-week`) and their next moment in a
//! time zone, without I/O.
//!
//! Fields take `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n` or `a-b/n`; day of week
//! is 0-7 (0 and 7 are Sunday). As in cron, when both day fields are restricted a day matching
//! either runs. A local time that does not exist (the hour skipped when clocks go forward)
//! runs at the first moment after the gap; a local time that happens twice runs once, the
//! first time.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_any: bool,
    weekdays_any: bool,
    text: String,
}

fn field(text: &str, min: u32, max: u32, name: &str) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; max as usize + 1];
    let any = text == "*";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step `{step}` in the {name} field"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, name)?, number(b, name)?)
        } else {
            let n = number(range, name)?;
            (n, if part.contains('/') { max } else { n })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!(
                "`{range}` is outside {min}-{max} in the {name} field"
            ));
        }
        let mut n = lo;
        while n <= hi {
            set[n as usize] = true;
            n += step;
        }
    }
    Ok((set, any))
}

fn number(text: &str, name: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number in the {name} field"))
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "schedule `{text}` needs 5 fields (minute hour day-of-month month day-of-week), e.g. `0 2 * * *`"
            ));
        }
        let (minutes, _) = field(parts[0], 0, 59, "minute")?;
        let (hours, _) = field(parts[1], 0, 23, "hour")?;
        let (days, days_any) = field(parts[2], 1, 31, "day-of-month")?;
        let (months, _) = field(parts[3], 1, 12, "month")?;
        let (mut weekdays, weekdays_any) = field(parts[4], 0, 7, "day-of-week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any,
            weekdays_any,
            text: text.to_string(),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if !self.months[date.month() as usize] {
            return false;
        }
        let dom = self.days[date.day() as usize];
        let dow = self.weekdays[date.weekday().to_sunday_zero_offset() as usize];
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first moment strictly after `after` that the schedule names, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut date = local.date();
        // Eight years covers any valid schedule (Feb 29 on a Sunday recurs within 28).
        for _ in 0..(366 * 28) {
            if self.day_matches(date) {
                for hour in 0..24u8 {
                    if !self.hours[hour as usize] {
                        continue;
                    }
                    for minute in 0..60u8 {
                        if !self.minutes[minute as usize] {
                            continue;
                        }
                        let civil = DateTime::from_parts(
                            date,
                            Time::new(hour as i8, minute as i8, 0, 0).ok()?,
                        );
                        let Ok(zoned) = tz.to_ambiguous_zoned(civil).compatible() else {
                            continue;
                        };
                        if zoned.timestamp() > after {
                            return Some(zoned.timestamp());
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(cron: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        Cron::parse(cron)
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
        assert_eq!(
            next("0 3 * * 0", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-29T03:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 3 * * 7", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-29T03:00:00+00:00[UTC]"
        );
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
        assert!(Cron::parse("0 2 * *")
            .unwrap_err()
            .contains("needs 5 fields"));
        assert!(Cron::parse("60 2 * * *")
            .unwrap_err()
            .contains("outside 0-59 in the minute"));
        assert!(Cron::parse("0 x * * *")
            .unwrap_err()
            .contains("`x` is not a number in the hour"));
        assert!(Cron::parse("*/0 * * * *").unwrap_err().contains("bad step"));
    }
}
