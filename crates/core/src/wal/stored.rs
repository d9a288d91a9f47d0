//! How an archived WAL file is stored: sealed (compressed, and encrypted when configured)
//! together with what it is.
//!
//! The sealed bytes begin with a zstd *skippable frame* holding one line of JSON: the file's
//! name, size and SHA-256. Then comes the file, compressed as one zstd frame. Inside the
//! encryption, so that an encrypted archive authenticates the description with the data, and
//! readable by any zstd decoder, which skips the description: `zstd -dc FILE` (after `age -d`)
//! still gives the WAL file back. A fetch checks all three before handing the file to
//! PostgreSQL, so that an object copied over another, or damaged, is never replayed as the
//! file it is stored under. Objects archived before the description existed are read as they
//! are (their segments are still checked against their page headers).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, Identities};
use crate::error::{Error, Result};
use crate::pipeline::{sha256_hex, SealOptions};

/// The magic number of the description frame (zstd reserves 0x184D2A50..=0x184D2A5F;
/// base backups' chunk descriptions use 0x184D2A5B).
const MAGIC: u32 = 0x184D_2A5C;
/// The largest description read (a damaged length must not allocate much).
const DESCRIPTION_LIMIT: usize = 4096;

/// What a stored WAL file says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Seals WAL file `name` with content `raw` for storage.
pub fn seal(name: &str, raw: &[u8], options: &SealOptions) -> Result<Vec<u8>> {
    let description = Description {
        name: name.to_string(),
        size: raw.len() as u64,
        sha256: sha256_hex(raw),
    };
    let json = serde_json::to_vec(&description).expect("descriptions serialize");
    let mut plain = Vec::with_capacity(raw.len() / 2 + 1024);
    plain.extend_from_slice(&MAGIC.to_le_bytes());
    plain.extend_from_slice(&(json.len() as u32).to_le_bytes());
    plain.extend_from_slice(&json);
    let err = |e: std::io::Error| Error::io("compressing", e);
    let mut encoder = zstd::stream::write::Encoder::new(plain, options.level).map_err(err)?;
    encoder.include_checksum(true).map_err(err)?;
    encoder.write_all(raw).map_err(err)?;
    let plain = encoder.finish().map_err(err)?;
    if options.recipients.is_empty() {
        return Ok(plain);
    }
    let mut sealed =
        crypto::encrypt_to(&options.recipients, Vec::with_capacity(plain.len() + 512))?;
    sealed.write_all(&plain).map_err(err)?;
    sealed.finish().map_err(|e| Error::io("encrypting", e))
}

/// Opens the stored object of WAL file `name`: decrypts, decompresses and checks that it
/// holds `name`, whole and unchanged. Any mismatch is [`Error::DamagedWal`].
pub fn open(name: &str, stored: &[u8], identities: Option<&Identities>) -> Result<Vec<u8>> {
    let damaged = |detail: String| Error::DamagedWal {
        name: name.to_string(),
        detail,
    };
    let plain = match identities {
        Some(ids) => {
            let mut plain = Vec::with_capacity(stored.len());
            crypto::decrypt_from(stored, ids, name)
                .map_err(|e| damaged(e.to_string()))?
                .read_to_end(&mut plain)
                .map_err(|e| damaged(format!("cannot decrypt: {e}")))?;
            plain
        }
        None => stored.to_vec(),
    };
    let (description, frame) = match plain.get(..4).map(|m| m == MAGIC.to_le_bytes()) {
        Some(true) => {
            let length = plain
                .get(4..8)
                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")) as usize)
                .filter(|n| *n <= DESCRIPTION_LIMIT)
                .ok_or_else(|| damaged("its description frame is cut short".into()))?;
            let json = plain
                .get(8..8 + length)
                .ok_or_else(|| damaged("its description frame is cut short".into()))?;
            let description: Description = serde_json::from_slice(json)
                .map_err(|e| damaged(format!("its description is not readable: {e}")))?;
            (Some(description), &plain[8 + length..])
        }
        _ => (None, &plain[..]),
    };
    if let Some(d) = &description {
        if d.name != name {
            return Err(damaged(format!(
                "its stored object holds `{}`, not `{name}` (copied or restored over it?)",
                d.name
            )));
        }
    }
    let mut raw = Vec::with_capacity(description.as_ref().map_or(0, |d| d.size as usize));
    zstd::stream::read::Decoder::new(frame)
        .and_then(|mut d| d.read_to_end(&mut raw))
        .map_err(|e| damaged(format!("cannot decode: {e}")))?;
    if let Some(d) = &description {
        if raw.len() as u64 != d.size || sha256_hex(&raw) != d.sha256 {
            return Err(damaged(format!(
                "its content ({} bytes) does not match its description ({} bytes, sha256 {})",
                raw.len(),
                d.size,
                d.sha256
            )));
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(recipients: Vec<String>) -> SealOptions {
        SealOptions {
            level: 3,
            threads: 1,
            recipients,
            framing: None,
        }
    }

    #[test]
    fn a_stored_file_proves_its_name_and_content() {
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let stored = seal("000000010000000000000001", &raw, &options(vec![])).unwrap();
        assert_eq!(
            open("000000010000000000000001", &stored, None).unwrap(),
            raw
        );
        // Any zstd decoder skips the description.
        let plain = zstd::stream::decode_all(&stored[..]).unwrap();
        assert_eq!(plain, raw);
        // Stored under another name: refused, naming both.
        let err = open("000000010000000000000002", &stored, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WAL file `000000010000000000000002` is damaged")
                && err.contains("holds `000000010000000000000001`"),
            "{err}"
        );
        // A description that does not match the content.
        let forged = seal("000000010000000000000001", &raw[1..], &options(vec![])).unwrap();
        let mut spliced = stored[..8].to_vec();
        let length = u32::from_le_bytes(stored[4..8].try_into().unwrap()) as usize;
        spliced.extend_from_slice(&stored[8..8 + length]);
        let forged_length = u32::from_le_bytes(forged[4..8].try_into().unwrap()) as usize;
        spliced.extend_from_slice(&forged[8 + forged_length..]);
        assert!(open("000000010000000000000001", &spliced, None)
            .unwrap_err()
            .to_string()
            .contains("does not match its description"));
        // Objects from before descriptions are read as they are.
        let legacy = zstd::stream::encode_all(&raw[..], 3).unwrap();
        assert_eq!(
            open("000000010000000000000001", &legacy, None).unwrap(),
            raw
        );
    }

    #[test]
    fn encrypted_files_carry_the_description_inside() {
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public().to_string();
        let raw = b"1\t0/3000000\tno recovery target specified\n".to_vec();
        let stored = seal("00000002.history", &raw, &options(vec![recipient])).unwrap();
        assert!(!stored.windows(7).any(|w| w == b"history"));
        let ids: Identities = vec![Box::new(key)];
        assert_eq!(open("00000002.history", &stored, Some(&ids)).unwrap(), raw);
        assert!(open("00000003.history", &stored, Some(&ids)).is_err());
    }
}
