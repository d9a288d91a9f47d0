//! An archive read block by block as it arrives, for a restore that loads each table's
//! `COPY` data itself: the table of contents, then each data block's head (what it holds,
//! where its chunks start), a block cut into pieces of whole rows that load on their own, and
//! a piece's `COPY` text passed on from where its chunks start.

use std::io::{self, BufReader, Read, Write};

use super::{block_head, invalid, Cursor, BLK_DATA};

/// A table-of-contents entry, as a pipelined restore needs it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dump_id: i64,
    pub desc: String,
    /// `COPY ... FROM stdin;`, for a `TABLE DATA` entry.
    pub copy_stmt: Option<String>,
    /// The SQL of an entry that sets up a restoring session (encoding, standard strings,
    /// search path), or of an index or a primary key, unique or exclusion constraint.
    pub definition: Option<String>,
    /// Whether it is in the post-data section.
    pub post_data: bool,
    /// Whether it goes into a tablespace of its own (not the database's default).
    pub tablespace: bool,
    /// The dump ids of the entries it depends on.
    pub deps: Vec<i64>,
}

impl Entry {
    /// Whether its SQL sets up a restoring session.
    pub fn sets_up_session(&self) -> bool {
        super::SESSION_ENTRIES.contains(&self.desc.as_bytes())
    }

    /// Whether it is an index, or a primary key, unique or exclusion constraint: one
    /// statement on one table's data, whose definition the reader keeps.
    pub fn is_table_index(&self) -> bool {
        super::TABLE_INDEXES.contains(&self.desc.as_bytes())
    }
}

/// Where a data block is: where it starts (the archive's data offset for its entry), its
/// entry, whether it holds `COPY` data (else large objects), and where its chunks start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    pub at: u64,
    pub dump_id: i64,
    pub copy_data: bool,
    pub chunks_at: u64,
}

/// An archive read from its start as it arrives: its table of contents, then its data blocks
/// one by one, each skipped once its head is seen.
pub struct Blocks<R> {
    cur: Cursor<BufReader<R>>,
    pub entries: Vec<Entry>,
    /// Where the first data block starts: the header and table of contents end there.
    pub data_start: u64,
}

impl<R: Read> Blocks<R> {
    /// Reads the header and table of contents; `None` for an archive whose data blocks this
    /// reader cannot pass on (a version it does not know, or data compressed by pg_dump).
    pub fn open(input: R) -> io::Result<Option<Blocks<R>>> {
        let mut cur = Cursor::buffered(input);
        let toc = match cur.header_and_toc()? {
            Some(toc) if !toc.compressed => toc,
            _ => return Ok(None),
        };
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let entries = toc
            .entries
            .into_iter()
            .map(|e| Entry {
                dump_id: e.dump_id,
                desc: String::from_utf8_lossy(&e.desc).into_owned(),
                copy_stmt: text(e.copy_stmt).filter(|s| !s.is_empty()),
                definition: text(e.definition),
                post_data: e.section == 4,
                tablespace: !e.tablespace.is_empty(),
                deps: e.deps,
            })
            .collect();
        Ok(Some(Blocks {
            data_start: cur.pos,
            entries,
            cur,
        }))
    }

    /// How far the archive has been read.
    pub fn pos(&self) -> u64 {
        self.cur.pos
    }

    /// The size of the archive's integers, which [`copy_chunks`] needs.
    pub fn int_size(&self) -> usize {
        self.cur.int_size
    }

    /// The next data block's head, its chunks not yet read; `None` at the archive's end.
    pub fn next_head(&mut self) -> io::Result<Option<BlockHead>> {
        let at = self.cur.pos;
        Ok(block_head(&mut self.cur)?.map(|(kind, dump_id)| BlockHead {
            at,
            dump_id,
            copy_data: kind == BLK_DATA,
            chunks_at: self.cur.pos,
        }))
    }

    /// Reads through the `COPY` data block whose head [`Blocks::next_head`] just gave,
    /// handing each piece to `cut` as soon as it has been read: a piece ends after the first
    /// row that makes it `size` bytes or more (a chunk that ends with a newline, which in
    /// `COPY` text only ends a row), the last runs to the block's end.
    pub fn cut(
        &mut self,
        head: &BlockHead,
        size: u64,
        mut cut: impl FnMut(Piece) -> io::Result<()>,
    ) -> io::Result<()> {
        debug_assert!(head.copy_data);
        let mut start = head.chunks_at;
        while let Some(len) = self.cur.chunk_len()? {
            let (mut marker, mut last) = (None, 0u8);
            self.cur.read_through(len, |bytes| {
                marker.get_or_insert_with(|| bytes.starts_with(b"\\."));
                last = bytes.last().copied().unwrap_or(last);
            })?;
            // Never after pg_dump's end marker: the last piece must keep it.
            if last == b'\n' && marker != Some(true) && self.cur.pos - start >= size {
                cut(Piece {
                    at: start,
                    len: Some(self.cur.pos - start),
                    span: self.cur.pos - start,
                })?;
                start = self.cur.pos;
            }
        }
        cut(Piece {
            at: start,
            len: None,
            span: self.cur.pos - start,
        })
    }

    /// Reads past the block whose head [`Blocks::next_head`] just gave.
    pub fn skip(&mut self, head: &BlockHead) -> io::Result<()> {
        if head.copy_data {
            self.cur.read_chunks(|_| {})
        } else {
            while self.cur.int()? != 0 {
                self.cur.read_chunks(|_| {})?;
            }
            Ok(())
        }
    }
}

/// A run of whole rows of one `COPY` data block: where its chunks start in the archive, and
/// how many bytes of chunks it spans (`None`: up to the block's end, end marker included);
/// `span` is the bytes of the archive it covers either way (the block's end, the zero length,
/// included), which nothing else reads once it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub at: u64,
    pub len: Option<u64>,
    pub span: u64,
}

/// Writes the bytes of a piece's chunks, read from `input` (at [`Piece::at`]), to `out`: its
/// `COPY` text, ended with an end marker (the archive's own, if it has one, for the block's
/// last piece). A row never starts with `\.`: `COPY` escapes backslashes.
pub fn copy_chunks(
    input: impl Read,
    int_size: usize,
    len: Option<u64>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut cur = Cursor::buffered(input);
    cur.int_size = int_size;
    let mut buf = vec![0u8; 1 << 16];
    // Whether the last chunk was an end marker.
    let mut ended = false;
    loop {
        if len.is_some_and(|len| cur.pos >= len) {
            return out.write_all(b"\\.\n");
        }
        let Some(chunk) = cur.chunk_len()? else {
            return match len {
                None if ended => Ok(()),
                None => out.write_all(b"\\.\n"),
                Some(_) => Err(invalid("a piece runs past the end of its data block")),
            };
        };
        let mut left = chunk;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            cur.inner.read_exact(&mut buf[..n])?;
            if left == chunk {
                ended = buf[..n].starts_with(b"\\.");
            }
            cur.pos += n as u64;
            // A consumer that fails stops the copy at once.
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
}
