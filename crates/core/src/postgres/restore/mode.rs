//! How a restore loads, chosen once from its options: one [`Strategy`], and the options that
//! contradict each other refused before anything is touched.

use super::selection::Selection;
use super::spooled;
use super::RestoreRequest;
use crate::error::{Error, Result};
use crate::process::Unnamed;

/// The way a restore loads the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strategy {
    /// Straight into `pg_restore --single-transaction` as the archive arrives ([`super::stream`]).
    Stream,
    /// Through `psql`, in one transaction lifeboat commits on the verdict of the whole archive
    /// ([`super::stream`], [`super::script`]): a whole-database `--clean` (`clean`: the backup's
    /// schemas dropped first, which pg_restore's own `--clean` cannot do for partitions'
    /// inherited constraints), a selection, or the schema only, where pg_restore stops reading
    /// before the archive's end.
    Script { clean: bool },
    /// Spooled whole to an unnamed file once verified, then `pg_restore --jobs N`: faster on
    /// many cores, not in one transaction ([`super::spooled`]).
    Spooled,
    /// A whole database into the staging database of `--create`, tables loaded in pieces by N
    /// sessions while the archive arrives, through a spool that holds a window of it
    /// ([`super::pipelined`]). The staging database makes it all or nothing.
    Pipelined,
}

impl Strategy {
    /// Whether the archive goes through a spool file.
    pub fn spooled(self) -> bool {
        matches!(self, Strategy::Spooled | Strategy::Pipelined)
    }

    pub fn pipelined(self) -> bool {
        self == Strategy::Pipelined
    }

    /// Whether the backup's schemas are dropped by lifeboat's own script (a whole `--clean`).
    pub fn clean_script(self) -> bool {
        self == Strategy::Script { clean: true }
    }
}

/// How a restore loads, as its options say.
pub(super) struct Mode {
    /// What of the backup it restores.
    pub selection: Selection,
    pub jobs: u32,
    pub strategy: Strategy,
}

impl Mode {
    /// The mode of `request`, refused when its options contradict each other.
    pub fn new(request: &RestoreRequest, selection: Selection) -> Result<Mode> {
        let whole = selection.tables.is_empty()
            && selection.schemas.is_empty()
            && !request.data_only
            && !request.schema_only
            && !request.clean;
        let jobs = request.jobs.max(1);
        let pipelined = request.create && whole && jobs > 1;
        let spooled = request.spool || pipelined;
        let clean_script = request.clean && selection.tables.is_empty();
        if spooled && jobs == 1 {
            return Err(Error::Usage(
                "`--spool` is for a parallel restore: add `--jobs N` (N above 1), or drop `--spool`"
                    .into(),
            ));
        }
        if request.spool_dir.is_some() && !spooled {
            return Err(Error::Usage(
                "`--spool-dir` is the folder of a spool file, which only `--spool` or `--create --jobs N` (N above 1, whole database) makes: drop it, or add `--spool`"
                    .into(),
            ));
        }
        if clean_script && spooled {
            return Err(Error::Usage(
                "`--clean` restores in one transaction, which `--spool` gives up: drop `--spool`, or restore into a new database with `--create`"
                    .into(),
            ));
        }
        let selected = !(selection.tables.is_empty() && selection.schemas.is_empty());
        let strategy = if pipelined {
            Strategy::Pipelined
        } else if spooled {
            Strategy::Spooled
        } else if clean_script || selected || request.schema_only {
            Strategy::Script {
                clean: clean_script,
            }
        } else {
            Strategy::Stream
        };
        Ok(Mode {
            selection,
            jobs,
            strategy,
        })
    }

    /// Without `--spool`, a pipelined restore whose spool file cannot be made in its folder
    /// (a read-only temporary folder, say) restores in one stream instead, which needs no
    /// disk, and says so.
    pub fn or_streamed_without(mut self, request: &RestoreRequest) -> Mode {
        if !self.strategy.pipelined() || request.spool {
            return self;
        }
        // Made and dropped as the restore would make it: its folder, its kind of file.
        let dir = spooled::Spool::folder(request.spool_dir.as_deref());
        if let Err(e) = Unnamed::on_disk(&dir) {
            tracing::warn!(
                folder = %dir.display(),
                error = %e,
                "no spool file can be made for a parallel restore: restoring in one stream, which needs none (give `--spool-dir DIR` for the faster one)"
            );
            self.strategy = Strategy::Stream;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(request: RestoreRequest) -> Result<Mode> {
        let selection = Selection {
            tables: Vec::new(),
            schemas: Vec::new(),
        };
        Mode::new(&request, selection)
    }

    fn paths(request: RestoreRequest) -> (bool, bool) {
        let mode = mode(request).unwrap();
        (mode.strategy.spooled(), mode.strategy.pipelined())
    }

    #[test]
    fn a_parallel_restore_into_a_new_database_is_pipelined_with_or_without_spool() {
        let create = |jobs, spool| RestoreRequest {
            create: true,
            jobs,
            spool,
            ..RestoreRequest::default()
        };
        assert_eq!(paths(create(4, false)), (true, true));
        assert_eq!(paths(create(4, true)), (true, true));
        // One job: one stream, no spool.
        assert_eq!(paths(create(1, false)), (false, false));
        assert!(mode(create(1, true)).is_err());
        // Into an existing database: one transaction unless --spool says otherwise.
        let existing = |spool| RestoreRequest {
            jobs: 4,
            spool,
            ..RestoreRequest::default()
        };
        assert_eq!(paths(existing(false)), (false, false));
        assert_eq!(paths(existing(true)), (true, false));
        // A part of the backup, or a clean, into a new database: one stream, as before.
        let part = RestoreRequest {
            schema_only: true,
            ..create(4, false)
        };
        assert_eq!(paths(part), (false, false));
        let clean = RestoreRequest {
            clean: true,
            ..create(4, false)
        };
        assert_eq!(paths(clean), (false, false));
        // A folder for a spool that is not made: refused, saying what makes one.
        let e = mode(RestoreRequest {
            spool_dir: Some("/var/tmp".into()),
            ..create(1, false)
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("`--spool-dir`") && e.contains("--spool"), "{e}");
    }

    #[test]
    fn without_a_folder_for_its_spool_a_new_database_is_restored_in_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let paths = |spool_dir: std::path::PathBuf, spool| {
            let request = RestoreRequest {
                create: true,
                jobs: 4,
                spool,
                spool_dir: Some(spool_dir),
                ..RestoreRequest::default()
            };
            let mode = mode(request.clone()).unwrap().or_streamed_without(&request);
            (mode.strategy.spooled(), mode.strategy.pipelined())
        };
        assert_eq!(paths(dir.path().into(), false), (true, true));
        let missing = dir.path().join("no such folder");
        assert_eq!(paths(missing.clone(), false), (false, false));
        // Asked for with --spool: kept, and its failure to make the spool is the error.
        assert_eq!(paths(missing, true), (true, true));
    }
}
