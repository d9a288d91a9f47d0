//! Restore points: `lifeboat mark NAME` creates one on the server
//! ([`crate::postgres::archiver::restore_point`]) and records where and when in the
//! repository (`wal/marks/NAME.json`), so that
//! `restore pitr --target-name NAME` can choose the base backup before it and `list wal` can
//! show it. A name is recorded once: PostgreSQL would stop at the first point of that name.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::Repository;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    /// The restore point's position in the WAL.
    pub lsn: String,
    pub at: Timestamp,
    pub database: String,
}

fn key(name: &str) -> String {
    format!(
        "{}marks/{name}.json",
        crate::repository::layout::Area::Wal.dirname()
    )
}

/// Checks that `name` can be a new restore point: a plain name, not recorded yet.
pub async fn check_new(repo: &Repository, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Usage(format!(
            "`{name}` is not a restore point name: use up to 63 letters, digits, `-`, `_` or `.`"
        )));
    }
    if find(repo, name).await?.is_some() {
        return Err(Error::Usage(format!(
            "restore point `{name}` is already recorded: recovery would stop at the first of that name; choose another"
        )));
    }
    Ok(())
}

/// Records restore point `name`, made at `lsn` on the server of `database`.
pub async fn record(repo: &Repository, database: &str, name: &str, lsn: String) -> Result<Mark> {
    let mark = Mark {
        name: name.to_string(),
        lsn,
        at: Timestamp::now(),
        database: database.to_string(),
    };
    let json = serde_json::to_vec_pretty(&mark).expect("marks serialize");
    repo.storage().write(&key(name), json).await?;
    Ok(mark)
}

/// The recorded restore point `name`.
pub async fn find(repo: &Repository, name: &str) -> Result<Option<Mark>> {
    Ok(repo
        .storage()
        .read_opt(&key(name))
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Every recorded restore point, oldest first.
pub async fn list(repo: &Repository) -> Result<Vec<Mark>> {
    let prefix = key("");
    let prefix = prefix.trim_end_matches(".json");
    let mut out: Vec<Mark> = repo.storage().read_records(prefix, "mark").await?;
    out.sort_by_key(|m| m.at);
    Ok(out)
}
