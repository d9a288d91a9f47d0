//! The custom-format archive of `pg_dump`: just enough of it to restore fast in parallel.
//!
//! `pg_dump` writing to a pipe cannot go back to record where each table's data starts, so a
//! streamed archive has no data offsets in its table of contents. `pg_restore --jobs` then has
//! every worker read the file from the top to find its table: on a large database that costs
//! more than the restore. Once the archive is spooled to a file, [`index_data_offsets`] walks
//! its data blocks and writes their offsets into the table of contents in place, exactly as
//! `pg_dump` does when it writes to a file (the offset fields have a fixed size).
//!
//! Format (pg_backup_archiver.c, pg_backup_custom.c): a header, the table of contents (entries
//! of integers and length-prefixed strings, each ending with a data-offset field), then data
//! blocks: a type byte, the entry's dump id, and length-prefixed chunks ending with a zero
//! length (large-object blocks hold several such runs, each after its oid, ending with oid 0).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

const MAGIC: &[u8; 5] = b"PGDMP";
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
/// Archive versions this reader knows: 1.12 (PostgreSQL 10) to 1.15 (PostgreSQL 16).
const KNOWN_MINORS: std::ops::RangeInclusive<u8> = 12..=15;

struct Cursor {
    inner: BufReader<File>,
    pos: u64,
    int_size: usize,
    off_size: usize,
}

impl Cursor {
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

    fn skip(&mut self, n: u64) -> io::Result<()> {
        // Within the buffer this moves no data and makes no system call.
        self.inner.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
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

    /// Skips length-prefixed chunks up to the zero length that ends them.
    fn skip_chunks(&mut self) -> io::Result<()> {
        loop {
            let len = self.int()?;
            if len == 0 {
                return Ok(());
            }
            if len < 0 {
                return Err(invalid("negative chunk length"));
            }
            self.skip(len as u64)?;
        }
    }
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
    let file = file.try_clone()?;
    let mut cur = Cursor {
        inner: BufReader::with_capacity(1 << 16, file.try_clone()?),
        pos: 0,
        int_size: 4,
        off_size: 8,
    };
    let mut magic = [0u8; 5];
    cur.inner.read_exact(&mut magic)?;
    cur.pos = 5;
    if &magic != MAGIC {
        return Err(invalid("bad magic"));
    }
    let (major, minor, _rev) = (cur.byte()?, cur.byte()?, cur.byte()?);
    if major != 1 || !KNOWN_MINORS.contains(&minor) {
        return Ok(0);
    }
    cur.int_size = cur.byte()? as usize;
    cur.off_size = cur.byte()? as usize;
    if !(1..=8).contains(&cur.int_size) || !(1..=8).contains(&cur.off_size) {
        return Err(invalid("odd integer sizes"));
    }
    let _format = cur.byte()?;
    if minor >= 15 {
        let _algorithm = cur.byte()?;
    } else {
        let _level = cur.int()?;
    }
    for _ in 0..7 {
        cur.int()?; // creation time
    }
    cur.string()?; // database name
    cur.string()?; // server version
    cur.string()?; // pg_dump version

    let count = cur.int()?;
    // dump id -> position of its offset field
    let mut unset: HashMap<i64, u64> = HashMap::new();
    for _ in 0..count {
        let dump_id = cur.int()?;
        cur.int()?; // had dumper
        cur.string()?; // table oid
        cur.string()?; // oid
        cur.string()?; // tag
        cur.string()?; // desc
        cur.int()?; // section
        cur.string()?; // definition
        cur.string()?; // drop statement
        cur.string()?; // copy statement
        cur.string()?; // namespace
        cur.string()?; // tablespace
        if minor >= 14 {
            cur.string()?; // table access method
        }
        cur.string()?; // owner
        cur.string()?; // "false" (with oids)
        while cur.string()?.is_some() {} // dependencies
        let field = cur.pos;
        let flag = cur.byte()?;
        cur.skip(cur.off_size as u64)?;
        if flag == OFFSET_NOT_SET {
            unset.insert(dump_id, field);
        }
    }

    let mut found: Vec<(u64, u64)> = Vec::new();
    loop {
        let block_start = cur.pos;
        let kind = match cur.byte() {
            Ok(kind) => kind,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        let dump_id = cur.int()?;
        match kind {
            BLK_DATA => cur.skip_chunks()?,
            BLK_BLOBS => {
                while cur.int()? != 0 {
                    cur.skip_chunks()?;
                }
            }
            _ => return Err(invalid("unknown block type")),
        }
        if let Some(field) = unset.get(&dump_id) {
            found.push((*field, block_start));
        }
    }

    let mut out = file;
    for (field, offset) in &found {
        let mut bytes = vec![OFFSET_SET];
        bytes.extend_from_slice(&offset.to_le_bytes()[..cur.off_size]);
        out.seek(SeekFrom::Start(*field))?;
        out.write_all(&bytes)?;
    }
    out.sync_data()?;
    Ok(found.len())
}
