//! The configuration file: its types, `${VAR}` expansion, validation and redacted display.
//!
//! Values are checked while the TOML is read, so an error names the key and the line
//! (unknown keys, a missing environment variable, a malformed URL, an unknown storage class).
//! Secrets are held in [`Secret`], whose `Debug` and `Serialize` never show the value; the
//! PostgreSQL URL is held in [`PgUrl`], which redacts its password the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Where the configuration came from, for messages and for resolving relative paths.
#[derive(Debug, Clone, Serialize)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file: the embedded default (a local repository `./lifeboat-repo`).
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub tools: ToolsConfig,
    #[serde(default)]
    pub wal: WalConfig,
    #[serde(default)]
    pub postgres: BTreeMap<String, PostgresConfig>,
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectsConfig>,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub objectives: Objectives,
    /// Named jobs for `run` and the daemon; unset: `daily` and `weekly` as in the guide.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(skip_deserializing, default = "default_source")]
    pub source: ConfigSource,
}

fn default_source() -> ConfigSource {
    ConfigSource::Default
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub url: RepositoryUrl,
    #[serde(default, deserialize_with = "expand_opt")]
    pub endpoint: Option<String>,
    #[serde(default, deserialize_with = "expand_opt")]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (`endpoint/bucket/key`); the default, as R2 and most servers want.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Storage class per kind of backup (`db`, `base`, `wal`); unset means the bucket default.
    #[serde(default)]
    pub storage_class: StorageClasses,
    /// Multipart part size in MiB (all parts but the last are exactly this size, as R2 requires).
    /// Unset: chosen from the database size so that the 10,000-part limit is never reached.
    #[serde(default)]
    pub part_size_mib: Option<u64>,
    /// Parts uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// How long storage requests may take.
    #[serde(default)]
    pub timeouts: crate::storage::Timeouts,
}

/// The region to sign with: the configured one, else `auto` behind a custom endpoint (R2).
fn signing_region(region: Option<&str>, endpoint: Option<&str>) -> String {
    match (region, endpoint) {
        (Some(region), _) => region.to_string(),
        (None, Some(_)) => "auto".into(),
        (None, None) => "us-east-1".into(),
    }
}

impl RepositoryConfig {
    /// The repository's S3 account, `None` for a local folder.
    pub fn account(&self) -> Option<crate::storage::S3Account> {
        let RepositoryUrl::S3 { bucket, prefix } = &self.url else {
            return None;
        };
        Some(crate::storage::S3Account {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: signing_region(self.region.as_deref(), self.endpoint.as_deref()),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            path_style: self.path_style,
        })
    }

    /// The repository's bucket, for requests the storage layer does not make (storage class
    /// changes, lifecycle rules); `None` for a local folder.
    pub fn bucket(&self) -> Option<BucketConfig> {
        let RepositoryUrl::S3 { bucket, prefix } = &self.url else {
            return None;
        };
        Some(BucketConfig {
            url: BucketUrl {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            },
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            path_style: self.path_style,
            storage_class: None,
            timeouts: self.timeouts,
        })
    }
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            url: RepositoryUrl::Local(PathBuf::from("lifeboat-repo")),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            storage_class: StorageClasses::default(),
            part_size_mib: None,
            upload_concurrency: default_upload_concurrency(),
            timeouts: crate::storage::Timeouts::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_upload_concurrency() -> usize {
    4
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageClasses {
    #[serde(default, deserialize_with = "storage_class_opt")]
    pub db: Option<String>,
    #[serde(default, deserialize_with = "storage_class_opt")]
    pub base: Option<String>,
    #[serde(default, deserialize_with = "storage_class_opt")]
    pub wal: Option<String>,
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

fn storage_class_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl RepositoryUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
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
        let text = expand(d)?;
        RepositoryUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for RepositoryUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age recipients (`age1...` public keys) every backup is encrypted to.
    #[serde(deserialize_with = "expand_vec")]
    pub recipients: Vec<String>,
    /// The age identity file, needed only to restore or verify.
    #[serde(default, deserialize_with = "expand_opt")]
    pub identity_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// zstd level, 1 (fast) to 19 (small).
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0 means one per core but one (left for pg_dump).
    #[serde(default)]
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            level: default_level(),
            threads: 0,
        }
    }
}

