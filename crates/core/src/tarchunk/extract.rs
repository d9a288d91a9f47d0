//! Extraction of one chunk's entries into the target folder: files written at their offsets,
//! folders and links created, paths that would leave the folder refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::format::{damaged, padding, parse_header, EntryKind, Resume, BLOCK};

/// The path of a tar entry under `dest`, refused when it would leave it.
pub(super) fn safe_join(dest: &Path, name: &str) -> io::Result<PathBuf> {
    let relative = Path::new(name);
    let mut out = dest.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(damaged(format!(
                    "tar entry `{name}` would be written outside the target folder"
                )))
            }
        }
    }
    if out == dest {
        return Err(damaged(format!(
            "tar entry `{name}` names the target folder itself"
        )));
    }
    Ok(out)
}

/// Opens (creating it and its folders) a file a tar entry writes; `truncate` empties it first.
pub(super) fn open_file(path: &Path, mode: u32, truncate: bool) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(mode | 0o600)
        .open(path)
}

/// Where an [`Extractor`] is in its tar bytes.
pub(super) enum Writing {
    Header,
    Data { file: File, left: u64, pad: u64 },
    Skip(u64),
    End,
}

/// Writes tar bytes into files under a folder: a whole archive, or one chunk of it, which may
/// start and end inside a file (files are opened without truncation, so chunks of one file
/// can be written in any order).
pub(super) struct Extractor<'a> {
    dest: &'a Path,
    at: Writing,
    header: Vec<u8>,
}

impl<'a> Extractor<'a> {
    pub(super) fn new(dest: &'a Path, resume: Option<&Resume>) -> io::Result<Extractor<'a>> {
        let at = match resume {
            None => Writing::Header,
            Some(r) => {
                if r.offset >= r.size || r.offset % BLOCK as u64 != 0 {
                    return Err(damaged(format!(
                        "chunk resumes `{}` at a bad offset",
                        r.path
                    )));
                }
                let mut file = open_file(&safe_join(dest, &r.path)?, r.mode, false)?;
                file.seek(SeekFrom::Start(r.offset))?;
                Writing::Data {
                    file,
                    left: r.size - r.offset,
                    pad: padding(r.size),
                }
            }
        };
        Ok(Extractor {
            dest,
            at,
            header: Vec::with_capacity(BLOCK),
        })
    }

    fn start_entry(&mut self) -> io::Result<Writing> {
        let Some(header) = parse_header(&self.header)? else {
            return Ok(Writing::End);
        };
        let path = safe_join(self.dest, &header.path)?;
        match header.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(header.mode | 0o700),
                )?;
                Ok(Writing::Header)
            }
            EntryKind::Symlink(target) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &path)?;
                Ok(Writing::Header)
            }
            EntryKind::File => {
                let file = open_file(&path, header.mode, false)?;
                Ok(if header.size == 0 {
                    Writing::Header
                } else {
                    Writing::Data {
                        file,
                        left: header.size,
                        pad: padding(header.size),
                    }
                })
            }
        }
    }

    /// The chunk ended; true when it held the end of the archive.
    pub(super) fn finish_chunk(self) -> io::Result<bool> {
        if !self.header.is_empty() {
            return Err(damaged("a chunk ends inside a tar header"));
        }
        Ok(matches!(self.at, Writing::End))
    }

    /// The whole archive ended: it must have reached its end-of-archive block.
    pub(super) fn finish_archive(self) -> io::Result<()> {
        if self.finish_chunk()? {
            Ok(())
        } else {
            Err(damaged("the archive ends before its end-of-archive block"))
        }
    }
}

impl Write for Extractor<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            match &mut self.at {
                Writing::Header => {
                    let n = (BLOCK - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.header.len() == BLOCK {
                        self.at = self.start_entry()?;
                        self.header.clear();
                    }
                }
                Writing::Data { file, left, pad } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    file.write_all(&rest[..n])?;
                    rest = &rest[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = if *pad == 0 {
                            Writing::Header
                        } else {
                            Writing::Skip(*pad)
                        };
                    }
                }
                Writing::Skip(left) => {
                    let n = (*left).min(rest.len() as u64);
                    rest = &rest[n as usize..];
                    *left -= n;
                    if *left == 0 {
                        self.at = Writing::Header;
                    }
                }
                Writing::End => rest = &[],
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
