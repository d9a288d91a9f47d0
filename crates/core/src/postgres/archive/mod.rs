//! The custom-format archive of `pg_dump`: just enough of it to restore fast in parallel, and
//! to count each table's rows as the archive streams by ([`rows`]), instead of scanning every
//! table a second time.
//!
//! `pg_dump` writing to a pipe cannot go back to record where each table's data starts, so a
//! streamed archive has no data offsets in its table of contents. `pg_restore --jobs` then has
//! every worker read the file from the top to find its table: on a large database that costs
//! more than the restore. Once the archive is spooled to a file, [`index_data_offsets`] walks
//! its data blocks and writes their offsets into the table of contents in place, exactly as
//! `pg_dump` does when it writes to a file (the offset fields have a fixed size). [`Blocks`]
//! reads an archive block by block as it arrives, for a restore that loads the tables itself.
//!
//! Format (pg_backup_archiver.c, pg_backup_custom.c): a header, the table of contents (entries
//! of integers and length-prefixed strings, each ending with a data-offset field), then data
//! blocks: a type byte, the entry's dump id, and length-prefixed chunks ending with a zero
//! length (large-object blocks hold several such runs, each after its oid, ending with oid 0).

mod blocks;
mod rows;

pub use blocks::{copy_chunks, BlockHead, Blocks, Entry, Piece};
pub use rows::{count_alongside, count_rows, Counts, RowCounter, StreamCounts, Tee};

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

const MAGIC: &[u8; 5] = b"PGDMP";
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NOT_SET: u8 = 1;
/// Entries whose SQL sets up a restoring session (`pg_restore` runs them on every connection).
const SESSION_ENTRIES: [&[u8]; 3] = [b"ENCODING", b"STDSTRINGS", b"SEARCHPATH"];
/// Post-data entries a restore may run as soon as their table is loaded: an index, or a
/// primary key, unique or exclusion constraint (each one statement on one table).
const TABLE_INDEXES: [&[u8]; 2] = [b"INDEX", b"CONSTRAINT"];
const OFFSET_SET: u8 = 2;
/// Archive versions this reader knows: 1.12 (PostgreSQL 10) to 1.16 (PostgreSQL 17 and 18).
const KNOWN_MINORS: std::ops::RangeInclusive<u8> = 12..=16;

struct Cursor<R> {
    inner: R,
    pos: u64,
    int_size: usize,
    off_size: usize,
    scratch: Vec<u8>,
}

impl<R: Read> Cursor<BufReader<R>> {
    /// A cursor at the start of `input`, read through a buffer.
    fn buffered(input: R) -> Self {
        Cursor::over(BufReader::with_capacity(1 << 16, input))
    }
}