fn default_level() -> i32 {
    3
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Folder holding pg_dump, pg_restore, initdb...; unset: the newest under
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    #[serde(default, deserialize_with = "expand_opt")]
    pub pg_bin_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Ready segments archived ahead of PostgreSQL's requests, in parallel, by a background
    /// `wal-push-ahead` that `wal-push` starts; 0 turns pushing ahead off.
    #[serde(default = "default_wal_parallel")]
    pub push_ahead: usize,
    /// Segments downloaded ahead of PostgreSQL's requests, in parallel, by a background
    /// `wal-prefetch` that `wal-fetch` starts; 0 turns prefetching off.
    #[serde(default = "default_wal_parallel")]
    pub prefetch: usize,
    /// Folder for pushed-ahead markers and prefetched segments, private to the user the
    /// server runs as; unset: `lifeboat-wal-<uid>` in the temporary folder.
    #[serde(default, deserialize_with = "expand_opt")]
    pub spool_dir: Option<String>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            push_ahead: default_wal_parallel(),
            prefetch: default_wal_parallel(),
            spool_dir: None,
        }
    }
}

fn default_wal_parallel() -> usize {
    4
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: PgUrl,
    /// Password, kept out of the URL so that it can come from the environment.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Tables (`schema.table`) that must never be empty in a backup or a restore.
    #[serde(default, deserialize_with = "expand_vec")]
    pub critical_tables: Vec<String>,
    /// The server archives its WAL to lifeboat: the daily job takes base backups of it and
    /// `status` watches its archive.
    #[serde(default)]
    pub pitr: bool,
    /// SQL that must return `true` (every row's first value) in a verified restore, e.g.
    /// `SELECT NOT dirty FROM schema_migrations`.
    #[serde(default, deserialize_with = "expand_vec")]
    pub checks: Vec<String>,
}

/// A job: steps run in order (a failing step does not stop the others), on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// `backup db [NAME]`, `backup base [NAME]`, `backup objects [NAME]`, `backup redis`,
    /// `prune`, `verify [db|base]`.
    #[serde(deserialize_with = "expand_vec")]
    pub steps: Vec<String>,
    /// Cron schedule (`minute hour day-of-month month day-of-week`) for the daemon.
    #[serde(default, deserialize_with = "expand_opt")]
    pub schedule: Option<String>,
}

/// Where run results go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Slack incoming webhook URL (a secret: it carries its token).
    #[serde(default)]
    pub slack_webhook: Option<Secret>,
    /// Any URL that takes the run's report as JSON (POST).
    #[serde(default)]
    pub webhook: Option<Secret>,
    /// Health-check ping URL: `/start` when a run starts, the URL itself on success,
    /// `/fail` on failure (healthchecks.io style), so that a run that never happens is noticed.
    #[serde(default)]
    pub healthcheck: Option<Secret>,
    /// Also notify when every step succeeded (failures are always sent).
    #[serde(default)]
    pub on_success: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Time zone of the schedules (IANA name).
    #[serde(default = "default_time_zone", deserialize_with = "time_zone")]
    pub time_zone: String,
    /// Address of `/metrics` and `/healthz`; unset: none.
    #[serde(default, deserialize_with = "expand_opt")]
    pub listen: Option<String>,
    /// A run lock whose heartbeat is older than this is taken over.
    #[serde(default = "default_stale_minutes")]
    pub lock_stale_minutes: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            time_zone: default_time_zone(),
            listen: None,
            lock_stale_minutes: default_stale_minutes(),
        }
    }
}

fn default_stale_minutes() -> u64 {
    10
}

/// Redis: ephemeral by design (`status` checks that it answers); `backup redis` takes an RDB
/// snapshot only when `backup = true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT` (a secret when it carries a password).
    pub url: Secret,
    #[serde(default)]
    pub backup: bool,
}

