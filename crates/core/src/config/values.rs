//! The typed values of the configuration: each is checked as the file is read (so an error
//! names the key and the line) and kept in its checked form, never parsed again where used.
//! Secrets are held in [`Secret`] (in `secrets.rs`); the PostgreSQL URL in [`PgUrl`], which
//! redacts its password the same way.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expand::expand;
pub use super::secrets::Secret;

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl RepositoryUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "malformed repository url `{text}`: expected `s3://BUCKET/PREFIX`"
                ));
            }
            Ok(RepositoryUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!(
                    "malformed repository url `{text}`: expected `file:///ABSOLUTE/PATH`"
                ));
            }
            Ok(RepositoryUrl::Local(PathBuf::from(path)))
        } else if text.contains("://") {
            Err(format!(
                "unsupported repository url `{text}`: use `file:///PATH` or `s3://BUCKET/PREFIX`"
            ))
        } else if text.is_empty() {
            Err("empty repository url: use `file:///PATH` or `s3://BUCKET/PREFIX`".into())
        } else {
            Ok(RepositoryUrl::Local(PathBuf::from(text)))
        }
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryUrl::Local(path) => write!(f, "file://{}", path.display()),
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepositoryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl<'de> Deserialize<'de> for RepositoryUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RepositoryUrl::parse(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for RepositoryUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub bucket: String,
    pub prefix: String,
}

impl BucketUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        match RepositoryUrl::parse(text) {
            Ok(RepositoryUrl::S3 { bucket, prefix }) => Ok(BucketUrl { bucket, prefix }),
            _ => Err(format!(
                "bucket url `{text}` must be `s3://BUCKET` or `s3://BUCKET/PREFIX`"
            )),
        }
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl<'de> Deserialize<'de> for BucketUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BucketUrl::parse(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for BucketUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// libpq's verifying TLS settings in a PostgreSQL URL (`sslmode=verify-ca|verify-full`,
/// `sslrootcert=FILE`), which tokio-postgres does not know: the URL with `sslmode=require` in
/// their place, and, where a verifying mode is asked for, whether it is `verify-full` and the
/// CA file named.
pub fn split_tls_verification(url: &str) -> (String, Option<(bool, Option<std::path::PathBuf>)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut kept = Vec::new();
    let (mut full, mut root) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca")) => full = Some(false),
            Some(("sslmode", "verify-full")) => full = Some(true),
            Some(("sslrootcert", path)) => {
                let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
                root = Some(std::path::PathBuf::from(path.as_ref()));
            }
            _ => kept.push(pair),
        }
    }
    if full.is_some() {
        kept.push("sslmode=require");
    }
    (
        format!("{base}?{}", kept.join("&")),
        full.map(|full| (full, root)),
    )
}

/// A PostgreSQL connection URL whose password is never displayed.
#[derive(Clone)]
pub struct PgUrl(String);

impl PgUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(text)
            .map_err(|e| format!("malformed postgres url `{}`: {e}", redact_url(text)))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "postgres url `{}` must start with `postgresql://`",
                redact_url(text)
            ));
        }
        split_tls_verification(text)
            .0
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("malformed postgres url `{}`: {e}", redact_url(text)))?;
        Ok(PgUrl(text.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for PgUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PgUrl::parse(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PgUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Whether a URL carries a password (in its user part or a `password=` parameter).
pub fn url_has_password(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| {
        u.password().is_some()
            || u.query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    })
}

/// Replaces the password of a URL, and any `password=` query value, with `***`.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL: show nothing that could be a password.
        Err(_) => match text.find('@') {
            Some(at) => format!("***{}", &text[at..]),
            None => text.to_string(),
        },
    }
}

/// The S3 storage classes lifeboat knows; anything else is a configuration error.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
];

/// A storage class, one of [`STORAGE_CLASSES`].
pub fn storage_class_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = expand(d)?;
    if STORAGE_CLASSES.contains(&value.as_str()) {
        Ok(Some(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "unknown storage class `{value}`: use one of {}",
            STORAGE_CLASSES.join(", ")
        )))
    }
}

/// S3 Object Lock's retention modes: `governance` locks can be lifted by an account holding
/// `s3:BypassGovernanceRetention`; `compliance` locks by nobody, the account's root included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// As S3 spells it (`GOVERNANCE`, `COMPLIANCE`).
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// An IANA time zone, by name.
#[derive(Clone, PartialEq)]
pub struct TimeZone {
    name: String,
    zone: jiff::tz::TimeZone,
    /// Named in the configuration (not the default).
    configured: bool,
}

impl TimeZone {
    pub fn get(name: &str) -> Result<TimeZone, String> {
        let zone = jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("unknown time zone `{name}`: use an IANA name such as `UTC` or `Asia/Jakarta`")
        })?;
        Ok(TimeZone {
            name: name.to_string(),
            zone,
            configured: true,
        })
    }

    /// The default: UTC, not named in the configuration.
    pub fn utc() -> TimeZone {
        TimeZone {
            name: "UTC".into(),
            zone: jiff::tz::TimeZone::UTC,
            configured: false,
        }
    }

    /// The system's zone (`TZ`, else `/etc/localtime`), not named in the configuration.
    pub fn system() -> TimeZone {
        let zone = jiff::tz::TimeZone::system();
        TimeZone {
            name: zone.iana_name().unwrap_or("the system's zone").to_string(),
            zone,
            configured: false,
        }
    }

    /// Whether the configuration named it.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone::utc()
    }
}

