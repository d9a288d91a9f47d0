//! Leftovers of a lifeboat that was killed before it could clean up: scratch clusters of
//! verifications and drills (a server may still be running in one), and temporary files of
//! older versions (which named their password and spool files). Swept at the start of a
//! command, when older than a day (a younger one may belong to a command still running), and
//! reported. Files lifeboat creates now have no name at all ([`crate::process::Unnamed`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Names of what lifeboat leaves in the temporary folder.
const PATTERNS: [&str; 3] = ["lifeboat-pg-", "lifeboat-verify-", ".lifeboat-"];
/// Younger than this, a leftover may belong to a command that is still running.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// Removes stale leftovers in `dir`, stopping a server still running in one with `pg_ctl`
/// (`tools`); returns what was removed.
pub fn sweep(dir: &Path, tools: &crate::process::tools::PgTools, now: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !PATTERNS.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE);
        if !old {
            continue;
        }
        let path = entry.path();
        let gone = if meta.is_dir() {
            stop_servers_in(&path, tools);
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed.push(path),
            Err(e) => tracing::warn!("cannot remove the leftover `{}`: {e}", path.display()),
        }
    }
    removed
}

/// Stops (immediately) a server whose data folder is `dir` or `dir/data`.
fn stop_servers_in(dir: &Path, tools: &crate::process::tools::PgTools) {
    for data in [dir.to_path_buf(), dir.join("data")] {
        if !data.join("postmaster.pid").exists() {
            continue;
        }
        let mut cmd = std::process::Command::new(tools.path("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some((uid, gid)) = crate::postgres::cluster::unprivileged_user() {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_leftovers_of_ours_go() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "lifeboat-pg-old",
            ".lifeboat-pgpass-x",
            "someone-else",
            "lifeboat-pg-new",
        ] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        let tools = crate::process::tools::PgTools::locate(None);
        let later = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
        // As seen two days later, everything of ours is stale; someone else's is not ours.
        let mut removed = sweep(tmp.path(), &tools, later);
        removed.sort();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(tmp.path().join("someone-else").exists());
        // Seen now, nothing is old enough.
        std::fs::create_dir(tmp.path().join("lifeboat-verify-now")).unwrap();
        assert!(sweep(tmp.path(), &tools, SystemTime::now()).is_empty());
    }
}
