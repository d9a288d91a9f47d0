//! The streaming pipeline between a process and the repository.
//!
//! Upload ([`upload`]): source → zstd → age (when configured) → SHA-256 of the stored bytes →
//! equal-size parts → multipart upload. Download ([`download`]): the reverse, with the hash and
//! size checked against the manifest before the consumer is given the last bytes of the
//! stream, so a consumer that needs the whole stream (a full `pg_restore`) can never finish on
//! damaged data. How the source becomes zstd frames is the caller's choice ([`Framing`]): one
//! frame, or a layout of its own such as [`crate::tarchunk`]'s.
//!
//! Memory is bounded by the part size times the parts in flight, whatever the data size. The
//! CPU-bound stages ([`seal`]) run on a blocking thread; the network side is async, and the two
//! meet in a bounded channel ([`io`]). A failure on either side stops both and aborts the
//! upload, so nothing partial is left at the final path.

mod download;
mod io;
mod seal;
mod upload;

pub use download::{download, download_sealed, Delivered, Expected};
pub use io::sha256_hex;
pub(crate) use io::{ChannelReader, HashingWriter, HoldBack};
#[cfg(test)]
use seal::open_bytes;
pub use seal::{seal_bytes, Framing, SealOptions};
pub use upload::{upload, StreamStats, UploadTarget};

use crate::error::Error;

/// Bytes read from a source at once.
const READ_BUFFER: usize = 1 << 20;

/// Turns an `io::Error` that wraps an engine error back into it.
pub fn from_io(e: std::io::Error, context: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = e.into_inner().expect("checked above");
        *inner.downcast::<Error>().expect("checked above")
    } else {
        Error::io(context, e)
    }
}

#[cfg(test)]
mod tests;
