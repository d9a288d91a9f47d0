//! What commands print: text on stdout (a closed stdout is not an error), the same as JSON
//! with `--json`, and the moments users type.

use std::io::Write;

use lifeboat_core::{Error, Result};

/// Writes to stdout; a closed stdout (`| head`) is not an error worth a message.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing to stdout", e)),
    }
}

/// Prints `value` as JSON with `--json`, else the line `text` makes.
pub fn print_json_or<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        emit(&(serde_json::to_string_pretty(value).expect("output serializes") + "\n"))
    } else {
        emit(&format!("{}\n", text()))
    }
}

/// Prints `value` as JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    print_json_or(true, value, String::new)
}

/// A moment: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM:SS` taken as UTC.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    text.parse::<jiff::Timestamp>()
        .or_else(|_| {
            text.parse::<jiff::civil::DateTime>()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| {
            Error::Usage(format!(
                "`{text}` is not a moment: write it as `2026-02-22T01:00:00+07:00` (or `2026-02-21 18:00:00` for UTC)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_with_an_offset_or_in_utc() {
        assert_eq!(
            parse_time("2026-02-22T01:00:00+07:00").unwrap(),
            parse_time("2026-02-21 18:00:00").unwrap()
        );
        let err = parse_time("yesterday").unwrap_err().to_string();
        assert!(err.contains("`yesterday` is not a moment"), "{err}");
    }
}
