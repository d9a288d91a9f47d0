//! The engine's one error type.
//!
//! Policy: every message is one lowercase line that names the value at fault in backticks and,
//! where the user can act, says how. Errors carry no secrets: URLs are redacted before they are
//! put in a message, and a child's stderr is cut to its last meaningful line. `is_retryable`
//! says whether running the same command again could help (a network or storage hiccup) or not
//! (bad input, a corrupted backup).

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or a value in it is wrong.
    #[error("{0}")]
    Config(String),

    /// The command line or another input is wrong.
    #[error("{0}")]
    Invalid(String),

    #[error("`{location}` is not a lifeboat repository: run `lifeboat init` to create one there")]
    NotARepository { location: String },

    #[error("`{location}` is already a lifeboat repository (format {format})")]
    AlreadyARepository { location: String, format: u32 },

    #[error(
        "backup `{id}` not found in repository `{location}`: `lifeboat list` shows the backups"
    )]
    BackupNotFound { id: String, location: String },

    #[error("storage: {op} `{path}`: {message}")]
    Storage {
        op: &'static str,
        path: String,
        message: String,
        retryable: bool,
    },

    #[error("postgres: {context}: {message}")]
    Postgres { context: String, message: String },

    /// A child process (pg_dump, pg_restore, ...) failed.
    #[error("`{tool}` {outcome}{}", stderr_suffix(.stderr))]
    Tool {
        tool: String,
        outcome: String,
        stderr: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("encryption: {0}")]
    Crypto(String),

    /// Stored data does not match its manifest.
    #[error("backup `{id}` is damaged: {detail}")]
    Integrity { id: String, detail: String },

    /// An archived WAL file is not what it is stored as (damaged, or another file's).
    #[error("WAL file `{name}` is damaged: {detail}")]
    DamagedWal { name: String, detail: String },

    /// A restore finished but the restored data differs from what the backup recorded.
    #[error("restore of `{id}` does not match its manifest: {detail}")]
    Mismatch { id: String, detail: String },

    /// Another run holds the repository's run lock.
    #[error(
        "repository `{location}` is busy: job `{job}` on `{host}` (pid {pid}) has run since {}, last heartbeat {}; wait for it with `--wait SECONDS` (a lock without a heartbeat for {stale_minutes} minutes is taken over)",
        .since.strftime("%Y-%m-%d %H:%M:%S UTC"),
        .heartbeat.strftime("%H:%M:%S UTC")
    )]
    Busy {
        location: String,
        job: String,
        host: String,
        pid: u32,
        since: jiff::Timestamp,
        heartbeat: jiff::Timestamp,
        stale_minutes: u64,
    },

    /// This run's lock was taken over: it must stop and commit nothing more.
    #[error(
        "the run lock was taken over by job `{job}` on `{host}` (pid {pid}): this run stopped and committed nothing more"
    )]
    LockLost { job: String, host: String, pid: u32 },

    #[error("interrupted: {0}")]
    Interrupted(String),

    /// The work was done except for some items, which were reported one by one.
    #[error("{0}")]
    Incomplete(String),

    /// A recovery objective is breached (`status`).
    #[error("{0}")]
    Breached(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl Error {
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    pub fn invalid(message: impl fmt::Display) -> Self {
        Error::Invalid(message.to_string())
    }

    pub fn storage(op: &'static str, path: &str, err: opendal::Error) -> Self {
        Error::Storage {
            op,
            path: path.to_string(),
            retryable: err.is_temporary(),
            message: one_line(&storage_message(&err)),
        }
    }

    pub fn postgres(context: impl fmt::Display, err: &tokio_postgres::Error) -> Self {
        let message = match err.as_db_error() {
            Some(db) => format!("{}: {}", db.severity().to_lowercase(), db.message()),
            None => {
                let mut text = err.to_string();
                let mut source = std::error::Error::source(err);
                while let Some(inner) = source {
                    text = format!("{text}: {inner}");
                    source = inner.source();
                }
                text
            }
        };
        Error::Postgres {
            context: context.to_string(),
            message: one_line(&message),
        }
    }

    /// Whether the same command could succeed if run again unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                retryable: true,
                ..
            } | Error::Io { .. }
        )
    }

    /// The process exit code that reports this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted(_) => 130,
            Error::Integrity { .. } | Error::DamagedWal { .. } | Error::Mismatch { .. } => 3,
            Error::Breached(_) => 4,
            _ => 1,
        }
    }
}

/// opendal's `Display` spans several lines of context; keep its kind and message.
fn storage_message(err: &opendal::Error) -> String {
    let kind = match err.kind() {
        opendal::ErrorKind::NotFound => "not found".to_string(),
        opendal::ErrorKind::PermissionDenied => "permission denied (check the credentials)".into(),
        opendal::ErrorKind::ConditionNotMatch => "already exists".into(),
        other => other.to_string().to_lowercase(),
    };
    let message = err.to_string();
    // The first line of opendal's display is "Kind (persistent) at op => message".
    let first = message.lines().next().unwrap_or_default();
    let detail = first
        .split_once("=>")
        .map(|(_, m)| m.trim())
        .unwrap_or(first);
    if detail.is_empty() {
        kind
    } else {
        format!("{kind}: {detail}")
    }
}

/// Folds a multi-line text into one line, keeping the informative part.
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join("; ");
    if joined.chars().count() > 400 {
        let tail: String = joined
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("...{tail}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_and_trims() {
        assert_eq!(one_line("  a\n\n b \n"), "a; b");
        let long = "x".repeat(1000);
        let folded = one_line(&long);
        assert!(folded.starts_with("...") && folded.len() == 403);
    }

    #[test]
    fn tool_error_names_tool_and_stderr() {
        let err = Error::Tool {
            tool: "pg_dump".into(),
            outcome: "exited with status 1".into(),
            stderr: "error: boom".into(),
        };
        assert_eq!(
            err.to_string(),
            "`pg_dump` exited with status 1: error: boom"
        );
    }
}
