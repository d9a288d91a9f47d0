//! What commands print: text on stdout (a closed stdout is not an error), the same as JSON
//! with `--json`, and the moments users type.

use std::io::Write;

use lifeboat_core::config::TimeZone;
use lifeboat_core::{Context, Error, Result};

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

/// Rows in aligned columns (comfy-table: no borders, never wrapped, two spaces between
/// columns), as lines without trailing spaces; the columns in `right` (numbers, sizes) are
/// aligned right. Every table lifeboat prints goes through here.
pub fn table(header: Option<&[&str]>, rows: Vec<Vec<String>>, right: &[usize]) -> Vec<String> {
    use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if let Some(header) = header {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines()
        .map(|line| line.trim_end().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// [`table`], as text: each line ending with a newline, indented by `indent`.
pub fn table_text(
    indent: &str,
    header: Option<&[&str]>,
    rows: Vec<Vec<String>>,
    right: &[usize],
) -> String {
    table(header, rows, right)
        .into_iter()
        .map(|line| format!("{indent}{line}\n"))
        .collect()
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
/// A moment as the user typed it, a moment without an offset in the configured zone
/// ([`parse_time_in`]).
pub fn parse_time(ctx: &Context, text: &str) -> Result<jiff::Timestamp> {
    parse_time_in(text, &ctx.config.typed_time_zone())
}

/// A moment as the user typed it: with an offset or `Z` (RFC 3339), with a zone in brackets
/// (`2026-12-06T10:00[Asia/Jakarta]`), or without either, which is taken in `zone` (the
/// configured zone, else the system's: an operator types local time). What it resolved to is
/// said, in UTC and in that zone, before anything starts.
pub fn parse_time_in(text: &str, zone: &TimeZone) -> Result<jiff::Timestamp> {
    let (at, how) = resolve_time(text, zone)?;
    if let Some(how) = how {
        tracing::info!("`{text}` {how}: {at}");
    }
    Ok(at)
}

/// The moment `text` names, and how a moment without an offset was resolved.
fn resolve_time(text: &str, zone: &TimeZone) -> Result<(jiff::Timestamp, Option<String>)> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok((at, None));
    }
    if let Ok(zoned) = text.parse::<jiff::Zoned>() {
        return Ok((zoned.timestamp(), None));
    }
    let civil = text.parse::<jiff::civil::DateTime>().or_else(|_| {
        text.parse::<jiff::civil::Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    let zoned = civil.and_then(|dt| dt.to_zoned(zone.zone().clone())).map_err(|_| {
        Error::Usage(format!(
            "`{text}` is not a moment: write it as `2026-02-22 01:00:00` (in {}), `2026-02-22T01:00:00+07:00` or `2026-02-22T01:00[Asia/Jakarta]`",
            zone.name()
        ))
    })?;
    let how = format!(
        "is taken in {} ({}, {})",
        zone.name(),
        if zone.is_configured() {
            "the configured zone"
        } else {
            "no zone configured: the system's"
        },
        zoned.strftime("%Y-%m-%d %H:%M:%S%.f %:z")
    );
    Ok((zoned.timestamp(), Some(how)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_whatever_the_widths() {
        let lines = table(
            Some(&["ID", "SIZE", "NOTES"]),
            vec![
                vec![
                    "a-long-step-name-that-is-longer-than-44-characters".into(),
                    "1.5 KiB".into(),
                    "x".into(),
                ],
                vec!["b".into(), "12 B".into(), String::new()],
            ],
            &[1],
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
        // Every column starts at the same place on every line; sizes end at the same place.
        let size_end = lines[1].find("KiB").unwrap() + 3;
        assert_eq!(lines[2].find("12 B").unwrap() + 4, size_end, "{lines:?}");
        assert_eq!(lines[0].find("SIZE").unwrap() + 4, size_end, "{lines:?}");
        assert_eq!(lines[0].find("NOTES"), lines[1].find('x'), "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| !l.ends_with(' ') && !l.starts_with(' ')),
            "{lines:?}"
        );
    }

    #[test]
    fn moments_with_an_offset_a_zone_or_in_the_given_zone() {
        let utc = TimeZone::utc();
        let jakarta = TimeZone::get("Asia/Jakarta").unwrap();
        let at = |text: &str, zone: &TimeZone| resolve_time(text, zone).unwrap();
        let expected: jiff::Timestamp = "2026-02-21T18:00:00Z".parse().unwrap();
        assert_eq!(at("2026-02-22T01:00:00+07:00", &utc), (expected, None));
        assert_eq!(at("2026-02-22T01:00[Asia/Jakarta]", &utc).0, expected);
        // Without an offset: the zone given, and said.
        assert_eq!(at("2026-02-21 18:00:00", &utc).0, expected);
        let (local, how) = at("2026-02-22 01:00:00", &jakarta);
        assert_eq!(local, expected);
        let how = how.unwrap();
        assert!(
            how.contains("Asia/Jakarta") && how.contains("+07:00") && how.contains("configured"),
            "{how}"
        );
        assert_eq!(at("2026-02-22T01:00", &jakarta).0, expected);
        let err = resolve_time("yesterday", &jakarta).unwrap_err().to_string();
        assert!(
            err.contains("`yesterday` is not a moment") && err.contains("Asia/Jakarta"),
            "{err}"
        );
    }
}
