//! Incremental base backups (PostgreSQL 17 and later): which backup an incremental builds on,
//! the `backup_manifest` kept beside each base backup for that, and the chain a restore
//! needs, checked whole before anything is written.
//!
//! The tar side (applying an incremental onto its parent's folder, catching the manifest as
//! the tar streams past) is [`crate::tarchunk::incremental`].

use crate::backup::DataPlan;
use crate::error::{Error, Result};
use crate::pipeline::{self, Delivered, Expected};
use crate::process::tools::major;
use crate::repository::manifest::{BackupKind, Manifest, SideObject};
use crate::repository::Repository;
use crate::wal;
use crate::Context;

/// What `backup base` read from the server, for choosing an incremental's parent.
pub(crate) struct Server<'a> {
    /// The configured database.
    pub name: &'a str,
    pub version: &'a str,
    pub system_id: u64,
    /// `summarize_wal` (`None` before PostgreSQL 17).
    pub summarize_wal: Option<&'a str>,
}

/// The backup an incremental of `server` builds on, with its `backup_manifest`; `None` (said
/// in the log) when a full backup must be taken instead. Refused before PostgreSQL 17.
pub(crate) async fn choose_parent(
    ctx: &Context,
    repo: &Repository,
    client: &tokio_postgres::Client,
    server: &Server<'_>,
) -> Result<Option<(Manifest, Vec<u8>)>> {
    let name = server.name;
    if major(server.version) < 17 {
        return Err(Error::Usage(format!(
            "`--incremental` needs PostgreSQL 17 or later and database `{name}` runs {}: take full base backups (without `--incremental`)",
            server.version
        )));
    }
    let full = |why: String| {
        tracing::warn!("taking a full base backup of `{name}` instead of an incremental: {why}");
        Ok(None)
    };
    if server.summarize_wal != Some("on") {
        return full(
            "`summarize_wal` is off on its server, and incrementals need its WAL summaries: run `ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();`".into(),
        );
    }
    let system = server.system_id.to_string();
    let parent = repo.list().await?.into_iter().rev().find(|m| {
        m.kind == BackupKind::Base
            && m.database == name
            && m.base.as_ref().and_then(|b| b.system_identifier.as_deref()) == Some(&system)
    });
    let Some(parent) = parent else {
        return full("no earlier base backup of this cluster in the repository".into());
    };
    let Some(stored) = parent.backup_manifest.clone() else {
        return full(format!(
            "base backup `{}` was taken before lifeboat kept its backup_manifest",
            parent.id
        ));
    };
    let base = parent
        .base
        .as_ref()
        .expect("a base backup has its WAL place");
    let start = wal::parse_lsn(&base.start_lsn).unwrap_or(0);
    // The server needs summaries of all the WAL from the parent's start; it removes those
    // older than `wal_summary_keep_time`.
    let row = client
        .query_one(
            "SELECT (SELECT min(start_lsn)::text FROM pg_available_wal_summaries()), \
             current_setting('wal_summary_keep_time')",
            &[],
        )
        .await
        .map_err(|e| Error::postgres("reading the server's WAL summaries", &e))?;
    let oldest: Option<String> = row.get(0);
    let keep: String = row.get(1);
    let oldest = oldest.as_deref().and_then(wal::parse_lsn);
    if let Some(why) = summaries_short(oldest, start, &parent.id, &keep) {
        return full(why);
    }
    match read_manifest(ctx, repo, &parent, &stored).await {
        Ok(text) => Ok(Some((parent, text))),
        Err(e) if !ctx.cancel.is_cancelled() => full(format!(
            "the backup_manifest of base backup `{}` cannot be read ({e})",
            parent.id
        )),
        Err(e) => Err(e),
    }
}

/// Why the server's WAL summaries, the oldest beginning at `oldest`, cannot tell what changed
/// since a parent that started at `start`; `None` when they can.
fn summaries_short(oldest: Option<u64>, start: u64, parent: &str, keep: &str) -> Option<String> {
    match oldest {
        Some(oldest) if oldest <= start => None,
        Some(oldest) => Some(format!(
            "its WAL summaries begin at {} and base backup `{parent}` started at {} (wal_summary_keep_time = {keep}): the changes since cannot be told",
            wal::format_lsn(oldest),
            wal::format_lsn(start)
        )),
        None => Some("its server has no WAL summaries yet".into()),
    }
}

/// Reads a base backup's stored `backup_manifest`, checked against its record.
async fn read_manifest(
    ctx: &Context,
    repo: &Repository,
    backup: &Manifest,
    stored: &SideObject,
) -> Result<Vec<u8>> {
    let expected = Expected {
        backup_id: backup.id.clone(),
        sha256: stored.sha256.clone(),
        stored_size: stored.stored_size,
        encrypted: false,
    };
    match pipeline::download(
        repo.storage(),
        &stored.key,
        &expected,
        None,
        Vec::new(),
        &ctx.cancel,
    )
    .await?
    {
        Delivered::Complete(text) | Delivered::ConsumerClosed(text) => Ok(text),
    }
}

/// Stores a backup's `backup_manifest` at `key`: compressed as its data is, never encrypted.
pub(crate) async fn store_manifest(
    repo: &Repository,
    plan: &DataPlan,
    key: &str,
    text: &[u8],
) -> Result<SideObject> {
    let seal = pipeline::SealOptions {
        recipients: Vec::new(),
        framing: None,
        ..plan.seal.clone()
    };
    let sealed = pipeline::seal_bytes(text, &seal)?;
    let object = SideObject {
        key: key.to_string(),
        stored_size: sealed.len() as u64,
        sha256: pipeline::sha256_hex(&sealed),
    };
    repo.storage().write(key, sealed).await?;
    Ok(object)
}