impl<R: Read> Cursor<R> {
    /// A cursor at the start of `input` (integer sizes as the header will say; 4 and 8 until
    /// then).
    fn over(input: R) -> Self {
        Cursor {
            inner: input,
            pos: 0,
            int_size: 4,
            off_size: 8,
            scratch: Vec::new(),
        }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn int(&mut self) -> io::Result<i64> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            value |= i64::from(self.byte()?) << (8 * i);
        }
        Ok(if negative { -value } else { value })
    }

    /// A string; `None` for SQL NULL (length -1).
    fn string(&mut self) -> io::Result<Option<Vec<u8>>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += len as u64;
        Ok(Some(buf))
    }

    /// Reads `n` bytes, handing them to `seen` a piece at a time (through a buffer made once:
    /// a row is a chunk of its own, so this runs once per row).
    fn read_through(&mut self, n: u64, mut seen: impl FnMut(&[u8])) -> io::Result<()> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; 1 << 16];
        }
        let mut left = n;
        while left > 0 {
            let want = left.min(self.scratch.len() as u64) as usize;
            self.inner.read_exact(&mut self.scratch[..want])?;
            seen(&self.scratch[..want]);
            left -= want as u64;
        }
        self.pos += n;
        Ok(())
    }

    /// The next chunk's length; `None` at the zero length that ends a block's chunks.
    fn chunk_len(&mut self) -> io::Result<Option<u64>> {
        match self.int()? {
            0 => Ok(None),
            len if len < 0 => Err(invalid("negative chunk length")),
            len => Ok(Some(len as u64)),
        }
    }

    /// Reads length-prefixed chunks up to the zero length that ends them, handing their bytes
    /// to `seen`.
    fn read_chunks(&mut self, mut seen: impl FnMut(&[u8])) -> io::Result<()> {
        while let Some(len) = self.chunk_len()? {
            self.read_through(len, &mut seen)?;
        }
        Ok(())
    }

    /// Reads the header and the table of contents; `None` for an archive version this reader
    /// does not know.
    fn header_and_toc(&mut self) -> io::Result<Option<Toc>> {
        let mut magic = [0u8; 5];
        self.inner.read_exact(&mut magic)?;
        self.pos = 5;
        if &magic != MAGIC {
            return Err(invalid("bad magic"));
        }
        let (major, minor, _rev) = (self.byte()?, self.byte()?, self.byte()?);
        if major != 1 || !KNOWN_MINORS.contains(&minor) {
            return Ok(None);
        }
        self.int_size = self.byte()? as usize;
        self.off_size = self.byte()? as usize;
        if !(1..=8).contains(&self.int_size) || !(1..=8).contains(&self.off_size) {
            return Err(invalid("odd integer sizes"));
        }
        let _format = self.byte()?;
        let compressed = if minor >= 15 {
            self.byte()? != 0
        } else {
            self.int()? != 0
        };
        for _ in 0..7 {
            self.int()?; // creation time
        }
        self.string()?; // database name
        self.string()?; // server version
        self.string()?; // pg_dump version

        let count = self.int()?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let dump_id = self.int()?;
            self.int()?; // had dumper
            self.string()?; // table oid
            self.string()?; // oid
            let tag = self.string()?.unwrap_or_default();
            let desc = self.string()?.unwrap_or_default();
            let section = self.int()?;
            let definition = self.string()?;
            // Only the definitions of session settings and of indexes are kept: they are
            // short, and as many as the schema's objects.
            let definition = definition.filter(|_| {
                SESSION_ENTRIES.contains(&desc.as_slice())
                    || TABLE_INDEXES.contains(&desc.as_slice())
            });
            self.string()?; // drop statement
            let copy_stmt = self.string()?;
            let namespace = self.string()?.unwrap_or_default();
            let tablespace = self.string()?.unwrap_or_default();
            if minor >= 14 {
                self.string()?; // table access method
            }
            if minor >= 16 {
                self.int()?; // relkind
            }
            self.string()?; // owner
            self.string()?; // "false" (with oids)
            let mut deps = Vec::new();
            while let Some(dep) = self.string()? {
                // pg_dump writes dump ids (from 1); anything else names no entry: -1.
                let dep = std::str::from_utf8(&dep).ok().and_then(|d| d.parse().ok());
                deps.push(dep.unwrap_or(-1));
            }
            let offset_field = self.pos;
            let flag = self.byte()?;
            self.read_through(self.off_size as u64, |_| {})?;
            entries.push(TocEntry {
                dump_id,
                tag,
                desc,
                namespace,
                section,
                definition,
                copy_stmt,
                tablespace,
                deps,
                offset_field,
                offset_set: flag != OFFSET_NOT_SET,
            });
        }
        Ok(Some(Toc {
            compressed,
            entries,
        }))
    }
}

impl Cursor<BufReader<File>> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        // Within the buffer this moves no data and makes no system call.
        self.inner.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }

    /// Skips length-prefixed chunks up to the zero length that ends them.
    fn skip_chunks(&mut self) -> io::Result<()> {
        while let Some(len) = self.chunk_len()? {
            self.skip(len)?;
        }
        Ok(())
    }
}

