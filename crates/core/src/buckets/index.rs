//! A run's index (what the source held, object by object, and where each copy is stored) and
//! the merge of two key-sorted streams that tells what changed.
//!
//! Both sides are streams sorted by key, as S3 lists them, so comparing a bucket of millions of
//! objects with the previous run holds two entries in memory, not two maps. A listing that is
//! not in key order is an error rather than a silent misdiagnosis of every object.

use std::cmp::Ordering;
use std::io::{BufRead, Write};

use futures::stream::BoxStream;
use futures::{Stream, TryStreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub modified: Option<Timestamp>,
}

impl From<crate::storage::ObjectMeta> for SourceObject {
    fn from(meta: crate::storage::ObjectMeta) -> SourceObject {
        SourceObject {
            key: meta.key,
            size: meta.size,
            etag: meta.etag,
            modified: meta.modified,
        }
    }
}

/// One object of a run's index: what the source held, and which run's copy holds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "s")]
    pub size: u64,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<Timestamp>,
    /// The run that copied these bytes; they live at `v/<version>/<key>`.
    #[serde(rename = "v")]
    pub version: String,
}

impl IndexEntry {
    pub fn new(listed: SourceObject, version: &str) -> IndexEntry {
        IndexEntry {
            key: listed.key,
            size: listed.size,
            etag: listed.etag,
            modified: listed.modified,
            version: version.to_string(),
        }
    }

    /// Where the copy of this version is stored in the destination.
    pub fn stored_key(&self) -> String {
        version_key(&self.version, &self.key)
    }

    /// Whether `listed` is the same content as this entry, judged from listings alone: same
    /// size, and the same ETag where both sides have one, else the same modification time.
    pub fn matches(&self, listed: &SourceObject) -> bool {
        if self.size != listed.size {
            return false;
        }
        match (&self.etag, &listed.etag) {
            (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
            _ => match (self.modified, listed.modified) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        }
    }
}

/// Where run `version` stores its copy of `key`.
pub fn version_key(version: &str, key: &str) -> String {
    format!("v/{version}/{key}")
}

/// What the merge found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// In both, unchanged.
    Same(IndexEntry, SourceObject),
    /// Only in the listing.
    Added(SourceObject),
    /// In both, different.
    Changed(IndexEntry, SourceObject),
    /// Only in the index.
    Removed(IndexEntry),
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Same(e, _) | Change::Changed(e, _) | Change::Removed(e) => &e.key,
            Change::Added(l) => &l.key,
        }
    }
}

struct Side<T> {
    stream: BoxStream<'static, Result<T>>,
    last: Option<String>,
    what: &'static str,
}

impl<T: Keyed> Side<T> {
    async fn next(&mut self) -> Result<Option<T>> {
        let Some(item) = self.stream.try_next().await? else {
            return Ok(None);
        };
        if let Some(last) = &self.last {
            if item.key() <= last.as_str() {
                return Err(Error::Damaged {
                    what: format!("the {}", self.what),
                    problem: format!("not sorted by key: `{}` comes after `{last}`", item.key()),
                });
            }
        }
        self.last = Some(item.key().to_string());
        Ok(Some(item))
    }
}

trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for IndexEntry {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Keyed for SourceObject {
    fn key(&self) -> &str {
        &self.key
    }
}

struct Merge {
    old: Side<IndexEntry>,
    new: Side<SourceObject>,
    old_head: Option<IndexEntry>,
    new_head: Option<SourceObject>,
    started: bool,
}

/// Merges an index (`old`) with a listing (`new`), both sorted by key, into one step per key,
/// in key order.
pub fn diff(
    old: BoxStream<'static, Result<IndexEntry>>,
    new: BoxStream<'static, Result<SourceObject>>,
    new_what: &'static str,
) -> impl Stream<Item = Result<Change>> + Send + 'static {
    let state = Merge {
        old: Side {
            stream: old,
            last: None,
            what: "previous index",
        },
        new: Side {
            stream: new,
            last: None,
            what: new_what,
        },
        old_head: None,
        new_head: None,
        started: false,
    };
    futures::stream::try_unfold(state, |mut st| async move {
        if !st.started {
            st.old_head = st.old.next().await?;
            st.new_head = st.new.next().await?;
            st.started = true;
        }
        let step = match (st.old_head.take(), st.new_head.take()) {
            (None, None) => return Ok(None),
            (Some(old), None) => {
                st.old_head = st.old.next().await?;
                Change::Removed(old)
            }
            (None, Some(new)) => {
                st.new_head = st.new.next().await?;
                Change::Added(new)
            }
            (Some(old), Some(new)) => match old.key.as_str().cmp(new.key.as_str()) {
                Ordering::Less => {
                    st.new_head = Some(new);
                    st.old_head = st.old.next().await?;
                    Change::Removed(old)
                }
                Ordering::Greater => {
                    st.old_head = Some(old);
                    st.new_head = st.new.next().await?;
                    Change::Added(new)
                }
                Ordering::Equal => {
                    st.old_head = st.old.next().await?;
                    st.new_head = st.new.next().await?;
                    if old.matches(&new) {
                        Change::Same(old, new)
                    } else {
                        Change::Changed(old, new)
                    }
                }
            },
        };
        Ok(Some((step, st)))
    })
}

/// Writes index entries as zstd-compressed JSON lines into an in-memory buffer that the caller
/// drains (`take`) into an upload, so that memory holds one buffer, not the index.
pub struct IndexWriter {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    pub entries: u64,
    pub bytes: u64,
}

impl IndexWriter {
    pub fn new() -> Result<IndexWriter> {
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)
            .map_err(|e| Error::io("starting index compression", e))?;
        Ok(IndexWriter {
            encoder,
            entries: 0,
            bytes: 0,
        })
    }

    pub fn push(&mut self, entry: &IndexEntry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).expect("index entries serialize");
        line.push(b'\n');
        self.encoder
            .write_all(&line)
            .map_err(|e| Error::io("compressing the index", e))?;
        self.entries += 1;
        self.bytes += entry.size;
        Ok(())
    }

    /// Compressed bytes ready to upload, if at least `min` of them are.
    pub fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        (self.encoder.get_ref().len() >= min.max(1)).then(|| std::mem::take(self.encoder.get_mut()))
    }

    /// Ends the stream and returns the last compressed bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.encoder
            .finish()
            .map_err(|e| Error::io("compressing the index", e))
    }
}

