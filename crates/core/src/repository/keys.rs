//! The keys a backup needs: the age identities that open an encrypted backup, found before
//! anything is changed (the explicit file, else the configured one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::crypto::{self, Identities};
use crate::error::{Error, Result};
use crate::repository::manifest::Manifest;

/// Loads the identities an encrypted backup needs; `None` for a backup that is not encrypted.
pub fn identities_for(
    config: &Config,
    manifest: &Manifest,
    explicit: Option<&Path>,
) -> Result<Option<Arc<Identities>>> {
    if !manifest.is_encrypted() {
        return Ok(None);
    }
    let configured = config
        .encryption
        .as_ref()
        .and_then(|e| e.identity_file.as_deref())
        .map(PathBuf::from);
    let path = explicit
        .map(Path::to_path_buf)
        .or(configured)
        .ok_or_else(|| {
            Error::Crypto(format!(
                "backup `{}` is encrypted: pass `--identity FILE` or set `encryption.identity_file`",
                manifest.id
            ))
        })?;
    Ok(Some(Arc::new(crypto::load_identities(&path)?)))
}
