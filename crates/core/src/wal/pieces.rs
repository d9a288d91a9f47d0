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

/// The stored pieces of `segment`, by start (the longest first).
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
    // At each start the longest first: a merged piece, and the ones it replaced are skipped.
    pieces.sort_by_key(|p| (p.start, std::cmp::Reverse(p.end)));
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
    segments.sort();
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

/// The pieces that cover a segment from byte 0 without a hole, in order (sorted as [`list`]
/// gives them: a piece within those before it is not needed), and the first byte missing.
pub fn needed(pieces: &[Piece]) -> (Vec<&Piece>, u64) {
    let mut end = 0;
    let mut out = Vec::new();
    for piece in pieces {
        if piece.start > end {
            break;
        }
        if piece.end > end {
            out.push(piece);
            end = piece.end;
        }
    }
    (out, end)
}

/// One piece, opened and checked; `None` when it is gone (merged away since the listing).
async fn read_piece(
    ctx: &Context,
    archive: &WalArchive<'_>,
    segment: &str,
    piece: &Piece,
) -> Result<Option<Vec<u8>>> {
    let Some(sealed) = archive.storage().read_opt(&piece.key).await? else {
        return Ok(None);
    };
    let name = sealed_name(segment, piece.start, piece.end);
    let ids = identities(ctx, piece.encrypted)?;
    let raw = tokio::task::spawn_blocking(move || stored::open(&name, &sealed, ids.as_ref()))
        .await
        .map_err(|e| Error::thread("decompression", e))??;
    Ok(Some(raw))
}

/// Pieces read at once when a segment is assembled.
const PARALLEL_READS: usize = 16;

/// Assembles `segment` from its pieces: `None` without a piece at its first byte, else the
/// segment (of the size its first page says) up to the first byte missing, zeros after it,
/// and how many bytes came from the pieces. Each piece is checked as an archived file is;
/// overlapping pieces must agree. Pieces are read in parallel; one merged away between the
/// listing and its reading makes the listing read again.
pub async fn assemble(
    ctx: &Context,
    archive: &WalArchive<'_>,
    segment: &str,
) -> Result<Option<(Vec<u8>, u64)>> {
    use futures::StreamExt;
    for _ in 0..5 {
        let pieces = list(archive, segment).await?;
        let (needed, covered) = needed(&pieces);
        if needed.is_empty() {
            return Ok(None);
        }
        if let Some(next) = pieces.iter().find(|p| p.start > covered) {
            tracing::warn!(
                wal = segment,
                from = covered,
                to = next.start,
                "a streamed piece is missing: the segment ends at the hole"
            );
        }
        let reads: Vec<_> = needed
            .iter()
            .map(|piece| read_piece(ctx, archive, segment, piece))
            .collect();
        let read: Vec<Option<Vec<u8>>> = futures::stream::iter(reads)
            .buffered(PARALLEL_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        if read.iter().any(Option::is_none) {
            continue;
        }
        let mut out: Vec<u8> = Vec::new();
        let mut end = 0u64;
        for (piece, raw) in needed.iter().zip(read.into_iter().flatten()) {
            let damaged = |detail: String| Error::DamagedWal {
                name: segment.to_string(),
                detail,
            };
            if raw.len() as u64 != piece.end - piece.start {
                return Err(damaged(format!(
                    "its streamed piece `{}` holds {} bytes",
                    piece.key,
                    raw.len()
                )));
            }
            if out.is_empty() {
                let header = crate::wal::segment::SegmentHeader::read(&raw).ok_or_else(|| {
                    damaged(format!(
                        "its first streamed piece `{}` has no page header",
                        piece.key
                    ))
                })?;
                out = vec![0u8; header.segment_size as usize];
            }
            if piece.end > out.len() as u64 {
                return Err(damaged(format!(
                    "its streamed piece `{}` ends past the segment",
                    piece.key
                )));
            }
            let overlap = (end - piece.start) as usize;
            let (start, stop) = (piece.start as usize, piece.end as usize);
            if out[start..start + overlap] != raw[..overlap] {
                return Err(damaged(format!(
                    "its streamed piece `{}` disagrees with the one before it",
                    piece.key
                )));
            }
            out[start + overlap..stop].copy_from_slice(&raw[overlap..]);
            end = piece.end;
        }
        crate::wal::segment::check(segment, &out).map_err(|detail| Error::DamagedWal {
            name: segment.to_string(),
            detail,
        })?;
        return Ok(Some((out, end)));
    }
    Err(Error::Unreachable {
        what: format!("the streamed pieces of WAL segment `{segment}`"),
        detail: "they changed under every reading (a stream merging them?)".into(),
    })
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
    fn a_merged_piece_stands_for_the_ones_within_it() {
        let piece = |start, end| Piece {
            start,
            end,
            key: format!("{start}-{end}"),
            encrypted: false,
        };
        // As `list` sorts them: by start, the longest first.
        let pieces = vec![
            piece(0, 300),
            piece(0, 100),
            piece(100, 200),
            piece(300, 400),
            piece(500, 600),
        ];
        let (needed, end) = needed(&pieces);
        let keys: Vec<&str> = needed.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["0-300", "300-400"]);
        assert_eq!(end, 400);
        assert!(super::needed(&[piece(10, 20)]).0.is_empty());
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
