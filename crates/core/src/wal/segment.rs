//! What a WAL segment says of itself: its first page's long header, which holds the address
//! of that page (so the segment's place in the WAL), the timeline, the cluster's system
//! identifier and the segment and block sizes. Checked on push (a file must be the segment
//! its name says, from the cluster the repository archives) and on fetch (a stored object
//! must hold the segment asked for), so that a misplaced or foreign segment can never be
//! replayed as another.

use super::names::{segment_number, WalName};

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of `XLogLongPageHeaderData`.
const LONG_HEADER: usize = 40;

/// The long page header at the start of a WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: u32,
    pub page_address: u64,
    pub system_id: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl SegmentHeader {
    /// Reads the header at the start of `data`; `None` when it is not a long page header.
    pub fn read(data: &[u8]) -> Option<SegmentHeader> {
        let bytes = data.get(..LONG_HEADER)?;
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let magic = u16_at(0);
        // Every PostgreSQL since 9.x writes 0xD0xx or 0xD1xx.
        if u16_at(2) & XLP_LONG_HEADER == 0 || !(0xD000..=0xD1FF).contains(&magic) {
            return None;
        }
        Some(SegmentHeader {
            magic,
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_id: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        })
    }
}

/// Checks that `data` is WAL segment (or partial segment) `name`: a long page header whose
/// sizes are sound and whose page address is the segment's first byte. Other WAL files
/// (history, backup labels) have no header and pass. The header is returned for the caller
/// to check the system identifier.
pub fn check(name: &str, data: &[u8]) -> Result<Option<SegmentHeader>, String> {
    let (timeline, log, seg) = match WalName::parse(name) {
        Some(WalName::Segment { timeline, log, seg })
        | Some(WalName::Partial { timeline, log, seg }) => (timeline, log, seg),
        _ => return Ok(None),
    };
    let header = SegmentHeader::read(data).ok_or_else(|| {
        format!("WAL file `{name}` does not start with a WAL page header: it is not a segment")
    })?;
    let size = u64::from(header.segment_size);
    if !size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&size) {
        return Err(format!(
            "WAL file `{name}` has a page header with segment size {size}: it is not a segment"
        ));
    }
    if !header.block_size.is_power_of_two() || u64::from(header.block_size) > size {
        return Err(format!(
            "WAL file `{name}` has a page header with block size {}: it is not a segment",
            header.block_size
        ));
    }
    if data.len() as u64 != size {
        return Err(format!(
            "WAL file `{name}` is {} bytes, but its header says segments are {size}",
            data.len()
        ));
    }
    let expected = segment_number(log, seg, size) * size;
    if header.page_address != expected {
        let actual = super::segment_name(
            header.timeline.max(timeline),
            header.page_address / size,
            size,
        );
        return Err(format!(
            "WAL file `{name}` is not the segment its name says: its page address {} is that of segment `{actual}`",
            super::format_lsn(header.page_address)
        ));
    }
    // A new timeline's first segment is copied from its parent, whose first page keeps the
    // parent's timeline; never a later one.
    if header.timeline > timeline {
        return Err(format!(
            "WAL file `{name}` has pages of timeline {}, after its own timeline {timeline}",
            header.timeline
        ));
    }
    Ok(Some(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(timeline: u32, number: u64, system_id: u64) -> Vec<u8> {
        let size = 1u64 << 24;
        let mut data = vec![0u8; size as usize];
        let mut header = Vec::new();
        header.extend_from_slice(&0xD110u16.to_le_bytes());
        header.extend_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        header.extend_from_slice(&timeline.to_le_bytes());
        header.extend_from_slice(&(number * size).to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&system_id.to_le_bytes());
        header.extend_from_slice(&(size as u32).to_le_bytes());
        header.extend_from_slice(&8192u32.to_le_bytes());
        data[..LONG_HEADER].copy_from_slice(&header);
        data
    }

    #[test]
    fn a_segment_is_what_its_name_says() {
        let data = segment(1, 0x1FF, 77);
        let header = check("0000000100000001000000FF", &data).unwrap().unwrap();
        assert_eq!(header.system_id, 77);
        assert_eq!(header.segment_size, 1 << 24);
        // The same bytes under the next name: refused, naming the segment they are.
        let err = check("000000010000000200000000", &data).unwrap_err();
        assert!(
            err.contains("`000000010000000200000000` is not the segment its name says")
                && err.contains("page address 1/FF000000")
                && err.contains("`0000000100000001000000FF`"),
            "{err}"
        );
        // A partial segment is checked the same way.
        assert!(check("0000000100000001000000FF.partial", &data).is_ok());
        // A timeline's first segment may carry its parent's timeline, never a later one.
        assert!(check("0000000200000001000000FF", &data).is_ok());
        let later = segment(3, 0x1FF, 77);
        assert!(check("0000000200000001000000FF", &later)
            .unwrap_err()
            .contains("timeline 3"));
        // Not a segment at all.
        assert!(check("0000000100000001000000FF", &[0u8; 100])
            .unwrap_err()
            .contains("does not start with a WAL page header"));
        assert!(check("0000000100000001000000FF", &data[..1 << 20])
            .unwrap_err()
            .contains("its header says segments are 16777216"));
        // History files have no header.
        assert_eq!(
            check("00000002.history", b"1\t0/3000000\treason\n"),
            Ok(None)
        );
    }
}
