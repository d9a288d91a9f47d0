//! The sections of the configuration file, one struct each, with their defaults: a section
//! whose keys all have defaults takes them from its `Default` (`#[serde(default)]`); a
//! section with a required key (a URL) names its defaults per field.

use serde::{Deserialize, Serialize};

use super::expand::{expand_opt, expand_vec};
use super::secrets::secret_file;
use super::values::{
    reaches_s3, storage_class_opt, BucketUrl, LockMode, PgUrl, RepositoryUrl, Secret, TimeZone,
    Timeouts,
};

reaches_s3! {
    /// `[repository]`: where backups go.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RepositoryConfig {
        pub url: RepositoryUrl,
        /// Storage class per kind of backup (`db`, `base`, `wal`); unset means the bucket
        /// default.
        #[serde(default)]
        pub storage_class: StorageClasses,
        /// Multipart part size in MiB (all parts but the last are exactly this size, as R2
        /// requires). Unset: chosen from the database size so that the 10,000-part limit is
        /// never reached.
        #[serde(default)]
        pub part_size_mib: Option<u64>,
        /// Parts uploaded at once.
        #[serde(default = "four")]
        pub upload_concurrency: usize,
        /// Copies of the repository elsewhere (another account or region):
        /// `[repository.copies.NAME]`, filled by `lifeboat copy` and the `copy` step.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        pub copies: std::collections::BTreeMap<String, CopyConfig>,
        /// S3 Object Lock: every backup, WAL file and manifest locked (`governance` or
        /// `compliance`) until the date retention keeps it to; the bucket must have Object
        /// Lock enabled. Unset: nothing is locked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub object_lock: Option<LockMode>,
    }
}

reaches_s3! {
    /// `[repository.copies.NAME]`: a copy of the repository, with its own location,
    /// credentials and (if given) retention.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CopyConfig {
        pub url: RepositoryUrl,
        /// Storage class per kind of backup in the copy; unset: the bucket default.
        #[serde(default)]
        pub storage_class: StorageClasses,
        /// Multipart part size in MiB; unset: 16.
        #[serde(default)]
        pub part_size_mib: Option<u64>,
        /// The copy's own retention; unset: `[retention]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retention: Option<RetentionConfig>,
        /// S3 Object Lock in the copy (`governance` or `compliance`), dated by its retention.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub object_lock: Option<LockMode>,
    }
}

impl CopyConfig {
    /// The copy as a repository of its own (to open, list, restore from, prune).
    pub fn repository(&self) -> RepositoryConfig {
        RepositoryConfig {
            url: self.url.clone(),
            storage_class: self.storage_class.clone(),
            part_size_mib: self.part_size_mib,
            upload_concurrency: four(),
            copies: Default::default(),
            object_lock: self.object_lock,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            access_key_id_file: None,
            secret_access_key_file: None,
            path_style: self.path_style,
            timeouts: self.timeouts,
        }
    }
}

fn four() -> usize {
    4
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            url: RepositoryUrl::Local("lifeboat-repo".into()),
            storage_class: StorageClasses::default(),
            part_size_mib: None,
            upload_concurrency: four(),
            copies: Default::default(),
            object_lock: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            access_key_id_file: None,
            secret_access_key_file: None,
            path_style: true,
            timeouts: Timeouts::default(),
        }
    }
}

impl RepositoryConfig {
    /// On Cloudflare R2 (by its endpoint), which locks by bucket rules, not per object.
    pub fn is_r2(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.contains(".r2.cloudflarestorage.com"))
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
            storage_class: None,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            access_key_id_file: None,
            secret_access_key_file: None,
            path_style: self.path_style,
            timeouts: self.timeouts,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageClasses {
    #[serde(deserialize_with = "storage_class_opt")]
    pub db: Option<String>,
    #[serde(deserialize_with = "storage_class_opt")]
    pub base: Option<String>,
    #[serde(deserialize_with = "storage_class_opt")]
    pub wal: Option<String>,
}

reaches_s3! {
    /// One S3 bucket of an object backup, with its own endpoint and credentials.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BucketConfig {
        pub url: BucketUrl,
        /// Storage class of the copies; unset means the bucket default.
        #[serde(default, deserialize_with = "storage_class_opt")]
        pub storage_class: Option<String>,
    }
}