/// Reads an index from a blocking reader of its compressed bytes, one entry at a time.
pub fn read_entries<R: std::io::Read>(
    compressed: R,
    origin: &str,
) -> Result<impl Iterator<Item = Result<IndexEntry>>> {
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| Error::io(format!("reading index `{origin}`"), e))?;
    let origin = origin.to_string();
    Ok(std::io::BufReader::new(decoder)
        .lines()
        .enumerate()
        .map(move |(n, line)| {
            let line = line
                .map_err(|e| crate::pipeline::from_io(e, &format!("reading index `{origin}`")))?;
            serde_json::from_str(&line).map_err(|e| Error::Damaged {
                what: format!("index `{origin}` line {}", n + 1),
                problem: format!("unreadable: {e}"),
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn listed(key: &str, size: u64, etag: Option<&str>, secs: i64) -> SourceObject {
        SourceObject {
            key: key.into(),
            size,
            etag: etag.map(str::to_string),
            modified: Some(Timestamp::from_second(secs).unwrap()),
        }
    }

    fn entry(key: &str, size: u64, etag: Option<&str>, secs: i64) -> IndexEntry {
        IndexEntry::new(listed(key, size, etag, secs), "R1")
    }

    fn run(old: Vec<IndexEntry>, new: Vec<SourceObject>) -> Result<Vec<Change>> {
        let old = futures::stream::iter(old.into_iter().map(Ok)).boxed();
        let new = futures::stream::iter(new.into_iter().map(Ok)).boxed();
        futures::executor::block_on(diff(old, new, "listing").try_collect())
    }

    #[test]
    fn merge_classifies_every_key_in_order() {
        let old = vec![
            entry("a", 1, None, 10),
            entry("b", 2, None, 10),
            entry("c", 3, None, 10),
            entry("e", 5, None, 10),
        ];
        let new = vec![
            listed("a", 1, None, 10), // same
            listed("b", 2, None, 11), // touched: changed
            listed("d", 4, None, 10), // added
            listed("e", 6, None, 10), // resized: changed
            listed("f", 1, None, 10), // added at the end
        ];
        let steps = run(old, new).unwrap();
        let kinds: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| {
                let kind = match s {
                    Change::Same(..) => "same",
                    Change::Added(..) => "added",
                    Change::Changed(..) => "changed",
                    Change::Removed(..) => "removed",
                };
                (s.key(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a", "same"),
                ("b", "changed"),
                ("c", "removed"),
                ("d", "added"),
                ("e", "changed"),
                ("f", "added"),
            ]
        );
    }

    #[test]
    fn etags_decide_when_both_sides_have_them() {
        // Same ETag, different time (a re-upload of the same bytes): unchanged.
        assert!(entry("k", 4, Some("\"abc\""), 1).matches(&listed("k", 4, Some("abc"), 2)));
        // Same size and time, other ETag (overwritten within a second): changed.
        assert!(!entry("k", 4, Some("abc"), 1).matches(&listed("k", 4, Some("abd"), 1)));
        // No ETag on one side: the time decides.
        assert!(!entry("k", 4, None, 1).matches(&listed("k", 4, Some("abc"), 2)));
    }

    #[test]
    fn empty_sides() {
        assert!(run(vec![], vec![]).unwrap().is_empty());
        let steps = run(vec![entry("a", 1, None, 1)], vec![]).unwrap();
        assert!(matches!(steps.as_slice(), [Change::Removed(_)]));
        let steps = run(vec![], vec![listed("a", 1, None, 1)]).unwrap();
        assert!(matches!(steps.as_slice(), [Change::Added(_)]));
    }

    #[test]
    fn unsorted_listing_is_an_error() {
        let err = run(
            vec![],
            vec![listed("b", 1, None, 1), listed("a", 1, None, 1)],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("listing is not sorted by key: `a` comes after `b`"),
            "{err}"
        );
    }

    #[test]
    fn keys_compare_as_bytes_like_s3() {
        // S3 orders by UTF-8 bytes: "Z" < "a" < "é".
        let steps = run(
            vec![entry("Z", 1, None, 1), entry("é", 1, None, 1)],
            vec![
                listed("Z", 1, None, 1),
                listed("a", 1, None, 1),
                listed("é", 1, None, 1),
            ],
        )
        .unwrap();
        assert_eq!(steps.len(), 3);
        assert!(matches!(&steps[1], Change::Added(l) if l.key == "a"));
    }

    #[test]
    fn index_round_trips_through_compression() {
        let mut writer = IndexWriter::new().unwrap();
        let entries: Vec<IndexEntry> = (0..1000)
            .map(|i| {
                entry(
                    &format!("key/{i:05}"),
                    i,
                    (i % 2 == 0).then_some("e"),
                    i as i64,
                )
            })
            .collect();
        let mut stored = Vec::new();
        for e in &entries {
            writer.push(e).unwrap();
            if let Some(bytes) = writer.take(512) {
                stored.extend(bytes);
            }
        }
        assert_eq!(writer.entries, 1000);
        stored.extend(writer.finish().unwrap());
        let back: Vec<IndexEntry> = read_entries(stored.as_slice(), "test")
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, entries);
        assert_eq!(back[3].stored_key(), "v/R1/key/00003");
    }
}
