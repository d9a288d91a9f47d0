//! Finding the PostgreSQL programs (pg_dump, pg_restore, initdb, ...) and their versions.
//!
//! Order: the configured `tools.pg_bin_dir`, then `$LIFEBOAT_PG_BIN_DIR`, then the newest
//! `/usr/lib/postgresql/N/bin` (Debian's layout; a newer pg_dump reads older servers), then
//! `PATH`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::Tool;

#[derive(Debug, Clone)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
}

impl PgTools {
    pub fn locate(configured: Option<&str>) -> PgTools {
        let explicit = configured
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("LIFEBOAT_PG_BIN_DIR").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty());
        PgTools {
            bin_dir: explicit.or_else(newest_debian_bin_dir),
        }
    }

    pub fn bin_dir(&self) -> Option<&Path> {
        self.bin_dir.as_deref()
    }

    /// The path to run `name` by.
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    pub fn tool(&self, name: &str) -> Tool {
        Tool::new(self.path(name))
    }

    /// `psql` running the script on its standard input, stopping at the first error. In one
    /// transaction only as the script says (`restore::script`): not `--single-transaction`,
    /// which commits when the input ends, whatever ended it.
    pub fn psql_script(&self) -> Tool {
        self.tool("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
    }

    /// Refuses to go on when `program` is of an older major version than `needed` (`exact`:
    /// of another one at all, as the server programs that read a data folder), saying what
    /// `what` needs and which package brings it.
    pub fn require(&self, program: &str, needed: u32, exact: bool, what: &str) -> Result<()> {
        let version = self.version(program)?;
        let have = major(&version);
        if have == needed || (!exact && have > needed) {
            return Ok(());
        }
        let package = match program {
            "postgres" | "initdb" | "pg_ctl" => format!("postgresql-{needed}"),
            _ => format!("postgresql-client-{needed}"),
        };
        Err(Error::WrongTools(format!(
            "{what} needs PostgreSQL {needed}{}'s `{program}`, and `{}` is {version}: install it (Debian: `apt-get install {package}`) and set `[tools] pg_bin_dir` (or `$LIFEBOAT_PG_BIN_DIR`) to its folder",
            if exact { "" } else { " or newer" },
            self.path(program).display()
        )))
    }

    /// The version a program reports, e.g. `15.18`.
    pub fn version(&self, name: &str) -> Result<String> {
        let out = self.tool(name).arg("--version").output()?;
        let text = String::from_utf8_lossy(&out);
        parse_version(&text).ok_or_else(|| {
            Error::NotReady(format!(
                "cannot read the version of `{}` from `{}`: is it a PostgreSQL program?",
                self.path(name).display(),
                text.trim()
            ))
        })
    }
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Reads `15.18` out of `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        })
}

/// The major version of a version string (`15.18` → 15, `9.6.24` → 9).
pub fn major(version: &str) -> u32 {
    version
        .split(['.', ' '])
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").as_deref(),
            Some("15.18")
        );
        assert_eq!(
            parse_version("initdb (PostgreSQL) 16beta2").as_deref(),
            Some("16beta2")
        );
        assert_eq!(major("15.18"), 15);
        assert_eq!(major("15.18 (Debian 15.18-0+deb12u1)"), 15);
        assert_eq!(parse_version("nothing"), None);
    }
}
