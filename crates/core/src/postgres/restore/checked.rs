//! Row counts of a restore taken from the archive as it passes on its way to `pg_restore`,
//! compared with the backup's before the archive's last bytes are let through: a mismatch
//! leaves `pg_restore` without the end of its archive, so its one transaction never commits.
//! Tables the archive holds no `COPY` data for (materialized views) are counted afterwards.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::HoldBack;
use crate::postgres::archive::RowCounter;
use crate::postgres::conn::ConnInfo;
use crate::postgres::counts::count_tables;
use crate::repository::manifest::{Manifest, TableRows};

/// A writer that counts the rows of the archive written through it and withholds its end.
pub(super) struct Checked<W: Write> {
    counter: RowCounter,
    hold: HoldBack<W>,
    /// Draining: a consumer that stops reading is not the end of the download, which goes
    /// on to verify every byte, unless this flag says the consumer failed.
    drain: Option<Arc<AtomicBool>>,
    closed: bool,
}

/// What [`Checked::settle`] found: the consumer, and the tables it could not check.
pub(super) type Settled<W> = std::result::Result<(W, Vec<TableRows>), (W, Error)>;

impl<W: Write + Send + 'static> Checked<W> {
    pub(super) fn new(inner: W) -> Self {
        Checked {
            counter: RowCounter::start(),
            hold: HoldBack::new(inner),
            drain: None,
            closed: false,
        }
    }

    /// For a consumer that may stop reading once it has what it needs (pg_restore of a
    /// selection writing a script): the rest is still read, counted and verified, so that
    /// what it wrote is committed only on the whole archive's verdict. `failed`, once set,
    /// ends the download instead.
    pub(super) fn draining(inner: W, failed: Arc<AtomicBool>) -> Self {
        Checked {
            drain: Some(failed),
            ..Checked::new(inner)
        }
    }

    /// The consumer, without the withheld end (the consumer stopped reading).
    pub(super) fn into_inner(self) -> W {
        self.hold.into_inner_unreleased()
    }

    /// Compares the rows counted with `tables` (the backup's counts); when they agree, lets
    /// the end through. On a mismatch the end stays withheld and the error comes back with
    /// the consumer, to be stopped.
    pub(super) async fn settle(self, backup: &str, tables: &[&TableRows]) -> Settled<W> {
        let Checked { counter, hold, .. } = self;
        let counted = match tokio::task::spawn_blocking(move || counter.finish()).await {
            Ok(Ok(counted)) => counted,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not count rows in the archive; counting in the database");
                None
            }
            Err(e) => return Err((hold.into_inner_unreleased(), Error::thread("restore", e))),
        };
        let (found, unchecked) = split(counted.as_ref(), tables);
        if let Err(e) = compare(backup, &found) {
            return Err((hold.into_inner_unreleased(), e));
        }
        match tokio::task::spawn_blocking(move || hold.release()).await {
            Ok(Ok(inner)) => Ok((inner, unchecked)),
            // The consumer ended before the end (pg_restore, failing): it says why.
            Ok(Err((inner, e))) if e.kind() == io::ErrorKind::BrokenPipe => Ok((inner, unchecked)),
            Ok(Err((inner, e))) => Err((inner, Error::io("writing the restored stream", e))),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.closed {
            match self.hold.write_all(buf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe && self.drain.is_some() => {
                    self.closed = true;
                }
                Err(e) => return Err(e),
            }
        }
        if self.closed
            && self
                .drain
                .as_ref()
                .is_some_and(|failed| failed.load(Ordering::SeqCst))
        {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.counter.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hold.flush()
    }
}

/// The rows found in the archive for each of `tables` it holds data for, and the tables it
/// does not (or all of them, when the archive could not be counted).
fn split<'t>(
    counted: Option<&HashMap<(String, String), u64>>,
    tables: &[&'t TableRows],
) -> (Vec<(&'t TableRows, Option<u64>)>, Vec<TableRows>) {
    let mut found = Vec::new();
    let mut unchecked = Vec::new();
    for table in tables {
        match counted.and_then(|c| c.get(&(table.schema.clone(), table.name.clone()))) {
            Some(rows) => found.push((*table, Some(*rows))),
            None => unchecked.push((*table).clone()),
        }
    }
    (found, unchecked)
}

/// An error naming the tables (at most five) whose rows differ from the backup's.
pub(super) fn compare(backup: &str, found: &[(&TableRows, Option<u64>)]) -> Result<()> {
    let problems: Vec<String> = found
        .iter()
        .filter_map(|(table, rows)| match rows {
            Some(rows) if *rows == table.rows => None,
            Some(rows) => Some(format!(
                "`{}` has {rows} rows, the backup has {}",
                table.qualified(),
                table.rows
            )),
            None => Some(format!("`{}` is missing", table.qualified())),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let mut detail = problems[..problems.len().min(5)].join(", ");
    if problems.len() > 5 {
        detail.push_str(&format!(" and {} more", problems.len() - 5));
    }
    Err(Error::Mismatch {
        id: backup.to_string(),
        detail,
    })
}

/// Counts the restored tables the archive could not count, and checks them against the
/// backup's.
pub(super) async fn check_counts(
    manifest: &Manifest,
    target: &ConnInfo,
    to_check: &[&TableRows],
) -> Result<()> {
    if to_check.is_empty() {
        return Ok(());
    }
    let client = target.connect("target database").await?;
    let counts = count_tables(&client, to_check).await?;
    let found: Vec<(&TableRows, Option<u64>)> = to_check
        .iter()
        .zip(&counts)
        .map(|(table, (_, rows))| (*table, *rows))
        .collect();
    compare(&manifest.id, &found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str, rows: u64) -> TableRows {
        TableRows {
            schema: schema.into(),
            name: name.into(),
            rows,
        }
    }

    #[test]
    fn tables_without_data_in_the_archive_are_left_to_count_afterwards() {
        let comic = table("core", "comic", 3);
        let view = table("core", "popular", 2);
        let counted = HashMap::from([(("core".to_string(), "comic".to_string()), 3)]);
        let (found, unchecked) = split(Some(&counted), &[&comic, &view]);
        assert_eq!(found, vec![(&comic, Some(3))]);
        assert_eq!(unchecked, vec![view.clone()]);
        let (found, unchecked) = split(None, &[&comic, &view]);
        assert!(found.is_empty());
        assert_eq!(unchecked.len(), 2);
    }

    #[test]
    fn a_difference_names_the_table_and_both_counts() {
        let comic = table("core", "comic", 199);
        let err = compare("b1", &[(&comic, Some(200))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`core.comic` has 200 rows, the backup has 199"),
            "{err}"
        );
        let many: Vec<TableRows> = (0..7).map(|i| table("s", &format!("t{i}"), 1)).collect();
        let found: Vec<_> = many.iter().map(|t| (t, Some(2))).collect();
        let err = compare("b1", &found).unwrap_err().to_string();
        assert!(err.contains("and 2 more"), "{err}");
        assert!(compare("b1", &[(&comic, Some(199))]).is_ok());
    }
}
