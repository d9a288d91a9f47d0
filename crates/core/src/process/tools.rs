//! Finding the PostgreSQL programs (pg_dump, pg_restore, initdb, ...) and their versions.
//!
//! Order: the configured `tools.pg_bin_dir`, then `$LIFEBOAT_PG_BIN_DIR`, then the newest
//! `/usr/lib/postgresql/N/bin` (Debian's layout; a newer pg_dump reads older servers), then
//! `PATH`. What reads a data folder needs its own major version's server programs: found
//! among the installed versions ([`PgTools::for_major`]) unless a folder was named.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::Tool;

#[derive(Debug, Clone)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
    /// Whether the folder was named (configuration, environment) rather than found.
    named: bool,
}

/// Where Debian installs each major version (`/usr/lib/postgresql/N/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

impl PgTools {
    pub fn locate(configured: Option<&str>) -> PgTools {
        let explicit = configured
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("LIFEBOAT_PG_BIN_DIR").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty());
        PgTools {
            named: explicit.is_some(),
            bin_dir: explicit.or_else(|| newest_bin_dir(Path::new(DEBIAN_ROOT))),
        }
    }

    /// The programs of major version `major` (the server programs that read a data folder of
    /// that version): these if a folder was named and they are of that version, else that
    /// version's among the installed ones, else these (and [`PgTools::require`] says what is
    /// missing).
    pub fn for_major(&self, major: u32) -> PgTools {
        self.for_major_in(Path::new(DEBIAN_ROOT), major)
    }

    fn for_major_in(&self, root: &Path, major: u32) -> PgTools {
        if self.named && self.is_major("postgres", major) {
            return self.clone();
        }
        match installed(root).into_iter().find(|(m, _)| *m == major) {
            Some((_, bin)) => PgTools {
                bin_dir: Some(bin),
                named: false,
            },
            None => self.clone(),
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

    /// Whether `program` here is of major version `major`.
    pub fn is_major(&self, program: &str, major: u32) -> bool {
        self.version(program)
            .is_ok_and(|version| self::major(&version) == major)
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

/// The major versions installed below `root` (`N/bin`), oldest first.
fn installed(root: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
}

fn newest_bin_dir(root: &Path) -> Option<PathBuf> {
    installed(root).pop().map(|(_, bin)| bin)
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

    #[test]
    fn a_data_folder_gets_its_own_major_versions_programs_unless_a_folder_of_it_is_named() {
        let root = tempfile::tempdir().unwrap();
        for major in ["15", "17", "notes"] {
            let bin = root.path().join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_dump"), "").unwrap();
        }
        let found = PgTools {
            bin_dir: newest_bin_dir(root.path()),
            named: false,
        };
        assert_eq!(found.bin_dir(), Some(root.path().join("17/bin").as_path()));
        let for_15 = found.for_major_in(root.path(), 15);
        assert_eq!(for_15.bin_dir(), Some(root.path().join("15/bin").as_path()));
        // Not installed: the same programs, which `require` then refuses naming the version.
        let for_16 = found.for_major_in(root.path(), 16);
        assert_eq!(for_16.bin_dir(), found.bin_dir());
        // A folder named by the configuration that is not of that version (here: no
        // programs at all) gives way to the installed version, and stays where none is.
        let named = PgTools {
            bin_dir: Some("/opt/pg/bin".into()),
            named: true,
        };
        assert_eq!(
            named.for_major_in(root.path(), 15).bin_dir(),
            Some(root.path().join("15/bin").as_path())
        );
        assert_eq!(
            named.for_major_in(root.path(), 16).bin_dir(),
            Some(Path::new("/opt/pg/bin"))
        );
    }
}
