//! The ranges a stored object is downloaded by, several at once.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::backend::ByteStream;
use crate::error::Result;

/// Bytes per ranged read, at most.
pub(super) const READ_CHUNK: u64 = 8 << 20;
/// The first range read: small, so that the first bytes come soon.
pub(super) const FIRST_READ: u64 = 512 << 10;
/// Ranges read at once.
const READ_CONCURRENCY: usize = 4;
/// The pieces a range read is handed on in.
const PIECE: usize = 256 << 10;

/// The ranges an object of `size` bytes is read by: the first small, each next one twice the
/// one before, up to [`READ_CHUNK`]. Read [`READ_CONCURRENCY`] at a time over a link they
/// share, ranges all of [`READ_CHUNK`] would hold the first bytes back until 32 MiB had come
/// (0.7 s at 400 Mbit/s), and with them everything a restore does with the first bytes (its
/// schema, then its first rows); these let the first through once 2 MiB have come.
pub(super) fn read_ranges(size: u64) -> impl Iterator<Item = Range<u64>> {
    let mut at = 0;
    let mut len = FIRST_READ;
    std::iter::from_fn(move || {
        let range = at..size.min(at + len);
        at = range.end;
        len = (len * 2).min(READ_CHUNK);
        Some(range).filter(|r| !r.is_empty())
    })
}

/// A range read, handed on in pieces of [`PIECE`] bytes (views of it, not copies): a reader
/// queueing a few pieces then holds a few of them, not a few whole ranges (a restore's peak
/// memory went from 64 to 99 MiB when it queued four ranges of 8 MiB).
fn pieces(range: Bytes) -> impl Iterator<Item = Bytes> {
    (0..range.len())
        .step_by(PIECE)
        .map(move |at| range.slice(at..range.len().min(at + PIECE)))
}

/// The bytes of `ranges`, each got by `fetch` (whole, in one or more buffers),
/// [`READ_CONCURRENCY`] at a time, handed on in order in [`pieces`].
pub(super) fn fetch_ranges<F, Fut, B>(
    ranges: impl Iterator<Item = Range<u64>> + Send + 'static,
    fetch: F,
) -> ByteStream
where
    F: FnMut(Range<u64>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<B>> + Send + 'static,
    B: IntoIterator<Item = Bytes> + Send + 'static,
    B::IntoIter: Send + 'static,
{
    futures::stream::iter(ranges)
        .map(fetch)
        .buffered(READ_CONCURRENCY)
        .map_ok(|got| futures::stream::iter(got.into_iter().flat_map(pieces).map(Ok)))
        .try_flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_start_small_double_up_to_the_chunk_and_cover_the_object_once() {
        const MIB: u64 = 1 << 20;
        assert_eq!(read_ranges(0).count(), 0);
        let only: Vec<_> = read_ranges(100).collect();
        assert_eq!((only.len(), only[0].start, only[0].end), (1, 0, 100));
        let lens: Vec<u64> = read_ranges(40 * MIB).map(|r| r.end - r.start).collect();
        assert_eq!(
            lens,
            [
                MIB / 2,
                MIB,
                2 * MIB,
                4 * MIB,
                8 * MIB,
                8 * MIB,
                8 * MIB,
                8 * MIB,
                MIB / 2
            ]
        );
        let size = 500 * MIB + 12345;
        let mut at = 0;
        for range in read_ranges(size) {
            assert_eq!(range.start, at);
            assert!(range.end > range.start && range.end - range.start <= READ_CHUNK);
            at = range.end;
        }
        assert_eq!(at, size);
    }

    #[test]
    fn a_range_is_handed_on_in_pieces_of_it() {
        let range = Bytes::from((0..PIECE * 2 + 10).map(|i| i as u8).collect::<Vec<_>>());
        let got: Vec<Bytes> = pieces(range.clone()).collect();
        let lens: Vec<usize> = got.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [PIECE, PIECE, 10]);
        assert_eq!(got.concat(), range);
        assert_eq!(pieces(Bytes::new()).count(), 0);
    }
}
