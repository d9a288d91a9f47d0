//! The pieces of a streamed segment: bytes `start..end` of it, each one object at
//! `stream/<archive prefix><segment>/<start>-<end>.zst[.age]`, sealed as an archived file is
//! ([`super::stored`]) under the name `<segment>@<start>-<end>`, so that a piece
//! copied over another is refused. A segment not yet whole is assembled from its pieces in
//! order from its first byte; the first missing byte ends it (the rest is zeros, where
//! PostgreSQL's replay stops), never a silent fill between pieces.

use crate::error::{Error, Result};
use crate::repository::layout;
use crate::wal::cluster::WalArchive;
use crate::wal::{identities, stored};
use crate::Context;

/// One stored piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub key: String,
    pub encrypted: bool,
}

/// The name a piece is sealed under.
pub fn sealed_name(segment: &str, start: u64, end: u64) -> String {
    format!("{segment}@{start:08X}-{end:08X}")
}

/// `<start>-<end>.zst[.age]` back into the range and whether it is encrypted.
pub fn parse_file(file: &str) -> Option<(u64, u64, bool)> {
    let (range, encrypted) = match file.strip_suffix(".zst.age") {
        Some(range) => (range, true),
        None => (file.strip_suffix(".zst")?, false),
    };
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    );
    (start < end).then_some((start, end, encrypted))
}

/// How far pieces `ranges` cover a segment from its first byte without a hole.
pub fn coverage(ranges: &[(u64, u64)]) -> u64 {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut end = 0;
    for (start, stop) in sorted {
        if start > end {
            break;
        }
        end = end.max(stop);
    }
    end
}

/// The stored pieces of `segment`, by start.
pub async fn list(archive: &WalArchive<'_>, segment: &str) -> Result<Vec<Piece>> {
    let prefix = layout::wal_pieces(archive.prefix(), segment);
    let mut pieces: Vec<Piece> = archive
        .storage()
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|entry| {
            let file = entry.path.strip_prefix(&prefix)?;
            let (start, end, encrypted) = parse_file(file)?;
            Some(Piece {
                start,
                end,
                key: entry.path.clone(),
                encrypted,
            })
        })
        .collect();
    pieces.sort_by_key(|p| (p.start, p.end));
    Ok(pieces)
}

/// Every segment of `archive` that has pieces.
pub async fn segments_with_pieces(archive: &WalArchive<'_>) -> Result<Vec<String>> {
    let prefix = format!("{}{}", layout::Area::Stream.dirname(), archive.prefix());
    let mut segments: Vec<String> = archive
        .storage()
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|entry| {
            let rest = entry.path.strip_prefix(&prefix)?;
            let (segment, file) = rest.split_once('/')?;
            parse_file(file).map(|_| segment.to_string())
        })
        .collect();
    segments.dedup();
    Ok(segments)
}

/// Removes the pieces of `segment`.
pub async fn remove(archive: &WalArchive<'_>, segment: &str) -> Result<()> {
    for piece in list(archive, segment).await? {
        archive.storage().delete(&piece.key).await?;
    }
    Ok(())
}

/// Assembles `segment` from its pieces: `None` without a piece at its first byte, else the
/// segment (of the size its first page says) up to the first byte missing, zeros after it,
/// and how many bytes came from the pieces. Each piece is checked as an archived file is;
/// overlapping pieces must agree.
pub async fn assemble(
    ctx: &Context,
    archive: &WalArchive<'_>,
    segment: &str,
) -> Result<Option<(Vec<u8>, u64)>> {
    let pieces = list(archive, segment).await?;
    if pieces.first().is_none_or(|p| p.start != 0) {
        return Ok(None);
    }
    let mut out: Vec<u8> = Vec::new();
    let mut size = u64::MAX;
    let mut end = 0u64;
    for piece in &pieces {
        if piece.start > end {
            tracing::warn!(
                wal = segment,
                from = end,
                to = piece.start,
                "a streamed piece is missing: the segment ends at the hole"
            );
            break;
        }
        if piece.end <= end || piece.end > size {
            continue;
        }
        let Some(sealed) = archive.storage().read_opt(&piece.key).await? else {
            break;
        };
        let name = sealed_name(segment, piece.start, piece.end);
        let ids = identities(ctx, piece.encrypted)?;
        let raw = tokio::task::spawn_blocking(move || stored::open(&name, &sealed, ids.as_ref()))
            .await
            .map_err(|e| Error::thread("decompression", e))??;
        if raw.len() as u64 != piece.end - piece.start {
            return Err(Error::DamagedWal {
                name: segment.to_string(),
                detail: format!(
                    "its streamed piece `{}` holds {} bytes",
                    piece.key,
                    raw.len()
                ),
            });
        }
        if out.is_empty() {
            let header = crate::wal::segment::SegmentHeader::read(&raw).ok_or_else(|| {
                Error::DamagedWal {
                    name: segment.to_string(),
                    detail: format!(
                        "its first streamed piece `{}` has no page header",
                        piece.key
                    ),
                }
            })?;
            size = u64::from(header.segment_size);
            if piece.end > size {
                return Err(Error::DamagedWal {
                    name: segment.to_string(),
                    detail: format!("its streamed piece `{}` ends past the segment", piece.key),
                });
            }
            out = vec![0u8; size as usize];
        }
        let overlap = (end - piece.start) as usize;
        let (start, stop) = (piece.start as usize, piece.end as usize);
        if out[start..start + overlap] != raw[..overlap] {
            return Err(Error::DamagedWal {
                name: segment.to_string(),
                detail: format!(
                    "its streamed piece `{}` disagrees with the one before it",
                    piece.key
                ),
            });
        }
        out[start + overlap..stop].copy_from_slice(&raw[overlap..]);
        end = piece.end;
    }
    crate::wal::segment::check(segment, &out).map_err(|detail| Error::DamagedWal {
        name: segment.to_string(),
        detail,
    })?;
    Ok(Some((out, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_files_name_their_range() {
        assert_eq!(
            parse_file("00000000-00001000.zst"),
            Some((0, 0x1000, false))
        );
        assert_eq!(
            parse_file("00A00000-01000000.zst.age"),
            Some((0xA0_0000, 0x100_0000, true))
        );
        assert_eq!(parse_file("00001000-00001000.zst"), None);
        assert_eq!(parse_file("junk.zst"), None);
        let key = layout::wal_piece("wal/", "000000010000000000000003", 0, 0x2000, false);
        assert_eq!(
            key,
            "stream/wal/000000010000000000000003/00000000-00002000.zst"
        );
    }

    #[test]
    fn coverage_stops_at_the_first_hole() {
        assert_eq!(coverage(&[]), 0);
        assert_eq!(coverage(&[(0, 10), (10, 30), (40, 50)]), 30);
        assert_eq!(coverage(&[(10, 30)]), 0);
        // Overlaps (a piece stored again after a restart) extend, never shorten.
        assert_eq!(coverage(&[(0, 20), (5, 15), (15, 25)]), 25);
    }
}
