//! lifeboat's engine: configuration, repository, streaming pipeline and PostgreSQL backup and
//! restore. The `lifeboat` binary is a thin command line over this crate.
//!
//! Time, storage and child processes reach the engine through what the caller hands it
//! ([`Context`], [`repository::Repository`], [`postgres::tools::PgTools`]), so that tests drive
//! it against real, throwaway parts.

pub mod automation;
pub mod backup;
pub mod config;
mod context;
pub mod copies;
pub mod crypto;
pub mod error;
pub mod objects;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod redis;
pub mod repository;
pub mod retention;
pub mod storage;
pub mod tarchunk;
pub mod units;
pub mod verify;
pub mod wal;

pub use automation::metrics::{BUILD, VERSION};
pub use context::Context;
pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;
