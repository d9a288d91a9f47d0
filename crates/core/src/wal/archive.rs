//! Reading one archive (a [`WalArchive`]): which files it holds and when each was stored, the timelines' histories, and one file downloaded
//! and checked (it must be the file it is stored as, and a segment must come from the
//! archive's generation).

use std::path::Path;

use super::cluster::WalArchive;
use super::{parse_history, segment, spans, stored, WalName};
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::Context;

/// The identities to read an archive written with or without encryption.
pub fn identities(ctx: &Context, encrypted: bool) -> Result<Option<Identities>> {
    if !encrypted {
        return Ok(None);
    }
    let path = ctx
        .config
        .encryption
        .as_ref()
        .and_then(|e| e.identity_file.as_deref())
        .ok_or_else(|| {
            Error::Crypto("the WAL archive is encrypted: set `encryption.identity_file`".into())
        })?;
    crate::crypto::load_identities(Path::new(path)).map(Some)
}

/// Downloads archived file `name` and checks it: it must be the file it is stored as, and a
/// segment must come from the archive's generation. `None` when the archive does not have it.
pub(super) async fn download(
    ctx: &Context,
    repo: &WalArchive<'_>,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let storage = repo.storage();
    for encrypted in [false, true] {
        if let Some(sealed) = storage.read_opt(&repo.key(name, encrypted)).await? {
            let ids = identities(ctx, encrypted)?;
            let owned = name.to_string();
            let raw =
                tokio::task::spawn_blocking(move || stored::open(&owned, &sealed, ids.as_ref()))
                    .await
                    .map_err(|e| Error::thread("decompression", e))??;
            let header = segment::check(name, &raw).map_err(|detail| Error::DamagedWal {
                name: name.to_string(),
                detail,
            })?;
            match (header, repo.system_id()) {
                (Some(header), Some(archived)) if header.system_id != archived => {
                    return Err(Error::DamagedWal {
                        name: name.to_string(),
                        detail: format!(
                            "it comes from the cluster with system identifier {}, but the archive is {}",
                            header.system_id,
                            repo.describe()
                        ),
                    })
                }
                _ => {}
            }
            return Ok(Some(raw));
        }
    }
    Ok(None)
}

/// Each archived timeline history among `names`, parsed: `(timeline, its history)`.
pub async fn read_histories(
    ctx: &Context,
    repo: &WalArchive<'_>,
    names: &[String],
) -> Result<Vec<(u32, Vec<(u32, u64)>)>> {
    let mut histories = Vec::new();
    for name in names {
        if let Some(WalName::History { timeline }) = WalName::parse(name) {
            if let Some(text) = super::read_archived(ctx, repo, name).await? {
                histories.push((timeline, parse_history(&String::from_utf8_lossy(&text))));
            }
        }
    }
    Ok(histories)
}

/// When archived file `name` was stored, if it is in the archive.
pub async fn stored_at(repo: &WalArchive<'_>, name: &str) -> Result<Option<jiff::Timestamp>> {
    for encrypted in [false, true] {
        if let Some(at) = repo.storage().modified(&repo.key(name, encrypted)).await? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// For each archived timeline, when its newest file (segment or history) was stored: what
/// [`super::production_line`] tells the production line by.
pub async fn last_archived(
    repo: &WalArchive<'_>,
    names: &[String],
    segment_size: u64,
) -> Result<Vec<(u32, jiff::Timestamp)>> {
    let mut newest: Vec<(u32, String)> = spans(names, segment_size)
        .into_iter()
        .map(|span| (span.timeline, span.last))
        .collect();
    for name in names {
        if let Some(WalName::History { timeline }) = WalName::parse(name) {
            newest.push((timeline, name.clone()));
        }
    }
    let mut out: Vec<(u32, jiff::Timestamp)> = Vec::new();
    for (timeline, name) in newest {
        let Some(at) = stored_at(repo, &name).await? else {
            continue;
        };
        match out.iter_mut().find(|(t, _)| *t == timeline) {
            Some((_, seen)) => *seen = (*seen).max(at),
            None => out.push((timeline, at)),
        }
    }
    Ok(out)
}

/// Names of every archived WAL file, sorted.
pub async fn archived_names(repo: &WalArchive<'_>) -> Result<Vec<String>> {
    let entries = repo.storage().list(repo.prefix()).await?;
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|e| repo.name_of_key(&e.path).map(String::from))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
