//! Files with no name on disk: a password file, a restore's list of entries, a spooled
//! archive. Created unnamed (a memfd in memory, an `O_TMPFILE` on disk), they vanish with the
//! last descriptor, so nothing is left behind when lifeboat is killed: no password in clear
//! in `/tmp`, no decrypted dump in the spool folder. A child reaches one by the path
//! `/proc/<lifeboat's pid>/fd/<n>` while lifeboat holds it open (the same user may open
//! another process's descriptors there; nobody else can).

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Unnamed {
    file: File,
}

impl Unnamed {
    /// A file in memory holding `contents`, readable and writable by this user only (libpq
    /// refuses a password file that others may read).
    pub fn memory(name: &str, contents: &[u8]) -> io::Result<Unnamed> {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
        let mut file = File::from(fd);
        file.write_all(contents)?;
        file.flush()?;
        file.rewind()?;
        Ok(Unnamed { file })
    }

    /// An empty file on disk in `dir`, with no name there.
    pub fn on_disk(dir: &Path) -> io::Result<Unnamed> {
        Ok(Unnamed {
            file: tempfile::tempfile_in(dir)?,
        })
    }

    /// The path a child opens it by.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Everything in it, from the start, as text.
    pub fn read_to_string(&self) -> io::Result<String> {
        use std::io::Read;
        let mut file = self.file.try_clone()?;
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_reads_and_writes_it_by_its_path_and_it_has_no_name() {
        let secret = Unnamed::memory("t", b"*:*:*:*:pw\n").unwrap();
        let out = std::process::Command::new("cat")
            .arg(secret.path())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"*:*:*:*:pw\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir = tempfile::tempdir().unwrap();
        let spool = Unnamed::on_disk(dir.path()).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf written > {}", spool.path().display()))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(spool.read_to_string().unwrap(), "written");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spool has a name"
        );
    }
}