struct Toc {
    /// Whether pg_dump compressed the data blocks itself.
    compressed: bool,
    entries: Vec<TocEntry>,
}

struct TocEntry {
    dump_id: i64,
    tag: Vec<u8>,
    desc: Vec<u8>,
    namespace: Vec<u8>,
    /// pg_dump's section: 1 none, 2 pre-data, 3 data, 4 post-data.
    section: i64,
    /// The SQL of a session-setting entry ([`SESSION_ENTRIES`]) or of an index
    /// ([`TABLE_INDEXES`]).
    definition: Option<Vec<u8>>,
    /// `COPY ... FROM stdin;`, for a `TABLE DATA` entry.
    copy_stmt: Option<Vec<u8>>,
    /// The entry's tablespace; empty for the database's default.
    tablespace: Vec<u8>,
    /// The dump ids of the entries it depends on.
    deps: Vec<i64>,
    /// Where the entry's data-offset field is.
    offset_field: u64,
    offset_set: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable custom-format archive: {what}"),
    )
}

/// Writes the data offsets of a spooled custom-format archive into its table of contents.
/// Returns how many entries were indexed; `Ok(0)` for an archive version this reader does not
/// know, which `pg_restore` still reads, only more slowly.
pub fn index_data_offsets(file: &File) -> io::Result<usize> {
    let mut file = file.try_clone()?;
    // The clone shares the file's position, which the spooling left at the end.
    file.seek(SeekFrom::Start(0))?;
    let mut cur = Cursor::buffered(file);
    if cur.header_and_toc()?.is_none() {
        return Ok(0);
    }
    let mut found: Vec<(i64, u64)> = Vec::new();
    loop {
        let block_start = cur.pos;
        let Some((kind, dump_id)) = block_head(&mut cur)? else {
            break;
        };
        match kind {
            BLK_DATA => cur.skip_chunks()?,
            _ => {
                while cur.int()? != 0 {
                    cur.skip_chunks()?;
                }
            }
        }
        found.push((dump_id, block_start));
    }
    set_data_offsets(&cur.inner.into_inner(), &found)
}

/// Writes `blocks` (each a dump id and where its data block starts) into the table of
/// contents of the spooled archive `file`, for the entries whose offset it lacks; returns how
/// many it wrote (`Ok(0)` for an archive version this reader does not know).
pub fn set_data_offsets(file: &File, blocks: &[(i64, u64)]) -> io::Result<usize> {
    let mut file = file.try_clone()?;
    file.seek(SeekFrom::Start(0))?;
    let mut cur = Cursor::buffered(file.try_clone()?);
    let Some(toc) = cur.header_and_toc()? else {
        return Ok(0);
    };
    // dump id -> position of its offset field
    let unset: HashMap<i64, u64> = toc
        .entries
        .iter()
        .filter(|e| !e.offset_set)
        .map(|e| (e.dump_id, e.offset_field))
        .collect();
    let mut written = 0;
    for (dump_id, offset) in blocks {
        let Some(field) = unset.get(dump_id) else {
            continue;
        };
        let mut bytes = vec![OFFSET_SET];
        bytes.extend_from_slice(&offset.to_le_bytes()[..cur.off_size]);
        file.write_all_at(&bytes, *field)?;
        written += 1;
    }
    file.sync_data()?;
    Ok(written)
}

/// A data block's type and dump id; `None` at the end of the archive.
fn block_head<R: Read>(cur: &mut Cursor<R>) -> io::Result<Option<(u8, i64)>> {
    let kind = match cur.byte() {
        Ok(kind) => kind,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if kind != BLK_DATA && kind != BLK_BLOBS {
        return Err(invalid("unknown block type"));
    }
    Ok(Some((kind, cur.int()?)))
}

#[cfg(test)]
mod tests;