/// Recovery objectives (`[objectives]`), in minutes; the defaults are the guide's table, with
/// an hour's grace on the daily ones for the job itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Age of the newest good logical dump.
    #[serde(default = "default_daily_rpo")]
    pub dump_rpo_minutes: u64,
    /// Measured restore time of a dump (by `verify`).
    #[serde(default = "default_hour")]
    pub dump_rto_minutes: u64,
    /// Age of the newest archived WAL while the server is up.
    #[serde(default = "default_wal_rpo")]
    pub wal_rpo_minutes: u64,
    /// Measured recovery time of a base backup (by `verify`).
    #[serde(default = "default_pitr_rto")]
    pub pitr_rto_minutes: u64,
    /// Age of the newest object backup run.
    #[serde(default = "default_daily_rpo")]
    pub objects_rpo_minutes: u64,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            dump_rpo_minutes: default_daily_rpo(),
            dump_rto_minutes: default_hour(),
            wal_rpo_minutes: default_wal_rpo(),
            pitr_rto_minutes: default_pitr_rto(),
            objects_rpo_minutes: default_daily_rpo(),
        }
    }
}

fn default_daily_rpo() -> u64 {
    25 * 60
}

fn default_hour() -> u64 {
    60
}

fn default_wal_rpo() -> u64 {
    15
}

fn default_pitr_rto() -> u64 {
    15
}

/// How long backups are kept (`[retention]`); the defaults are the guide's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Time zone of the calendar months and years (IANA name).
    #[serde(default = "default_time_zone", deserialize_with = "time_zone")]
    pub time_zone: String,
    /// Every logical dump of the last N days.
    #[serde(default = "default_daily_days")]
    pub daily_days: u32,
    /// The first dump of each month, for N months.
    #[serde(default = "default_monthly_months")]
    pub monthly_months: u32,
    /// The first dump of each year, for N years; unset: forever.
    #[serde(default)]
    pub yearly_years: Option<u32>,
    /// Point-in-time recovery window: base backups and WAL to recover any moment of N days.
    #[serde(default = "default_pitr_days")]
    pub pitr_days: u32,
    /// Storage class a dump moves to when it is kept only as its month's first.
    #[serde(default = "default_cold_class", deserialize_with = "storage_class_opt")]
    pub monthly_class: Option<String>,
    /// Storage class a dump moves to when it is kept only as its year's first.
    #[serde(default = "default_cold_class", deserialize_with = "storage_class_opt")]
    pub yearly_class: Option<String>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            time_zone: default_time_zone(),
            daily_days: default_daily_days(),
            monthly_months: default_monthly_months(),
            yearly_years: None,
            pitr_days: default_pitr_days(),
            monthly_class: default_cold_class(),
            yearly_class: default_cold_class(),
        }
    }
}

impl RetentionConfig {
    pub fn policy(&self) -> crate::retention::Policy {
        crate::retention::Policy {
            time_zone: jiff::tz::TimeZone::get(&self.time_zone)
                .expect("checked when the configuration was read"),
            daily_days: self.daily_days,
            monthly_months: self.monthly_months,
            yearly_years: self.yearly_years,
            pitr_days: self.pitr_days,
        }
    }
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_daily_days() -> u32 {
    30
}

fn default_monthly_months() -> u32 {
    12
}

fn default_pitr_days() -> u32 {
    7
}

fn default_cold_class() -> Option<String> {
    Some("GLACIER".into())
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = expand(d)?;
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown time zone `{name}`: use an IANA name such as `UTC` or `Asia/Jakarta`"
        ))
    })?;
    Ok(name)
}

/// A bucket backed up into another bucket (`[objects.NAME]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    /// The bucket (and optional prefix) to back up.
    pub source: BucketConfig,
    /// Where its copies, their history and the record of every run go.
    pub destination: BucketConfig,
    /// Objects copied at once.
    #[serde(default = "default_transfers")]
    pub transfers: usize,
    /// Metadata requests (HEAD, DELETE) at once.
    #[serde(default = "default_transfers")]
    pub checkers: usize,
    /// How long an object deleted or overwritten in the source stays restorable.
    #[serde(default = "default_history_days")]
    pub history_days: u32,
    /// Multipart part size in MiB for large objects (every part but the last this size).
    #[serde(default = "default_object_part_mib")]
    pub part_size_mib: u64,
}

fn default_transfers() -> usize {
    16
}

fn default_history_days() -> u32 {
    90
}

fn default_object_part_mib() -> u64 {
    8
}

