//! WAL file names and positions: what a name in `pg_wal` is, segment arithmetic for any
//! segment size, LSNs, and the keys archived files are stored under.

/// PostgreSQL's default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// What a file name in `pg_wal` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalName {
    Segment { timeline: u32, log: u32, seg: u32 },
    History { timeline: u32 },
    Partial { timeline: u32, log: u32, seg: u32 },
    Backup { timeline: u32, log: u32, seg: u32 },
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

fn segment_parts(text: &str) -> Option<(u32, u32, u32)> {
    if text.len() != 24 {
        return None;
    }
    Some((hex8(&text[..8])?, hex8(&text[8..16])?, hex8(&text[16..])?))
}

impl WalName {
    pub fn parse(name: &str) -> Option<WalName> {
        if let Some((timeline, log, seg)) = segment_parts(name) {
            return Some(WalName::Segment { timeline, log, seg });
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalName::History {
                timeline: hex8(tli)?,
            });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = segment_parts(base)?;
            return Some(WalName::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (base, offset) = rest.split_once('.')?;
            hex8(offset)?;
            let (timeline, log, seg) = segment_parts(base)?;
            return Some(WalName::Backup { timeline, log, seg });
        }
        None
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalName::Segment { timeline, .. }
            | WalName::History { timeline }
            | WalName::Partial { timeline, .. }
            | WalName::Backup { timeline, .. } => timeline,
        }
    }
}

/// Segments per "log" file number for a segment size.
fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The absolute segment number of a segment name's log and seg parts.
pub fn segment_number(log: u32, seg: u32, segment_size: u64) -> u64 {
    u64::from(log) * segments_per_log(segment_size) + u64::from(seg)
}

pub fn segment_name(timeline: u32, number: u64, segment_size: u64) -> String {
    let per = segments_per_log(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", number / per, number % per)
}

/// The segment holding `lsn`.
pub fn segment_of_lsn(timeline: u32, lsn: u64, segment_size: u64) -> String {
    segment_name(timeline, lsn / segment_size, segment_size)
}

/// Parses an LSN written as `16/B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The file name a key of the archive at `prefix` stores, if it is a WAL key there (not in a
/// folder below it: `wal/` holds the other generations' folders).
pub fn name_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?;
    let name = rest
        .strip_suffix(".zst.age")
        .or_else(|| rest.strip_suffix(".zst"))?;
    WalName::parse(name).map(|_| name)
}

/// The timeline and number of a segment file name.
pub fn segment_of_name(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    match WalName::parse(name)? {
        WalName::Segment { timeline, log, seg } => {
            Some((timeline, segment_number(log, seg, segment_size)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            WalName::parse("000000010000000A000000FF"),
            Some(WalName::Segment {
                timeline: 1,
                log: 10,
                seg: 255
            })
        );
        assert_eq!(
            WalName::parse("00000002.history"),
            Some(WalName::History { timeline: 2 })
        );
        assert!(matches!(
            WalName::parse("000000010000000000000003.partial"),
            Some(WalName::Partial { timeline: 1, .. })
        ));
        assert!(matches!(
            WalName::parse("000000010000000000000002.00000028.backup"),
            Some(WalName::Backup { seg: 2, .. })
        ));
        for bad in [
            "",
            "0000000100000000000000",
            "00000001000000000000000G",
            "x.history",
            "../etc/passwd",
        ] {
            assert_eq!(WalName::parse(bad), None, "{bad}");
        }
        assert_eq!(
            name_of_key("wal/", "wal/00000002.history.zst.age"),
            Some("00000002.history")
        );
        assert_eq!(name_of_key("wal/", "wal/junk.zst"), None);
        // Another generation's file is not the first generation's.
        let nested = "wal/clusters/main/2/000000010000000000000003.zst";
        assert_eq!(name_of_key("wal/", nested), None);
        assert_eq!(
            name_of_key("wal/clusters/main/2/", nested),
            Some("000000010000000000000003")
        );
    }

    #[test]
    fn segment_arithmetic() {
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_name(1, segment_number(0, 0xFF, s) + 1, s),
            "000000010000000100000000"
        );
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(
            segment_of_lsn(1, parse_lsn("0/2000028").unwrap(), s),
            "000000010000000000000002"
        );
        // 64 MiB segments: 64 per log.
        assert_eq!(segment_name(3, 64, 64 << 20), "000000030000000100000000");
    }
}
