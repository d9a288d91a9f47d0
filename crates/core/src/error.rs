//! The engine's one error type.
//!
//! Policy: one variant per kind of failure, so that callers (the CLI's exit codes, a job's
//! report, `wal-push`'s refusals) decide by kind, never by message text. Every message is one
//! lowercase line that names the value at fault in backticks and, where the user can act, says
//! how. Errors carry no secrets: URLs are redacted before they are put in a message, and a
//! child's stderr is cut to its last meaningful line. [`Error::is_temporary`] says whether
//! running the same command again could help (a network or storage hiccup) or not (bad input,
//! a corrupted backup).

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or a value in it is wrong.
    #[error("{0}")]
    Config(String),

    /// The command line asks for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),

    /// Something asked for is not there: a table or schema in a backup, a base backup or run
    /// to restore from, a WAL segment recovery needs.
    #[error("{0}")]
    Missing(String),

    /// A target outside what the repository can recover.
    #[error("target `{target}` is {problem}: the recoverable window is {window}")]
    OutsideWindow {
        target: String,
        problem: String,
        window: String,
    },

    /// What lifeboat works with is not set up as it needs: a server that does not archive to
    /// lifeboat, a data folder that is not empty, a repository of a newer format.
    #[error("{0}")]
    NotReady(String),

    /// A program lifeboat runs is not installed.
    #[error("`{program}` not found: {install}")]
    ToolMissing { program: String, install: String },

    /// A client program older than the server it works with.
    #[error("`{tool}` is version {version} but the server is {server}: install client tools of version {server} or newer, or set `tools.pg_bin_dir`")]
    ToolVersion {
        tool: String,
        version: String,
        server: String,
    },

    /// The installed PostgreSQL programs cannot handle a backup: older than the pg_dump that
    /// made a dump, or another major version than the server a base backup was taken of.
    #[error("{0}")]
    WrongTools(String),

    /// A server (PostgreSQL, Redis) does not answer as it should.
    #[error("{what}: {detail}")]
    Unreachable { what: String, detail: String },

    /// One of lifeboat's own records in the repository (its marker, a run record, an index, the
    /// archive's cluster) cannot be read.
    #[error("{what} is {problem}")]
    Damaged { what: String, problem: String },

    /// A WAL file, or a server, of no generation of the cluster it is archived for.
    #[error("{what} comes from the cluster with system identifier {system_id}, which is not cluster `{cluster}` as repository `{location}` records it ({known}): after a major upgrade (pg_upgrade) run `lifeboat upgrade --db {cluster}`; another cluster needs its own `[postgres.NAME]` and `wal-push --db NAME` in its archive_command")]
    ForeignCluster {
        what: String,
        system_id: u64,
        cluster: String,
        location: String,
        known: String,
    },

    /// Something awaited did not happen in time.
    #[error("{what} did not happen within {seconds} s{}", hint_suffix(.hint))]
    TimedOut {
        what: String,
        seconds: u64,
        hint: String,
    },

    /// `wal-push` refused a file for what it is (not the segment its name says, another
    /// cluster's, other content than the archived file of that name); recorded for `status`.
    #[error("{reason}")]
    WalRefused { name: String, reason: String },

    /// A bug: a thread that panicked, a state that cannot be.
    #[error("internal error: {0} (a bug in lifeboat: please report it)")]
    Internal(String),

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
        kind: StorageFailure,
        message: String,
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

    /// A job that could not start, for the reason in `cause` (reported and notified).
    #[error("job `{job}` did not start: {cause}")]
    NotStarted {
        job: String,
        cause: std::sync::Arc<Error>,
    },
}

/// What kind of storage failure an error is: whether trying again may help, and what the
/// caller may make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    NotFound,
    /// The credentials are refused.
    Denied,
    /// A condition refused the request (the object exists, or changed).
    Conflict,
    /// No answer in time.
    Timeout,
    /// The endpoint could not be reached, broke off, or said to try later (5xx, 429).
    Unavailable,
    /// The request itself was refused (4xx) or is not supported.
    Refused,
}

impl StorageFailure {
    pub fn is_temporary(self) -> bool {
        matches!(self, StorageFailure::Timeout | StorageFailure::Unavailable)
    }

    /// The kind of an OpenDAL error.
    pub fn of(err: &opendal::Error) -> StorageFailure {
        use opendal::ErrorKind as K;
        match err.kind() {
            K::NotFound => StorageFailure::NotFound,
            K::PermissionDenied => StorageFailure::Denied,
            K::ConditionNotMatch | K::AlreadyExists => StorageFailure::Conflict,
            K::RateLimited => StorageFailure::Unavailable,
            // A local folder read-only, full or out of reach stays so: not worth a retry.
            _ if permanent_io(err) => StorageFailure::Refused,
            _ if err.is_temporary() => {
                if timed_out(err) {
                    StorageFailure::Timeout
                } else {
                    StorageFailure::Unavailable
                }
            }
            K::Unexpected if timed_out(err) => StorageFailure::Timeout,
            K::Unexpected => StorageFailure::Unavailable,
            _ => StorageFailure::Refused,
        }
    }
}

