//! Secrets in the configuration: [`Secret`], whose `Debug` and `Serialize` never show the
//! value, and the `*_file` keys that read one from a file (systemd credentials included).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expand::expand;

/// A secret value: expanded from the environment like any string, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expand(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A secret read from a file (the `*_file` keys): the path is expanded like any value; a
/// relative one is read from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when set;
/// one trailing newline is dropped.
pub fn secret_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let path = expand(d)?;
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
    match read_secret_file(&path, credentials.as_deref().map(std::path::Path::new)) {
        Ok(value) => Ok(Some(Secret(value))),
        Err(problem) => super::expand::missing(problem)
            .map(|()| None)
            .map_err(serde::de::Error::custom),
    }
}

fn read_secret_file(path: &str, credentials: Option<&std::path::Path>) -> Result<String, String> {
    let given = std::path::Path::new(path);
    let full = match credentials {
        Some(dir) if given.is_relative() => dir.join(given),
        _ => given.to_path_buf(),
    };
    let text = std::fs::read_to_string(&full).map_err(|e| {
        format!(
            "cannot read the secret file `{}`: {}: create it or change the `*_file` key",
            full.display(),
            e.to_string().to_lowercase()
        )
    })?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("the secret file `{}` is empty", full.display()));
    }
    Ok(value.to_string())
}

/// Takes a secret from its `*_file` key when only that is set; `key` names the pair.
pub fn one_secret(
    value: &mut Option<Secret>,
    file: &mut Option<Secret>,
    key: &str,
) -> Result<(), String> {
    match (value.is_some(), file.take()) {
        (true, Some(_)) => Err(format!("both `{key}` and `{key}_file` are set: keep one")),
        (false, Some(from_file)) => {
            *value = Some(from_file);
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_shown() {
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
        assert_eq!(serde_json::to_string(&Secret::new("x")).unwrap(), "\"***\"");
    }

    #[test]
    fn secret_files_are_read_whole_and_relative_to_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg"), "s3cret!\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let full = dir.path().join("pg");
        assert_eq!(
            read_secret_file(full.to_str().unwrap(), None).unwrap(),
            "s3cret!"
        );
        assert_eq!(read_secret_file("pg", Some(dir.path())).unwrap(), "s3cret!");
        let err = read_secret_file("nope", Some(dir.path())).unwrap_err();
        assert!(
            err.contains("nope`") && err.contains("no such file"),
            "{err}"
        );
        assert!(read_secret_file("empty", Some(dir.path()))
            .unwrap_err()
            .contains("empty"));
        let (mut value, mut file) = (Some(Secret::new("a")), Some(Secret::new("b")));
        assert!(one_secret(&mut value, &mut file, "password")
            .unwrap_err()
            .contains("`password_file`"));
        let (mut value, mut file) = (None, Some(Secret::new("b")));
        one_secret(&mut value, &mut file, "password").unwrap();
        assert_eq!(value.unwrap().expose(), "b");
    }
}
