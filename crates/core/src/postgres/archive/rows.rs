//! Each table's rows, counted from a custom-format archive as it streams by: beside a
//! backup's dump ([`count_alongside`]), and from what a restore passes on ([`RowCounter`]).
//!
//! The table of contents is read with the archive reader; the data blocks after it, nearly all
//! of the archive, are scanned in place as they come, in pieces of any size ([`Scanner`]): a
//! row is a chunk of its own, so a reader that went through `read` calls per chunk cost the
//! backup more CPU than finding the newlines.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};

use super::{invalid, Cursor, BLK_BLOBS, BLK_DATA};

/// Rows by `(schema, table)`.
pub type Counts = HashMap<(String, String), u64>;

/// Rows of each table whose data a streamed archive holds, by `(schema, table)`: the lines
/// of its `COPY` data (one per row). `Ok(None)` when the archive cannot be read this way (a
/// version this reader does not know, or data compressed by pg_dump itself).
pub fn count_rows(input: impl Read) -> io::Result<Option<Counts>> {
    count_buffered(BufReader::with_capacity(1 << 16, input))
}

/// [`count_rows`] over a reader with a buffer of its own, whose bytes are scanned where they
/// are.
pub(super) fn count_buffered(input: impl BufRead) -> io::Result<Option<Counts>> {
    let mut cur = Cursor::over(input);
    let Some(toc) = cur.header_and_toc()? else {
        return Ok(None);
    };
    if toc.compressed {
        return Ok(None);
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let tables: HashMap<i64, (String, String)> = toc
        .entries
        .iter()
        .filter(|e| e.desc == b"TABLE DATA")
        .map(|e| (e.dump_id, (text(&e.namespace), text(&e.tag))))
        .collect();
    let mut scanner = Scanner::new(cur.int_size, tables);
    let mut input = cur.inner;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        scanner.feed(buf)?;
        let n = buf.len();
        input.consume(n);
    }
    scanner.finish().map(Some)
}

/// The longest chunk that may be the end marker pg_dump writes after a table's rows, as a
/// chunk of its own (`\.` and newlines).
const SMALL: usize = 16;

/// Where the scan is in the data blocks.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Before a block's type byte, or at the end of the archive.
    Kind,
    /// Inside an integer: its sign, the bytes read (the sign byte too), its value so far.
    Int {
        of: IntOf,
        negative: bool,
        read: usize,
        value: u64,
    },
    /// Inside a chunk longer than [`SMALL`]: the bytes left.
    Chunk { left: u64 },
    /// Inside a chunk of at most [`SMALL`] bytes, gathered to tell the end marker from a row.
    Small {
        len: usize,
        got: usize,
        bytes: [u8; SMALL],
    },
}

/// What the integer being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntOf {
    /// A block's dump id, after its type byte.
    DumpId { kind: u8 },
    /// A chunk's length; zero ends the chunks.
    ChunkLen,
    /// In a large-object block, the next object's oid; zero ends the block.
    Oid,
}

/// Counts the rows of the data blocks after the table of contents, fed their bytes in pieces
/// of any size. A table's newlines are counted once per piece, not once per row: what is not a
/// row's end (a byte of a chunk's length, the end marker's newlines) is counted apart and taken
/// off. Copies nothing but the few bytes of short chunks.
struct Scanner {
    int_size: usize,
    tables: HashMap<i64, (String, String)>,
    counts: Counts,
    state: State,
    /// The table whose block is being read; `None` in any other block.
    table: Option<(String, String)>,
    /// Whether the block being read holds large objects.
    blobs: bool,
    /// The newlines of the table's block so far, and those of them that end no row.
    newlines: u64,
    not_rows: u64,
}

impl Scanner {
    fn new(int_size: usize, tables: HashMap<i64, (String, String)>) -> Self {
        Scanner {
            int_size,
            tables,
            counts: HashMap::new(),
            state: State::Kind,
            table: None,
            blobs: false,
            newlines: 0,
            not_rows: 0,
        }
    }

    fn int(of: IntOf) -> State {
        State::Int {
            of,
            negative: false,
            read: 0,
            value: 0,
        }
    }

