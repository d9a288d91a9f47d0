//! The layout: ustar headers as `pg_basebackup` writes them, and the skippable frame that
//! describes each chunk.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

/// Tar bytes per chunk: large enough that compression loses nothing (zstd level 3 looks back
/// 2 MiB), small enough that chunks in flight stay a few dozen MiB.
pub const CHUNK_TARGET: usize = 8 << 20;

/// The largest chunk a restore accepts (a damaged description must not allocate gigabytes).
pub(super) const CHUNK_LIMIT: u64 = 64 << 20;

pub(super) const BLOCK: usize = 512;

/// Largest single write while unpacking.
pub(super) const WRITE_PIECE: usize = 256 << 10;

/// The magic number of lifeboat's skippable frames (zstd reserves 0x184D2A50..=0x184D2A5F).
pub(super) const MAGIC: u32 = 0x184D_2A5B;

/// What the skippable frame before each chunk says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Bytes of the zstd frame that follows.
    pub stored: u64,
    /// Tar bytes in that frame.
    pub raw: u64,
    /// Set when the chunk starts inside a file's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// Where a chunk that starts inside a file's data continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub path: String,
    /// Offset in the file of the chunk's first byte.
    pub offset: u64,
    /// The file's whole size.
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EntryKind {
    File,
    Dir,
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) path: String,
    pub(super) kind: EntryKind,
    pub(super) size: u64,
    pub(super) mode: u32,
}

pub(super) fn damaged(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// A tar number: octal text, or base-256 when the first byte has its high bit set.
pub(super) fn tar_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| damaged("tar number out of range"))?;
        }
        return Ok(value);
    }
    let text = std::str::from_utf8(field).map_err(|_| damaged("tar number is not text"))?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| damaged(format!("bad tar number `{text}`")))
}

pub(super) fn tar_text(field: &[u8]) -> io::Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| damaged("tar name is not UTF-8"))
}

/// Parses one header block; `None` for the zero block that ends an archive.
pub(super) fn parse_header(block: &[u8]) -> io::Result<Option<Header>> {
    debug_assert_eq!(block.len(), BLOCK);
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let expected = tar_number(&block[148..156])?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != expected {
        return Err(damaged("tar header checksum mismatch"));
    }
    let name = tar_text(&block[0..100])?;
    let prefix = if &block[257..262] == b"ustar" {
        tar_text(&block[345..500])?
    } else {
        String::new()
    };
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    let size = tar_number(&block[124..136])?;
    let mode = tar_number(&block[100..108])? as u32 & 0o7777;
    let kind = match block[156] {
        b'0' | 0 | b'7' => EntryKind::File,
        b'5' => EntryKind::Dir,
        b'2' => EntryKind::Symlink(tar_text(&block[157..257])?),
        other => {
            return Err(damaged(format!(
                "tar entry `{path}` has type `{}`, which base backups do not use",
                other as char
            )))
        }
    };
    if kind != EntryKind::File && size != 0 {
        return Err(damaged(format!(
            "tar entry `{path}` has data but is not a file"
        )));
    }
    Ok(Some(Header {
        path,
        kind,
        size,
        mode,
    }))
}

pub(super) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

pub(super) fn write_chunk<W: Write + ?Sized>(
    sink: &mut W,
    frame: &[u8],
    meta: &ChunkMeta,
) -> io::Result<()> {
    let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
    sink.write_all(&MAGIC.to_le_bytes())?;
    sink.write_all(&(text.len() as u32).to_le_bytes())?;
    sink.write_all(&text)?;
    sink.write_all(frame)
}