/// One S3 bucket with its own endpoint and credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub url: BucketUrl,
    #[serde(default, deserialize_with = "expand_opt")]
    pub endpoint: Option<String>,
    #[serde(default, deserialize_with = "expand_opt")]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Storage class of the copies; unset means the bucket default.
    #[serde(default, deserialize_with = "storage_class_opt")]
    pub storage_class: Option<String>,
    /// How long storage requests may take.
    #[serde(default)]
    pub timeouts: crate::storage::Timeouts,
}

impl BucketConfig {
    /// The bucket's S3 account.
    pub fn account(&self) -> crate::storage::S3Account {
        crate::storage::S3Account {
            bucket: self.url.bucket.clone(),
            prefix: self.url.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: signing_region(self.region.as_deref(), self.endpoint.as_deref()),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            path_style: self.path_style,
        }
    }

    /// The same account and endpoint as `other`, with another bucket and prefix.
    pub fn with_url(&self, url: BucketUrl) -> BucketConfig {
        BucketConfig {
            url,
            ..self.clone()
        }
    }

    /// Whether a server-side copy from `other` into this bucket is possible: one endpoint,
    /// one set of credentials.
    pub fn shares_account_with(&self, other: &BucketConfig) -> bool {
        self.account().shares_account_with(&other.account())
    }
}

/// `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub bucket: String,
    pub prefix: String,
}

impl BucketUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
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

/// A PostgreSQL connection URL whose password is never displayed.
#[derive(Clone)]
pub struct PgUrl(String);

impl PgUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let parsed = url::Url::parse(text)
            .map_err(|e| format!("malformed postgres url `{}`: {e}", redact_url(text)))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "postgres url `{}` must start with `postgresql://`",
                redact_url(text)
            ));
        }
        text.parse::<tokio_postgres::Config>()
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

/// Expands `${VAR}` from the environment; `$$` stands for a literal `$`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{text}`"))?;
            let name = &tail[..end];
            if name.is_empty() {
                return Err("empty variable name `${}`".into());
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable `{name}` is not set: export it or change the value")
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand_env(&raw, |name| std::env::var(name).ok()).map_err(serde::de::Error::custom)
}

fn expand_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expand(d).map(Some)
}

fn expand_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|item| {
            expand_env(item, |name| std::env::var(name).ok()).map_err(serde::de::Error::custom)
        })
        .collect()
}

