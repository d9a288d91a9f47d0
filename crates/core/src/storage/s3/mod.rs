//! Everything S3 that OpenDAL does not do, in one place: signed requests ([`api`]), the
//! extras as one capability ([`call`]), Object Lock holds and versions ([`hold`]), archive
//! tiers ([`tiers`]) and lifecycle rules in S3's XML ([`lifecycle`]).
//!
//! Adding an S3 capability: a variant of [`call::S3Call`] (and of its reply), its request on
//! [`api::S3Api`] (in `api.rs` or a file beside it), a typed method on `dyn Backend`, and, if
//! it writes, what the dry run shows ([`crate::storage::layers::DryRun`]).

pub mod api;
pub mod call;
pub mod hold;
pub mod lifecycle;
pub mod tiers;

pub use call::{Deletion, Held, Readiness, S3Call, S3Reply};