    fn feed(&mut self, buf: &[u8]) -> io::Result<()> {
        let newlines = |bytes: &[u8]| memchr::memchr_iter(b'\n', bytes).count() as u64;
        // Where the part of `buf` in a table's block begins, whose newlines are counted at once.
        let mut span = self.table.is_some().then_some(0);
        let mut i = 0;
        while i < buf.len() {
            let int_done = match &mut self.state {
                State::Chunk { left } => {
                    let n = (*left).min((buf.len() - i) as u64);
                    *left -= n;
                    i += n as usize;
                    if *left == 0 {
                        self.state = Self::int(IntOf::ChunkLen);
                    }
                    None
                }
                State::Small { len, got, bytes } => {
                    let n = (*len - *got).min(buf.len() - i);
                    bytes[*got..*got + n].copy_from_slice(&buf[i..i + n]);
                    *got += n;
                    i += n;
                    if *got == *len {
                        let chunk = &bytes[..*len];
                        if chunk.starts_with(b"\\.") && chunk[2..].iter().all(|b| *b == b'\n') {
                            // The end marker's newlines end no row.
                            self.not_rows += (chunk.len() - 2) as u64;
                        }
                        self.state = Self::int(IntOf::ChunkLen);
                    }
                    None
                }
                State::Kind => {
                    let kind = buf[i];
                    if kind != BLK_DATA && kind != BLK_BLOBS {
                        return Err(invalid("unknown block type"));
                    }
                    self.state = Self::int(IntOf::DumpId { kind });
                    i += 1;
                    None
                }
                // A whole integer in `buf`: read at once.
                State::Int { of, read: 0, .. } if buf.len() - i > self.int_size => {
                    let bytes = &buf[i..i + 1 + self.int_size];
                    let value = bytes[1..]
                        .iter()
                        .rev()
                        .fold(0u64, |v, b| (v << 8) | u64::from(*b));
                    self.not_rows += newlines(bytes);
                    i += bytes.len();
                    Some((*of, bytes[0] != 0, value))
                }
                State::Int {
                    of,
                    negative,
                    read,
                    value,
                } => {
                    let byte = buf[i];
                    if *read == 0 {
                        *negative = byte != 0;
                    } else {
                        *value |= u64::from(byte) << (8 * (*read - 1));
                    }
                    self.not_rows += u64::from(byte == b'\n');
                    *read += 1;
                    i += 1;
                    (*read > self.int_size).then_some((*of, *negative, *value))
                }
            };
            if let Some((of, negative, value)) = int_done {
                let value = value as i64;
                match self.int_read(of, if negative { -value } else { value })? {
                    Block::Goes => {}
                    Block::Table => {
                        (self.newlines, self.not_rows) = (0, 0);
                        span = Some(i);
                    }
                    Block::TableEnded(table) => {
                        let from = span.take().unwrap_or(0);
                        let rows = self.newlines + newlines(&buf[from..i]) - self.not_rows;
                        *self.counts.entry(table).or_default() += rows;
                    }
                }
            }
        }
        if let Some(from) = span {
            self.newlines += newlines(&buf[from..]);
        }
        Ok(())
    }

    /// Moves on past a whole integer; says whether a table's block began or ended with it.
    fn int_read(&mut self, of: IntOf, value: i64) -> io::Result<Block> {
        let mut block = Block::Goes;
        self.state = match of {
            IntOf::DumpId { kind } => {
                self.blobs = kind == BLK_BLOBS;
                if self.blobs {
                    Self::int(IntOf::Oid)
                } else {
                    self.table = self.tables.get(&value).cloned();
                    if self.table.is_some() {
                        block = Block::Table;
                    }
                    Self::int(IntOf::ChunkLen)
                }
            }
            IntOf::Oid if value == 0 => State::Kind,
            IntOf::Oid => Self::int(IntOf::ChunkLen),
            IntOf::ChunkLen if value < 0 => return Err(invalid("negative chunk length")),
            IntOf::ChunkLen if value == 0 => {
                if let Some(table) = self.table.take() {
                    block = Block::TableEnded(table);
                }
                if self.blobs {
                    Self::int(IntOf::Oid)
                } else {
                    State::Kind
                }
            }
            IntOf::ChunkLen if value as u64 <= SMALL as u64 => State::Small {
                len: value as usize,
                got: 0,
                bytes: [0; SMALL],
            },
            IntOf::ChunkLen => State::Chunk { left: value as u64 },
        };
        Ok(block)
    }