/// Whether an error, or one of its causes, is a file system's error that trying again does not
/// mend: read-only, full, over quota, not allowed.
fn permanent_io(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ReadOnlyFilesystem
                    | K::StorageFull
                    | K::QuotaExceeded
                    | K::PermissionDenied
                    | K::NotADirectory
                    | K::IsADirectory
                    | K::FileTooLarge
            );
        }
        current = e.source();
    }
    false
}

/// Whether an error, or one of its causes, is a timeout.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(re) = e.downcast_ref::<reqwest::Error>() {
            if re.is_timeout() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        current = e.source();
    }
    false
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    }
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

    /// A thread that ended without its result (it panicked).
    pub fn thread(what: &str, err: impl fmt::Display) -> Self {
        Error::Internal(format!("the {what} thread failed: {err}"))
    }

    pub fn storage(op: &'static str, path: &str, err: opendal::Error) -> Self {
        let kind = StorageFailure::of(&err);
        let message = match kind {
            StorageFailure::Timeout => format!(
                "timed out ({}); see `[repository.timeouts]`",
                one_line(&storage_message(&err))
            ),
            _ => one_line(&storage_message(&err)),
        };
        Error::Storage {
            op,
            path: path.to_string(),
            kind,
            message,
        }
    }

    /// A failure while streaming an object's bytes (OpenDAL's reader gives `io::Error`s).
    pub fn storage_io(op: &'static str, path: &str, err: std::io::Error) -> Self {
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<opendal::Error>())
        {
            let inner = err.into_inner().expect("checked above");
            return Error::storage(
                op,
                path,
                *inner.downcast::<opendal::Error>().expect("checked above"),
            );
        }
        let kind = if err.kind() == std::io::ErrorKind::TimedOut {
            StorageFailure::Timeout
        } else {
            StorageFailure::Unavailable
        };
        Error::Storage {
            op,
            path: path.to_string(),
            kind,
            message: one_line(&err.to_string().to_lowercase()),
        }
    }

    /// Whether this is storage's "no such object".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                kind: StorageFailure::NotFound,
                ..
            }
        )
    }

    pub fn postgres(context: impl fmt::Display, err: &tokio_postgres::Error) -> Self {
        let message = match err.as_db_error() {
            // Where it happened (the row of a `COPY`, the line of a function), as psql says.
            Some(db) => match db.where_() {
                Some(at) => format!(
                    "{}: {}; context: {at}",
                    db.severity().to_lowercase(),
                    db.message()
                ),
                None => format!("{}: {}", db.severity().to_lowercase(), db.message()),
            },
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

    /// Whether the same command could succeed if run again unchanged, a moment later: the
    /// storage did not answer, a server could not be reached, another run holds the lock.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Storage { kind, .. } => kind.is_temporary(),
            Error::Busy { .. } | Error::Unreachable { .. } => true,
            Error::NotStarted { cause, .. } => cause.is_temporary(),
            _ => false,
        }
    }

    /// Whether this says that stored data is not what it should be.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Integrity { .. }
                | Error::DamagedWal { .. }
                | Error::Mismatch { .. }
                | Error::Damaged { .. }
        )
    }

    /// The kind of failure, as one word (for `--json` errors and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Usage(_) => "usage",
            Error::Missing(_) | Error::BackupNotFound { .. } => "missing",
            Error::OutsideWindow { .. } => "outside-window",
            Error::NotReady(_) => "not-ready",
            Error::ToolMissing { .. } | Error::ToolVersion { .. } | Error::WrongTools(_) => "tool",
            Error::Unreachable { .. } => "unreachable",
            Error::Damaged { .. } | Error::Integrity { .. } | Error::DamagedWal { .. } => "damaged",
            Error::Mismatch { .. } => "mismatch",
            Error::ForeignCluster { .. } => "foreign-cluster",
            Error::WalRefused { .. } => "refused",
            Error::TimedOut { .. } => "timed-out",
            Error::Internal(_) => "internal",
            Error::NotARepository { .. } => "not-a-repository",
            Error::AlreadyARepository { .. } => "already-a-repository",
            Error::Storage { .. } => "storage",
            Error::Postgres { .. } => "postgres",
            Error::Tool { .. } => "tool-failed",
            Error::Io { .. } => "io",
            Error::Crypto(_) => "crypto",
            Error::Busy { .. } => "locked",
            Error::LockLost { .. } => "lock-lost",
            Error::Interrupted(_) => "interrupted",
            Error::Incomplete(_) => "incomplete",
            Error::Breached(_) => "breached",
            Error::NotStarted { cause, .. } => cause.kind(),
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

/// Names in backticks, joined by commas, as error messages list them: `` `a`, `b` ``.
pub fn listed<T: std::fmt::Display>(names: impl IntoIterator<Item = T>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
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
    fn listed_quotes_and_joins() {
        assert_eq!(listed(["analytics", "main"]), "`analytics`, `main`");
        assert_eq!(listed(Vec::<String>::new()), "");
    }

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