impl Config {
    /// Finds and reads the configuration: `explicit` (from `--config`), else `$LIFEBOAT_CONFIG`,
    /// else `./lifeboat.toml`, else the embedded default.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let from_env = std::env::var_os("LIFEBOAT_CONFIG").map(PathBuf::from);
        let path = match (explicit, from_env) {
            (Some(path), _) => Some(path.to_path_buf()),
            (None, Some(path)) if !path.as_os_str().is_empty() => Some(path),
            _ => {
                let local = PathBuf::from("lifeboat.toml");
                local.exists().then_some(local)
            }
        };
        match path {
            None => {
                let mut config = Config::default();
                if let RepositoryUrl::Local(local) = &config.repository.url {
                    if let Ok(cwd) = std::env::current_dir() {
                        config.repository.url = RepositoryUrl::Local(cwd.join(local));
                    }
                }
                Ok(config)
            }
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read config `{}`: {}",
                        path.display(),
                        e.to_string().to_lowercase()
                    ))
                })?;
                Config::parse(&text, &path)
            }
        }
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = crate::error::one_line(e.message());
            Error::Config(match line {
                Some(line) => format!("config `{}` line {line}: {message}", path.display()),
                None => format!("config `{}`: {message}", path.display()),
            })
        })?;
        if let RepositoryUrl::Local(local) = &config.repository.url {
            if local.is_relative() {
                let base = path.parent().unwrap_or(Path::new(""));
                config.repository.url = RepositoryUrl::Local(base.join(local));
            }
        }
        config.source = ConfigSource::File(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::Config(format!(
                "config `{}`: {msg}",
                self.source_name()
            )))
        };
        if !(1..=22).contains(&self.compression.level) {
            return bad(format!(
                "`compression.level` is `{}`: use 1 to 22",
                self.compression.level
            ));
        }
        if let Some(size) = self.repository.part_size_mib {
            if !(5..=5120).contains(&size) {
                return bad(format!(
                    "`repository.part_size_mib` is `{size}`: S3 parts must be 5 to 5120 MiB"
                ));
            }
        }
        self.repository
            .timeouts
            .check("repository.timeouts")
            .map_err(|e| Error::Config(format!("config `{}`: {e}", self.source_name())))?;
        for (name, objects) in &self.objects {
            for (end, bucket) in [
                ("source", &objects.source),
                ("destination", &objects.destination),
            ] {
                bucket
                    .timeouts
                    .check(&format!("objects.{name}.{end}.timeouts"))
                    .map_err(|e| Error::Config(format!("config `{}`: {e}", self.source_name())))?;
            }
        }
        if self.repository.upload_concurrency == 0 {
            return bad("`repository.upload_concurrency` must be at least 1".into());
        }
        if let Some(enc) = &self.encryption {
            if enc.recipients.is_empty() {
                return bad("`encryption.recipients` is empty: add an `age1...` public key, or remove `[encryption]`".into());
            }
            for recipient in &enc.recipients {
                crate::crypto::parse_recipient(recipient)
                    .map_err(|e| Error::Config(format!("config `{}`: {e}", self.source_name())))?;
            }
        }
        for (name, job) in &self.jobs {
            for step in &job.steps {
                crate::jobs::Step::parse(step).map_err(|e| {
                    Error::Config(format!(
                        "config `{}`: `jobs.{name}.steps`: {e}",
                        self.source_name()
                    ))
                })?;
            }
            if let Some(schedule) = &job.schedule {
                crate::schedule::Cron::parse(schedule).map_err(|e| {
                    Error::Config(format!(
                        "config `{}`: `jobs.{name}.schedule`: {e}",
                        self.source_name()
                    ))
                })?;
            }
        }
        if let Some(listen) = &self.daemon.listen {
            let valid = listen.parse::<std::net::SocketAddr>().is_ok()
                || listen
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return bad(format!(
                    "`daemon.listen` is `{listen}`, not an address: use `IP:PORT` or `HOST:PORT`, e.g. `127.0.0.1:9187`"
                ));
            }
        }
        let r = &self.retention;
        if r.daily_days == 0 || r.pitr_days == 0 {
            return bad(
                "`retention.daily_days` and `retention.pitr_days` must be at least 1".into(),
            );
        }
        for (name, objects) in &self.objects {
            if objects.transfers == 0 || objects.checkers == 0 {
                return bad(format!(
                    "`objects.{name}.transfers` and `checkers` must be at least 1"
                ));
            }
            if !(5..=5120).contains(&objects.part_size_mib) {
                return bad(format!(
                    "`objects.{name}.part_size_mib` is `{}`: S3 parts must be 5 to 5120 MiB",
                    objects.part_size_mib
                ));
            }
            if objects.source.url == objects.destination.url
                && objects.source.endpoint == objects.destination.endpoint
            {
                return bad(format!(
                    "`objects.{name}`: source and destination are the same bucket `{}`",
                    objects.source.url
                ));
            }
        }
        let archiving: Vec<&str> = self
            .postgres
            .iter()
            .filter(|(_, db)| db.pitr)
            .map(|(name, _)| name.as_str())
            .collect();
        if archiving.len() > 1 {
            return bad(format!(
                "`pitr = true` on {}: a repository holds one cluster's WAL archive (segment names would collide); give each cluster its own repository (its own configuration file)",
                archiving
                    .iter()
                    .map(|n| format!("`postgres.{n}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        for (name, db) in &self.postgres {
            for table in &db.critical_tables {
                if table.split_once('.').is_none() {
                    return bad(format!(
                        "`postgres.{name}.critical_tables` entry `{table}` must be `schema.table`"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn source_name(&self) -> String {
        match &self.source {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Default => "(embedded default)".into(),
        }
    }

    /// The database section to use: `name` if given, else the only one configured.
    pub fn database(&self, name: Option<&str>) -> Result<(&str, &PostgresConfig)> {
        self.section(
            &self.postgres,
            name,
            ["database", "databases"],
            "a `[postgres.NAME]` section with `url = \"postgresql://...\"`",
            "--db NAME",
        )
    }

    /// Section `name` of `sections`, else the only one; the errors say what is configured.
    fn section<'a, T>(
        &self,
        sections: &'a BTreeMap<String, T>,
        name: Option<&str>,
        [what, whats]: [&str; 2],
        how_to_add: &str,
        flag: &str,
    ) -> Result<(&'a str, &'a T)> {
        let names = || {
            if sections.is_empty() {
                return "none".to_string();
            }
            sections
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => sections
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{what} `{name}` is not configured in `{}`: configured are {}",
                        self.source_name(),
                        names()
                    ))
                }),
            None => {
                let mut all = sections.iter();
                match (all.next(), all.next()) {
                    (Some((k, v)), None) => Ok((k.as_str(), v)),
                    (None, _) => Err(Error::Config(format!(
                        "no {what} configured in `{}`: add {how_to_add}",
                        self.source_name()
                    ))),
                    _ => Err(Error::invalid(format!(
                        "several {whats} are configured ({}): choose one with `{flag}`",
                        names()
                    ))),
                }
            }
        }
    }

    /// The jobs: the configured ones, else the guide's `daily` and `weekly`.
    pub fn jobs(&self) -> BTreeMap<String, JobConfig> {
        if !self.jobs.is_empty() {
            return self.jobs.clone();
        }
        let job = |steps: &[&str], schedule: &str| JobConfig {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            schedule: Some(schedule.to_string()),
        };
        BTreeMap::from([
            (
                "daily".to_string(),
                job(
                    &[
                        "backup db",
                        "backup base",
                        "backup objects",
                        "backup redis",
                        "prune",
                    ],
                    "0 2 * * *",
                ),
            ),
            ("weekly".to_string(), job(&["verify"], "0 3 * * 0")),
        ])
    }

    /// The object backup section to use: `name` if given, else the only one configured.
    pub fn objects(&self, name: Option<&str>) -> Result<(&str, &ObjectsConfig)> {
        self.section(
            &self.objects,
            name,
            ["object backup", "object backups"],
            "an `[objects.NAME]` section with `source` and `destination`",
            "--name NAME",
        )
    }

    /// The configuration as TOML with every secret replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            repository: &'a RepositoryConfig,
            #[serde(skip_serializing_if = "Option::is_none")]
            encryption: &'a Option<EncryptionConfig>,
            compression: &'a CompressionConfig,
            tools: &'a ToolsConfig,
            wal: &'a WalConfig,
            postgres: &'a BTreeMap<String, PostgresConfig>,
            objects: &'a BTreeMap<String, ObjectsConfig>,
            retention: &'a RetentionConfig,
            objectives: &'a Objectives,
            jobs: &'a BTreeMap<String, JobConfig>,
            notify: &'a NotifyConfig,
            daemon: &'a DaemonConfig,
            #[serde(skip_serializing_if = "Option::is_none")]
            redis: &'a Option<RedisConfig>,
        }
        toml::to_string_pretty(&Shown {
            repository: &self.repository,
            encryption: &self.encryption,
            compression: &self.compression,
            tools: &self.tools,
            wal: &self.wal,
            postgres: &self.postgres,
            objects: &self.objects,
            retention: &self.retention,
            objectives: &self.objectives,
            jobs: &self.jobs,
            notify: &self.notify,
            daemon: &self.daemon,
            redis: &self.redis,
        })
        .unwrap_or_else(|e| format!("# cannot display the configuration: {e}\n"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            repository: RepositoryConfig::default(),
            encryption: None,
            compression: CompressionConfig::default(),
            tools: ToolsConfig::default(),
            wal: WalConfig::default(),
            postgres: BTreeMap::new(),
            objects: BTreeMap::new(),
            retention: RetentionConfig::default(),
            objectives: Objectives::default(),
            jobs: BTreeMap::new(),
            notify: NotifyConfig::default(),
            daemon: DaemonConfig::default(),
            redis: None,
            source: ConfigSource::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/lifeboat/lifeboat.toml"))
    }

    #[test]
    fn expands_variables_and_dollars() {
        let look = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b$$c$d", look).unwrap(), "axb$c$d");
        let err = expand_env("${NOPE}", look).unwrap_err();
        assert!(err.contains("`NOPE`"), "{err}");
        assert!(expand_env("${A", look).is_err());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[repository]\nurl = \"/x\"\nbukket = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("`bukket`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn missing_variable_names_variable_and_line() {
        let err = parse("[postgres.main]\nurl = \"postgresql://u@h/db\"\npassword = \"${LIFEBOAT_TEST_UNSET_VAR}\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("`LIFEBOAT_TEST_UNSET_VAR`"), "{err}");
    }

    #[test]
    fn malformed_urls_are_errors() {
        let err = parse("[repository]\nurl = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("ftp://x"), "{err}");
        let err = parse("[postgres.a]\nurl = \"mysql://u:hunter2@h/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("hunter2"), "password leaked: {err}");
    }

    #[test]
    fn unknown_storage_class_is_an_error() {
        let err = parse(
            "[repository]\nurl = \"s3://b/p\"\n[repository.storage_class]\ndb = \"GLACIERR\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 4") && err.contains("`GLACIERR`"),
            "{err}"
        );
    }

    #[test]
    fn relative_local_repository_is_anchored_at_the_config() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert_eq!(
            config.repository.url,
            RepositoryUrl::Local(PathBuf::from("/etc/lifeboat/repo"))
        );
        let s3 = parse("[repository]\nurl = \"s3://bucket/a/b/\"\n").unwrap();
        assert_eq!(
            s3.repository.url,
            RepositoryUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
    }

    #[test]
    fn secrets_never_show() {
        let config = parse(
            "[repository]\nurl = \"s3://b\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"topsecret\"\n\
             [postgres.main]\nurl = \"postgresql://u:pw123@h/db?password=pw456\"\npassword = \"pw789\"\n",
        )
        .unwrap();
        let shown = format!("{config:?}{}", config.to_redacted_toml());
        for secret in ["topsecret", "pw123", "pw456", "pw789"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("postgresql://u:***@h/db"), "{shown}");
        assert!(url_has_password("postgresql://u:pw@h/db"));
        assert!(url_has_password("postgresql://u@h/db?password=x"));
        assert!(!url_has_password("postgresql:///db?host=/tmp/s&port=5"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../lifeboat.example.toml");
        // Every `${VAR}` it uses, set to something plausible.
        let mut expanded = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            expanded.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap() + start;
            expanded.push_str("example");
            rest = &rest[end + 1..];
        }
        expanded.push_str(rest);
        let config = Config::parse(&expanded, Path::new("/etc/lifeboat/lifeboat.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.objects.contains_key("media"));
        assert_eq!(
            config.retention.monthly_class.as_deref(),
            Some("STANDARD_IA")
        );
        assert_eq!(config.jobs().len(), 2);
        assert!(config.postgres["yomira"].pitr);
    }

    #[test]
    fn one_archiving_cluster_per_repository() {
        let text = "[postgres.a]\nurl = \"postgresql://h/a\"\npitr = true\n\
                    [postgres.b]\nurl = \"postgresql://h2/b\"\npitr = true\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("`pitr = true` on `postgres.a` and `postgres.b`: a repository holds one cluster's WAL archive"),
            "{err}"
        );
    }

    #[test]
    fn choosing_a_database() {
        let none = parse("").unwrap();
        assert!(none
            .database(None)
            .unwrap_err()
            .to_string()
            .contains("[postgres.NAME]"));
        let two = parse(
            "[postgres.a]\nurl = \"postgresql://h/a\"\n[postgres.b]\nurl = \"postgresql://h/b\"\n",
        )
        .unwrap();
        assert!(two.database(None).unwrap_err().to_string().contains("--db"));
        assert_eq!(two.database(Some("b")).unwrap().0, "b");
        assert!(two
            .database(Some("c"))
            .unwrap_err()
            .to_string()
            .contains("`a`, `b`"));
    }

    #[test]
    fn bad_recipient_and_level_are_errors() {
        let err = parse("[encryption]\nrecipients = [\"age1nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("age1nope"), "{err}");
        let err = parse("[compression]\nlevel = 40\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("compression.level"), "{err}");
    }
}