    /// The counts, if the archive ended between blocks.
    fn finish(self) -> io::Result<Counts> {
        match self.state {
            State::Kind => Ok(self.counts),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a data block",
            )),
        }
    }
}

/// What a whole integer did to the block being read.
enum Block {
    Goes,
    /// A table's block began after it.
    Table,
    /// The table's block ended with it.
    TableEnded((String, String)),
}

/// What [`count_alongside`] counted: rows by `(schema, table)`, or `None` when the archive
/// could not be read that way.
pub type StreamCounts = std::thread::JoinHandle<io::Result<Option<Counts>>>;

/// Passes `inner` through, and hands a copy of every byte to a thread that counts rows with
/// [`count_rows`]. At most 16 batches are in flight; if the counting thread stops early (an
/// archive it cannot read), the copies stop and the stream goes on.
pub fn count_alongside<R: Read>(inner: R) -> (Tee<R>, StreamCounts) {
    let (batches, counting) = spawn_counter();
    (Tee { inner, batches }, counting)
}

/// Batches in flight to the counting thread.
const IN_FLIGHT: usize = 16;

/// A thread counting rows with [`count_rows`] from the batches sent to it; it ends when they
/// are closed.
fn spawn_counter() -> (Batches, StreamCounts) {
    let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
    let (back_tx, back) = std::sync::mpsc::sync_channel(IN_FLIGHT + 1);
    let counting = std::thread::spawn(move || {
        count_buffered(Channel {
            rx,
            back: back_tx,
            buf: Vec::new(),
            pos: 0,
        })
    });
    let batches = Batches {
        tx: Some(tx),
        back,
        pending: Vec::new(),
    };
    (batches, counting)
}

/// The sending side of a counting thread: bytes gathered into batches of [`TEE_BATCH`] (a
/// pipe is read a few KiB at a time: one message, allocation and wake-up per read cost more
/// than the counting), in buffers the thread hands back to be filled again (a new buffer per
/// batch cost a page fault per 4 KiB). A thread that gave up is sent nothing more.
struct Batches {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

pub(super) const TEE_BATCH: usize = 256 << 10;

impl Batches {
    fn push(&mut self, bytes: &[u8]) {
        if self.tx.is_none() || bytes.is_empty() {
            return;
        }
        if self.pending.capacity() == 0 {
            self.pending = self
                .back
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(TEE_BATCH));
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= TEE_BATCH {
            self.send();
        }
    }

    /// Sends what is pending, however little.
    fn send(&mut self) {
        if let Some(tx) = &self.tx {
            if !self.pending.is_empty() && tx.send(std::mem::take(&mut self.pending)).is_err() {
                self.tx = None;
            }
        }
    }

    /// Sends what is pending and tells the thread that nothing more comes.
    fn close(&mut self) {
        self.send();
        self.tx = None;
    }
}

/// The writing side of [`count_alongside`]: fed the bytes of an archive as they are written
/// somewhere, it counts their rows on a thread of its own.
pub struct RowCounter {
    batches: Batches,
    counting: StreamCounts,
}

impl RowCounter {
    pub fn start() -> Self {
        let (batches, counting) = spawn_counter();
        RowCounter { batches, counting }
    }

    /// Counts `bytes` too (copied); a counter that gave up is no longer fed.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.batches.push(bytes);
    }

    /// The rows of each table of what was fed, once the counter has read all of it: `None`
    /// when the archive cannot be counted this way.
    pub fn finish(mut self) -> io::Result<Option<Counts>> {
        self.batches.close();
        self.counting
            .join()
            .map_err(|_| io::Error::other("the row counting thread panicked"))?
    }
}

/// A reader that also sends what it reads to a counting thread, the last batch when its source
/// ends.
pub struct Tee<R> {
    inner: R,
    batches: Batches,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.batches.push(&buf[..n]);
        if n == 0 {
            self.batches.send();
        }
        Ok(n)
    }
}

/// The receiving end of the batches, as a reader that ends when they are closed; each batch's
/// buffer goes back to be filled again once read.
struct Channel {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Channel {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = out.len().min(buf.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The counter scans the batches where they are, not copied again into a buffer of its own.
impl BufRead for Channel {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let mut used = std::mem::replace(&mut self.buf, next);
                    self.pos = 0;
                    if used.capacity() > 0 {
                        used.clear();
                        let _ = self.back.try_send(used);
                    }
                }
                Err(_) => break,
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}
