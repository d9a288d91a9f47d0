//! Listing a bucket in key order with several listing requests at once.
//!
//! One paged listing of a bucket is a chain of requests, each waiting for the last. Where the
//! keys have "folders", the first levels are listed with a delimiter to split the key space
//! into parts that are listed at the same time (`checkers` of them), each into a small bounded
//! buffer, and read back in key order: the result is the same stream as one listing, sooner.
//! A level with more than a page of entries is not split further: it is already big enough.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::index::SourceObject;
use crate::error::{Error, Result};
use crate::storage::{self, Storage};

/// Levels looked into for folders to split on.
const MAX_DEPTH: usize = 3;
/// Entries a level may have to be split (one listing page).
const SPLIT_LIMIT: usize = 1000;
/// SourceObject objects buffered per part.
const PART_BUFFER: usize = 2000;

enum Unit {
    Object(SourceObject),
    /// A prefix that may still be split.
    Prefix(String),
    /// A prefix listed as a whole.
    Whole(String),
}

/// Every object of the bucket in key order, listed `checkers` parts at a time.
pub async fn list_parallel(
    bucket: &Storage,
    checkers: usize,
) -> Result<BoxStream<'static, Result<SourceObject>>> {
    if checkers <= 1 {
        return list_flat(bucket, "").await;
    }
    let mut units = vec![Unit::Prefix(String::new())];
    for _ in 0..MAX_DEPTH {
        let parts = units
            .iter()
            .filter(|u| !matches!(u, Unit::Object(_)))
            .count();
        if parts >= checkers || !units.iter().any(|u| matches!(u, Unit::Prefix(_))) {
            break;
        }
        let mut next = Vec::with_capacity(units.len());
        for unit in units {
            match unit {
                Unit::Prefix(prefix) => match children(bucket, &prefix, SPLIT_LIMIT).await? {
                    Some(children) => next.extend(children),
                    None => next.push(Unit::Whole(prefix)),
                },
                other => next.push(other),
            }
        }
        units = next;
    }
    let bucket = bucket.clone();
    let parts = futures::stream::iter(units)
        .map(move |unit| {
            let bucket = bucket.clone();
            async move {
                Ok::<_, Error>(match unit {
                    Unit::Object(listed) => futures::stream::once(async { Ok(listed) }).boxed(),
                    Unit::Prefix(prefix) => in_background(walk(bucket, prefix)),
                    Unit::Whole(prefix) => in_background(list_flat(&bucket, &prefix).await?),
                })
            }
        })
        .buffered(checkers)
        .try_flatten();
    Ok(parts.boxed())
}

/// Every object below `prefix` in key order, one delimiter listing per folder, depth first
/// (a folder's keys sort exactly where the folder sorts among its parent's entries). A folder
/// with more than a page of entries is listed flat instead, so memory holds a page per level.
fn walk(bucket: Storage, prefix: String) -> BoxStream<'static, Result<SourceObject>> {
    enum Frame {
        Entries(std::collections::VecDeque<Unit>),
        Flat(BoxStream<'static, Result<SourceObject>>),
    }
    struct Walk {
        bucket: Storage,
        stack: Vec<Frame>,
        pending: Option<String>,
    }
    let state = Walk {
        bucket,
        stack: Vec::new(),
        pending: Some(prefix),
    };
    futures::stream::try_unfold(state, |mut st| async move {
        loop {
            if let Some(dir) = st.pending.take() {
                let frame = match children(&st.bucket, &dir, SPLIT_LIMIT).await? {
                    Some(units) => Frame::Entries(units.into()),
                    None => Frame::Flat(list_flat(&st.bucket, &dir).await?),
                };
                st.stack.push(frame);
            }
            let Some(frame) = st.stack.last_mut() else {
                return Ok(None);
            };
            let next = match frame {
                Frame::Entries(units) => units.pop_front(),
                Frame::Flat(stream) => stream.try_next().await?.map(Unit::Object),
            };
            match next {
                None => {
                    st.stack.pop();
                }
                Some(Unit::Object(listed)) => return Ok(Some((listed, st))),
                Some(Unit::Prefix(dir) | Unit::Whole(dir)) => st.pending = Some(dir),
            }
        }
    })
    .boxed()
}

/// Drives a listing in its own task, a bounded buffer ahead of its reader.
fn in_background(
    mut listing: BoxStream<'static, Result<SourceObject>>,
) -> BoxStream<'static, Result<SourceObject>> {
    let (tx, rx) = tokio::sync::mpsc::channel(PART_BUFFER);
    tokio::spawn(async move {
        while let Some(item) = listing.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    super::receiver_stream(rx)
}

/// The objects and folders right below `prefix`, in key order; `None` if there are more
/// than `limit` (the level is not worth splitting).
async fn children(bucket: &Storage, prefix: &str, limit: usize) -> Result<Option<Vec<Unit>>> {
    let mut level = bucket.list_level(prefix).await?;
    let mut out = Vec::new();
    while let Some(entry) = level.try_next().await? {
        if out.len() >= limit {
            return Ok(None);
        }
        out.push(match entry {
            storage::Listed::Folder(dir) => Unit::Prefix(dir),
            storage::Listed::Object(meta) => Unit::Object(SourceObject::from(meta)),
        });
    }
    // A page gives objects and folders apart; in key order, a folder sorts where its prefix
    // does (every key below it shares that prefix).
    out.sort_by(|a, b| unit_key(a).cmp(unit_key(b)));
    Ok(Some(out))
}

fn unit_key(unit: &Unit) -> &str {
    match unit {
        Unit::Object(listed) => &listed.key,
        Unit::Prefix(prefix) | Unit::Whole(prefix) => prefix,
    }
}

/// Every object below `prefix`, in key order, as one listing.
pub async fn list_flat(
    bucket: &Storage,
    prefix: &str,
) -> Result<BoxStream<'static, Result<SourceObject>>> {
    Ok(bucket
        .list_stream(prefix)
        .await?
        .map_ok(|entry| SourceObject {
            key: entry.path,
            size: entry.size,
            etag: entry.etag,
            modified: entry.modified,
        })
        .boxed())
}