impl BucketConfig {
    /// The same account and endpoint, with another bucket and prefix.
    pub fn with_url(&self, url: BucketUrl) -> BucketConfig {
        BucketConfig {
            url,
            ..self.clone()
        }
    }

    /// Whether a server-side copy between this bucket and `other` is possible: one endpoint,
    /// one set of credentials.
    pub fn shares_account_with(&self, other: &BucketConfig) -> bool {
        self.access().same_account(&other.access())
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
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// zstd level, 1 (fast) to 19 (small).
    pub level: i32,
    /// zstd worker threads; 0: for a dump one per core (at most 8), for a base backup one
    /// per core but one.
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            level: 3,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Folder holding pg_dump, pg_restore, initdb...; unset: the newest under
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    #[serde(deserialize_with = "expand_opt")]
    pub pg_bin_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Ready segments archived ahead of PostgreSQL's requests, in parallel, by a background
    /// `wal-push-ahead` that `wal-push` starts; 0 turns pushing ahead off.
    pub push_ahead: usize,
    /// Segments downloaded ahead of PostgreSQL's requests, in parallel, by a background
    /// `wal-prefetch` that `wal-fetch` starts; 0 turns prefetching off.
    pub prefetch: usize,
    /// Folder for pushed-ahead markers and prefetched segments, private to the user the
    /// server runs as; unset: `lifeboat-wal-<uid>` in the temporary folder.
    #[serde(deserialize_with = "expand_opt")]
    pub spool_dir: Option<String>,
    /// The most one `wal-push` may take in all, retries included (pgBackRest's
    /// `archive-timeout`): past it the push is stopped, stores nothing, and fails, so that a
    /// storage endpoint that never answers cannot hold PostgreSQL's archiver (and with it a
    /// fast shutdown or a failover).
    pub push_timeout_secs: u64,
    /// The same for one `wal-fetch` (which then exits 255: recovery stops, it does not end).
    pub fetch_timeout_secs: u64,
    /// The most WAL, in MiB, that may wait in `pg_wal` to be archived (pgBackRest's
    /// `archive-push-queue-max`): past it, `wal-push` reports a segment archived without
    /// storing it, so that PostgreSQL drops it instead of filling its disk and stopping. The
    /// gap is recorded, `status` is breached until the next base backup, and a notification
    /// says so. Unset: no limit (a storage outage long enough fills `pg_wal`).
    pub queue_max_mib: Option<u64>,
    /// `wal-stream`: how often what was received is stored as a piece, in milliseconds.
    pub stream_flush_ms: u64,
    /// `wal-stream`: the flush position told to the server is what is stored, and each piece
    /// is stored as soon as it arrives; with the slot's name in `synchronous_standby_names` a
    /// commit returns once its WAL is in the repository.
    pub stream_sync: bool,
    /// `wal-stream`: the physical replication slot, also the stream's `application_name`.
    pub stream_slot: String,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            push_ahead: 4,
            prefetch: 4,
            spool_dir: None,
            push_timeout_secs: 60,
            fetch_timeout_secs: 60,
            queue_max_mib: None,
            stream_flush_ms: 1000,
            stream_sync: false,
            stream_slot: "lifeboat".into(),
        }
    }
}

/// `[postgres.NAME]`: a database to back up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: PgUrl,
    /// Password, kept out of the URL so that it can come from the environment.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The password, read from a file (relative: from `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing, deserialize_with = "secret_file")]
    pub password_file: Option<Secret>,
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
    /// The folder of the PostgreSQL programs for this server (its `pg_dump`, `pg_basebackup`),
    /// when it is not `[tools] pg_bin_dir`'s: another major version beside it.
    #[serde(default)]
    pub pg_bin_dir: Option<String>,
}