/// The chain that restores `newest`: its full backup first, then each incremental in order.
/// A link missing from `all` is refused, naming it.
pub fn chain_of(all: &[Manifest], newest: &Manifest, location: &str) -> Result<Vec<Manifest>> {
    let mut chain = vec![newest.clone()];
    while let Some(parent) = chain.last().and_then(|m| m.parent()).map(str::to_string) {
        if chain.len() > all.len() {
            return Err(Error::Damaged {
                what: format!("the chain of base backup `{}`", newest.id),
                problem: "loops back on itself".into(),
            });
        }
        let child = chain.last().expect("not empty").id.clone();
        let found = all.iter().find(|m| m.id == parent).ok_or_else(|| {
            Error::Missing(format!(
                "base backup `{parent}`, on which incremental `{child}` depends, is not in repository `{location}`: restore from a backup whose chain is whole (`lifeboat list` shows chains; `--base ID`)"
            ))
        })?;
        chain.push(found.clone());
    }
    chain.reverse();
    Ok(chain)
}

/// Checks a chain before a restore writes anything: every object of every link is stored
/// at its recorded size, and each incremental's data reads back whole with its recorded
/// SHA-256 (incrementals are small; the full backup's data is checked as it is unpacked).
pub async fn check_chain(
    ctx: &Context,
    repo: &Repository,
    chain: &[Manifest],
    identity: Option<&std::path::Path>,
) -> Result<()> {
    if chain.len() < 2 {
        return Ok(());
    }
    for link in chain {
        for (key, size, _) in link.stored_objects() {
            let found = repo.storage().stat(key).await?;
            match found {
                Some(stat) if stat.size == size => {}
                Some(stat) => {
                    return Err(Error::Integrity {
                        id: link.id.clone(),
                        detail: format!(
                            "`{}` holds {} bytes where its manifest says {size}: this link of the chain is damaged, restore from an earlier full backup (`--base ID`)",
                            repo.storage().display(key),
                            stat.size
                        ),
                    })
                }
                None => {
                    return Err(Error::Integrity {
                        id: link.id.clone(),
                        detail: format!(
                            "`{}` is missing: this link of the chain is lost, restore from an earlier full backup (`--base ID`)",
                            repo.storage().display(key)
                        ),
                    })
                }
            }
        }
    }
    for link in &chain[1..] {
        let identities = crate::repository::keys::identities_for(&ctx.config, link, identity)?;
        pipeline::download_sealed(
            repo.storage(),
            &link.data,
            &link.expected(),
            identities,
            |mut stored| std::io::copy(&mut stored, &mut std::io::sink()),
            &ctx.cancel,
        )
        .await
        .map_err(|e| match e {
            Error::Integrity { id, detail } => Error::Integrity {
                id,
                detail: format!("{detail}: this link of the chain is damaged, restore from an earlier full backup (`--base ID`)"),
            },
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(id: &str, parent: Option<&str>) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "kind": "base", "database": "main", "dbname": "yomira",
            "options": {"schema_only": false, "schemas": []},
            "server_version": "17.10", "client_version": "17.10",
            "started_at": "2026-12-01T02:00:00Z", "finished_at": "2026-12-01T02:10:00Z",
            "data": format!("data/base/{id}.tar.zst"),
            "raw_size": 3, "stored_size": 3, "sha256": "x",
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": null, "storage_class": null, "tool_version": "0", "tables": [],
            "base": {"start_lsn": "0/1000028", "end_lsn": "0/1000100", "timeline": 1,
                     "first_wal": "000000010000000000000001", "last_wal": "000000010000000000000001",
                     "wal_segment_size": 16777216, "parent": parent},
        }))
        .unwrap()
    }

    #[test]
    fn summaries_must_reach_back_to_the_parent() {
        assert_eq!(summaries_short(Some(0x100), 0x100, "p", "10d"), None);
        assert_eq!(summaries_short(Some(0x100), 0x2000, "p", "10d"), None);
        let why = summaries_short(Some(0x3000028), 0x2000028, "p", "14400min").unwrap();
        assert_eq!(why, "its WAL summaries begin at 0/3000028 and base backup `p` started at 0/2000028 (wal_summary_keep_time = 14400min): the changes since cannot be told");
        assert!(summaries_short(None, 1, "p", "10d")
            .unwrap()
            .contains("no WAL summaries"));
    }

    #[test]
    fn a_chain_runs_from_its_full_backup_and_a_missing_link_is_named() {
        let all = vec![
            base("full", None),
            base("other", None),
            base("one", Some("full")),
            base("two", Some("one")),
        ];
        let ids = |chain: Vec<Manifest>| chain.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(chain_of(&all, &all[3], "r").unwrap()),
            ["full", "one", "two"]
        );
        assert_eq!(ids(chain_of(&all, &all[1], "r").unwrap()), ["other"]);
        let broken: Vec<Manifest> = all.iter().filter(|m| m.id != "one").cloned().collect();
        let err = chain_of(&broken, &all[3], "r").unwrap_err().to_string();
        assert!(
            err.contains("base backup `one`, on which incremental `two` depends"),
            "{err}"
        );
        // A manifest that names itself among its parents does not loop for ever.
        let looped = vec![base("a", Some("b")), base("b", Some("a"))];
        assert!(chain_of(&looped, &looped[0], "r").is_err());
    }
}
