//! Local folders: the atomic creation of a file that must not exist yet.

use std::path::Path;

/// Creates `target` with `data` unless it exists: written and synced in `staging`, then
/// hard-linked into place, which fails atomically when the name is taken.
pub(super) fn create_new_file(staging: &Path, target: &Path, data: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(staging)?;
    std::fs::create_dir_all(parent)?;
    let mut staged = tempfile::Builder::new()
        .prefix(".new-")
        .tempfile_in(staging)?;
    staged.write_all(data)?;
    staged.as_file().sync_all()?;
    match std::fs::hard_link(staged.path(), target) {
        Ok(()) => {
            // The new name is durable once its folder is.
            std::fs::File::open(parent)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