/// Where run results go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Slack incoming webhook URL (a secret: it carries its token).
    pub slack_webhook: Option<Secret>,
    /// Any URL that takes the run's report as JSON (POST).
    pub webhook: Option<Secret>,
    /// Health-check ping URL: `/start` when a run starts, the URL itself on success,
    /// `/fail` on failure (healthchecks.io style), so that a run that never happens is noticed.
    pub healthcheck: Option<Secret>,
    /// The same three, read from files (relative: from `$CREDENTIALS_DIRECTORY`).
    #[serde(skip_serializing, deserialize_with = "secret_file")]
    pub slack_webhook_file: Option<Secret>,
    #[serde(skip_serializing, deserialize_with = "secret_file")]
    pub webhook_file: Option<Secret>,
    #[serde(skip_serializing, deserialize_with = "secret_file")]
    pub healthcheck_file: Option<Secret>,
    /// Also notify when every step succeeded (failures are always sent).
    pub on_success: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Time zone of the schedules (IANA name).
    pub time_zone: TimeZone,
    /// Address of `/metrics` and `/healthz`; unset: none.
    #[serde(deserialize_with = "expand_opt")]
    pub listen: Option<String>,
    /// A run lock whose heartbeat is older than this is taken over.
    pub lock_stale_minutes: u64,
    /// How often `/metrics` reads the assets' status from the repository (also after each job).
    pub status_interval_seconds: u64,
    /// Clusters (`[postgres.NAME]`) whose WAL the daemon streams all the time, as `lifeboat
    /// wal-stream --db NAME` does.
    #[serde(deserialize_with = "expand_vec")]
    pub wal_stream: Vec<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            time_zone: TimeZone::utc(),
            listen: None,
            lock_stale_minutes: 10,
            status_interval_seconds: 300,
            wal_stream: Vec::new(),
        }
    }
}

/// Redis: ephemeral by design (`status` checks that it answers); `backup redis` takes an RDB
/// snapshot only when `backup = true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, the user and password percent-encoded
    /// (a secret when it carries a password).
    pub url: Secret,
    /// ACL user name; wins over the URL's.
    #[serde(default, deserialize_with = "expand_opt")]
    pub user: Option<String>,
    /// Password, as is (no encoding); wins over the URL's.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The password, read from a file (relative: from `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing, deserialize_with = "secret_file")]
    pub password_file: Option<Secret>,
    #[serde(default)]
    pub backup: bool,
}

/// Recovery objectives (`[objectives]`), in minutes; the defaults are the guide's table, with
/// an hour's grace on the daily ones for the job itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Objectives {
    /// Age of the newest good logical dump.
    pub dump_rpo_minutes: u64,
    /// Measured restore time of a dump (by `verify`).
    pub dump_rto_minutes: u64,
    /// Age of the newest archived WAL while the server is up.
    pub wal_rpo_minutes: u64,
    /// Measured recovery time of a base backup (by `verify`).
    pub pitr_rto_minutes: u64,
    /// Age of the newest object backup run.
    pub objects_rpo_minutes: u64,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            dump_rpo_minutes: 25 * 60,
            dump_rto_minutes: 60,
            wal_rpo_minutes: 15,
            pitr_rto_minutes: 15,
            objects_rpo_minutes: 25 * 60,
        }
    }
}

/// How long backups are kept (`[retention]`); the defaults are the guide's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Time zone of the calendar months and years (IANA name).
    pub time_zone: TimeZone,
    /// Every logical dump of the last N days.
    pub daily_days: u32,
    /// The first dump of each month, for N months.
    pub monthly_months: u32,
    /// The first dump of each year, for N years; unset: forever.
    pub yearly_years: Option<u32>,
    /// Point-in-time recovery window: base backups and WAL to recover any moment of N days.
    pub pitr_days: u32,
    /// Storage class a dump moves to when it is kept only as its month's first.
    #[serde(deserialize_with = "storage_class_opt")]
    pub monthly_class: Option<String>,
    /// Storage class a dump moves to when it is kept only as its year's first.
    #[serde(deserialize_with = "storage_class_opt")]
    pub yearly_class: Option<String>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            time_zone: TimeZone::utc(),
            daily_days: 30,
            monthly_months: 12,
            yearly_years: None,
            pitr_days: 7,
            monthly_class: Some("GLACIER".into()),
            yearly_class: Some("GLACIER".into()),
        }
    }
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
    #[serde(default = "sixteen")]
    pub transfers: usize,
    /// Metadata requests (HEAD, DELETE) at once.
    #[serde(default = "sixteen")]
    pub checkers: usize,
    /// How long an object deleted or overwritten in the source stays restorable.
    #[serde(default = "ninety")]
    pub history_days: u32,
    /// Multipart part size in MiB for large objects (every part but the last this size).
    #[serde(default = "eight")]
    pub part_size_mib: u64,
}

fn sixteen() -> usize {
    16
}

fn ninety() -> u32 {
    90
}

fn eight() -> u64 {
    8
}
