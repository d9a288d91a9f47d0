//! age encryption: recipients to encrypt to, identities to decrypt with, key generation.
//!
//! Backups are encrypted to public keys only, so the machine that takes backups cannot read
//! them; the identity (private key) is needed only to restore or verify.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use age::secrecy::ExposeSecret;

use crate::error::{Error, Result};

pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Parses an `age1...` public key.
pub fn parse_recipient(text: &str) -> std::result::Result<age::x25519::Recipient, String> {
    text.trim()
        .parse::<age::x25519::Recipient>()
        .map_err(|e| format!("invalid age recipient `{text}`: {e} (expected `age1...`, from `lifeboat key generate`)"))
}

/// Wraps `output` so that what is written to it is encrypted to `recipients`.
/// The returned writer must be finished with [`age::stream::StreamWriter::finish`].
pub fn encrypt_to<W: Write>(
    recipients: &[String],
    output: W,
) -> Result<age::stream::StreamWriter<W>> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r).map_err(Error::Crypto))
        .collect::<Result<Vec<_>>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Crypto(e.to_string().to_lowercase()))?;
    encryptor
        .wrap_output(output)
        .map_err(|e| Error::io("starting encryption", e))
}

/// Reads the x25519 identities (`AGE-SECRET-KEY-...` lines) of an age identity file.
pub fn load_identities(path: &Path) -> Result<Identities> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Crypto(format!(
            "cannot read identity file `{}`: {}",
            path.display(),
            e.to_string().to_lowercase()
        ))
    })?;
    let mut keys: Identities = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = line.parse::<age::x25519::Identity>().map_err(|_| {
            Error::Crypto(format!(
                "identity file `{}` line {}: not an age identity (`AGE-SECRET-KEY-...`)",
                path.display(),
                number + 1
            ))
        })?;
        keys.push(Box::new(identity));
    }
    if keys.is_empty() {
        return Err(Error::Crypto(format!(
            "identity file `{}` holds no identity",
            path.display()
        )));
    }
    Ok(keys)
}

/// Wraps `input` (an age stream) in a reader of its plaintext.
pub fn decrypt_from<R: Read>(
    input: R,
    identities: &Identities,
    backup_id: &str,
) -> Result<age::stream::StreamReader<BufReader<R>>> {
    let decryptor =
        age::Decryptor::new_buffered(BufReader::new(input)).map_err(|e| Error::Integrity {
            id: backup_id.to_string(),
            detail: format!("not a readable age stream: {e}"),
        })?;
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::Crypto(format!(
                "the identity does not match any recipient of backup `{backup_id}`: use the identity file whose public key was configured when it was taken"
            )),
            other => Error::Crypto(format!("cannot decrypt backup `{backup_id}`: {other}")),
        })
}

/// Writes a new identity to `out` (mode 0600, never over an existing file) and returns its
/// public key, the recipient to put in `[encryption] recipients`.
pub fn generate_identity(out: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = jiff::Timestamp::now();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "`{}` already exists: choose another `--out`, lifeboat never overwrites a key",
                    out.display()
                ))
            } else {
                Error::io(format!("creating `{}`", out.display()), e)
            }
        })?;
    let body = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    file.write_all(body.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("writing `{}`", out.display()), e))?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.txt");
        let recipient = generate_identity(&key).unwrap();
        assert!(recipient.starts_with("age1"));
        assert!(generate_identity(&key).is_err(), "must refuse to overwrite");

        let mut sealed = Vec::new();
        let mut w = encrypt_to(std::slice::from_ref(&recipient), &mut sealed).unwrap();
        w.write_all(b"hello").unwrap();
        w.finish().unwrap();
        assert!(!sealed.windows(5).any(|s| s == b"hello"));

        let ids = load_identities(&key).unwrap();
        let mut plain = String::new();
        decrypt_from(&sealed[..], &ids, "b1")
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "hello");

        let other = dir.path().join("other.txt");
        generate_identity(&other).unwrap();
        let wrong = load_identities(&other).unwrap();
        let err = decrypt_from(&sealed[..], &wrong, "b1")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not match") && err.contains("`b1`"),
            "{err}"
        );
    }
}
