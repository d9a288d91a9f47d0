//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`), `wal-fetch` (its
//! `restore_command`), and reading the archive's shape (timelines, gaps, windows).
//!
//! A repository holds the archives of several clusters, each a sequence of generations (one per
//! major version): [`cluster`] records them and routes each file to its archive, a
//! [`WalArchive`] every reader and writer goes through. Each file is stored whole, compressed
//! (and encrypted), at `<prefix><name>.zst[.age]`, with a description of what it is inside
//! ([`stored`]), created atomically so that nothing is ever overwritten ([`push`]). A segment
//! must be what its name says and come from its archive's generation ([`segment`]), on the way
//! in and on the way out. Fetches download
//! files back, and the following segments ahead ([`fetch`]). Both keep their work in a spool
//! folder private to the user PostgreSQL runs as ([`spool`]). What the archive holds is read in
//! [`archive`]; this file only declares and re-exports.

mod archive;
pub mod cluster;
mod fetch;
pub mod marks;
mod names;
pub mod pieces;
mod push;
pub mod queue;
mod report;
pub mod segment;
mod spool;
pub mod stored;
mod timelines;

pub use archive::{archived_names, identities, last_archived, read_histories, stored_at};
pub use cluster::WalArchive;
pub use fetch::{fetch_wal, prefetch, read_archived, Fetched};
pub use names::*;
pub use push::{
    last_refusal, push_ready, push_spool, push_wal, seal_options, store, Pushed, Refusal,
};
pub use report::{archive_report, ArchiveReport, RecoveryWindow, TimelineReport};
pub use timelines::*;