impl fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeZone({})", self.name)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TimeZone::get(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// How long storage requests may take (`[repository.timeouts]`, and each bucket's). See
/// [`crate::storage::client`] for what each bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Seconds to reach the endpoint.
    pub connect_secs: u64,
    /// Seconds without a byte received before a request fails.
    pub io_secs: u64,
    /// Seconds one request may take in all; also the most one operation may take with its
    /// retries.
    pub request_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_secs: 10,
            io_secs: 60,
            request_secs: 300,
        }
    }
}

impl Timeouts {
    pub fn request(&self) -> Duration {
        Duration::from_secs(self.request_secs)
    }

    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.connect_secs == 0 || self.io_secs == 0 || self.request_secs == 0 {
            return Err(format!("`{key}` timeouts must be at least 1 second"));
        }
        if self.io_secs > self.request_secs {
            return Err(format!(
                "`{key}.io_secs` ({}) is longer than `request_secs` ({}): a request could never wait that long",
                self.io_secs, self.request_secs
            ));
        }
        Ok(())
    }
}

/// How to reach an S3 account: the one struct every S3 section of the configuration (the
/// repository's, each bucket of an object backup) and the storage layer share.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Access {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub path_style: bool,
    pub timeouts: Timeouts,
}

impl fmt::Debug for S3Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Access")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl S3Access {
    /// The region to sign with: the configured one, else `auto` behind a custom endpoint
    /// (R2), else `us-east-1`.
    pub fn signing_region(&self) -> &str {
        match (&self.region, &self.endpoint) {
            (Some(region), _) => region,
            (None, Some(_)) => "auto",
            (None, None) => "us-east-1",
        }
    }

    /// Whether the server can copy between buckets of this account and `other`'s: one
    /// endpoint, region and set of credentials.
    pub fn same_account(&self, other: &S3Access) -> bool {
        self.endpoint == other.endpoint
            && self.region == other.region
            && self.access_key_id.is_some()
            && self.access_key_id == other.access_key_id
            && self.secret_access_key == other.secret_access_key
    }
}

pub(crate) fn yes() -> bool {
    true
}

/// Declares a configuration section that reaches an S3 bucket: its own fields, then the
/// account's ([`S3Access`]), written out once here. (A `#[serde(flatten)]`ed struct would be
/// shorter, but TOML then can no longer name an unknown key, nor the line of a bad value.)
macro_rules! reaches_s3 {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $($(#[$field_attr:meta])* pub $field:ident: $type:ty,)*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($(#[$field_attr])* pub $field: $type,)*
            /// The endpoint (R2: `https://ACCOUNT.r2.cloudflarestorage.com`); unset: AWS.
            #[serde(default, deserialize_with = "crate::config::expand::expand_opt")]
            pub endpoint: Option<String>,
            /// Unset: `auto` behind an endpoint (R2), else `us-east-1`.
            #[serde(default, deserialize_with = "crate::config::expand::expand_opt")]
            pub region: Option<String>,
            #[serde(default)]
            pub access_key_id: Option<crate::config::Secret>,
            #[serde(default)]
            pub secret_access_key: Option<crate::config::Secret>,
            /// The access key id, from a file (see [`secret_file`](crate::config::secrets::secret_file)).
            #[serde(default, skip_serializing, deserialize_with = "crate::config::secrets::secret_file")]
            pub access_key_id_file: Option<crate::config::Secret>,
            /// The secret access key, from a file.
            #[serde(default, skip_serializing, deserialize_with = "crate::config::secrets::secret_file")]
            pub secret_access_key_file: Option<crate::config::Secret>,
            /// Path-style addressing (`endpoint/bucket/key`), as R2 and most servers want.
            #[serde(default = "crate::config::values::yes")]
            pub path_style: bool,
            /// How long storage requests may take.
            #[serde(default)]
            pub timeouts: crate::config::Timeouts,
        }

        impl $name {
            /// Takes the credentials from their `*_file` keys; `section` names it in errors.
            pub(crate) fn take_secret_files(&mut self, section: &str) -> Result<(), String> {
                let named = |e: String| format!("[{section}]: {e}");
                crate::config::secrets::one_secret(
                    &mut self.access_key_id,
                    &mut self.access_key_id_file,
                    "access_key_id",
                )
                .map_err(named)?;
                crate::config::secrets::one_secret(
                    &mut self.secret_access_key,
                    &mut self.secret_access_key_file,
                    "secret_access_key",
                )
                .map_err(named)
            }

            /// How this section reaches its bucket.
            pub fn access(&self) -> crate::config::S3Access {
                crate::config::S3Access {
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone(),
                    access_key_id: self.access_key_id.clone(),
                    secret_access_key: self.secret_access_key.clone(),
                    path_style: self.path_style,
                    timeouts: self.timeouts,
                }
            }
        }
    };
}
pub(crate) use reaches_s3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_their_passwords() {
        assert!(url_has_password("postgresql://u:pw@h/db"));
        assert!(url_has_password("postgresql://u@h/db?password=x"));
        assert!(!url_has_password("postgresql:///db?host=/tmp/s&port=5"));
        assert_eq!(
            redact_url("postgresql://u:pw@h/db"),
            "postgresql://u:***@h/db"
        );
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }

    #[test]
    fn time_zones_are_checked() {
        assert_eq!(
            TimeZone::get("Asia/Jakarta").unwrap().name(),
            "Asia/Jakarta"
        );
        assert!(TimeZone::get("Mars/Olympus")
            .unwrap_err()
            .contains("unknown time zone `Mars/Olympus`"));
    }

    #[test]
    fn timeouts_are_checked() {
        assert!(Timeouts::default().check("t").is_ok());
        let bad = Timeouts {
            io_secs: 600,
            ..Timeouts::default()
        };
        assert!(bad.check("t").unwrap_err().contains("longer than"));
    }
}
