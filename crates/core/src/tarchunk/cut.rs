//! Cutting a tar stream into chunks on 512-byte blocks: before a header, or inside a regular
//! file's data (the chunk then says where in which file it resumes).

use std::io;

use super::format::{damaged, padding, parse_header, EntryKind, Resume, BLOCK};

/// Where the reader of a tar stream is.
#[derive(Debug)]
pub(super) enum At {
    /// Before a header (`got` bytes of it read).
    Header,
    /// In a file's data: `done` of `size` bytes read.
    Data {
        path: String,
        mode: u32,
        size: u64,
        done: u64,
    },
    /// In padding after a file's data.
    Pad(u64),
    /// After the end-of-archive block: what follows is ignored.
    End,
}

/// A chunk of tar bytes, cut by [`Cutter`].
#[derive(Debug)]
pub struct RawChunk {
    pub bytes: Vec<u8>,
    pub resume: Option<Resume>,
}

/// Cuts a tar stream into chunks of about `target` bytes on block boundaries. Pure: bytes in,
/// chunks out.
pub struct Cutter {
    target: usize,
    at: At,
    header: Vec<u8>,
    chunk: Vec<u8>,
    resume: Option<Resume>,
    /// Buffers of chunks already compressed, reused (fresh pages cost more than the copy).
    spare: Vec<Vec<u8>>,
}

impl Cutter {
    pub fn new(target: usize) -> Cutter {
        let target = target.max(BLOCK) / BLOCK * BLOCK;
        Cutter {
            target,
            at: At::Header,
            header: Vec::with_capacity(BLOCK),
            chunk: Vec::with_capacity(target + BLOCK),
            resume: None,
            spare: Vec::new(),
        }
    }

    /// Gives back the buffer of a chunk that is done with.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    fn cut(&mut self, resume: Option<Resume>) -> RawChunk {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.target + BLOCK));
        let bytes = std::mem::replace(&mut self.chunk, next);
        RawChunk {
            bytes,
            resume: std::mem::replace(&mut self.resume, resume),
        }
    }

    /// Takes the next bytes of the stream; chunks completed by them go to `out`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(RawChunk) -> io::Result<()>,
    ) -> io::Result<()> {
        while !data.is_empty() {
            let full = self.chunk.len() >= self.target;
            match &mut self.at {
                At::Header => {
                    if self.header.is_empty() && full {
                        let chunk = self.cut(None);
                        out(chunk)?;
                    }
                    let n = (BLOCK - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.header.len() == BLOCK {
                        self.at = match parse_header(&self.header)? {
                            None => At::End,
                            Some(h) if h.kind == EntryKind::File && h.size > 0 => At::Data {
                                path: h.path,
                                mode: h.mode,
                                size: h.size,
                                done: 0,
                            },
                            Some(_) => At::Header,
                        };
                        self.header.clear();
                    }
                }
                At::Data {
                    path,
                    mode,
                    size,
                    done,
                } => {
                    if full && *done % BLOCK as u64 == 0 {
                        let resume = Resume {
                            path: path.clone(),
                            offset: *done,
                            size: *size,
                            mode: *mode,
                        };
                        let chunk = self.cut(Some(resume));
                        out(chunk)?;
                        continue;
                    }
                    let room = if full {
                        BLOCK - (*done % BLOCK as u64) as usize
                    } else {
                        self.target - self.chunk.len()
                    };
                    let left = *size - *done;
                    let n = room
                        .min(data.len())
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *done += n as u64;
                    if *done == *size {
                        let pad = padding(*size);
                        self.at = if pad == 0 { At::Header } else { At::Pad(pad) };
                    }
                }
                At::Pad(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    self.chunk.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = At::Header;
                    }
                }
                At::End => {
                    self.chunk.extend_from_slice(data);
                    data = &[];
                }
            }
        }
        Ok(())
    }

    /// The last chunk, once the stream has ended; an archive cut short is an error.
    pub fn finish(mut self) -> io::Result<Option<RawChunk>> {
        if !matches!(self.at, At::End) {
            return Err(damaged(
                "the tar stream ended before its end-of-archive block",
            ));
        }
        Ok((!self.chunk.is_empty()).then(|| self.cut(None)))
    }
}
