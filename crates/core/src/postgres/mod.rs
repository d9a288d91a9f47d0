//! PostgreSQL: connections, tools, logical dump and restore, scratch clusters.

pub mod archive;
pub mod cluster;
pub mod conn;
pub mod dump;
pub mod restore;
pub mod sample;
pub mod tools;
