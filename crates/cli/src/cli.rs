//! The command line: flags and subcommands as parsed, with no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What `--help` says after the flags: the environment, and the exit codes.
const AFTER_HELP: &str = "\
Environment:
  LIFEBOAT_CONFIG        configuration file when --config is not given
  LIFEBOAT_LOG           log filter (tracing syntax), e.g. `debug` or `lifeboat_core=trace`
  LIFEBOAT_LOG_FORMAT    `text` (default) or `json`, as --log-format
  LIFEBOAT_PG_BIN_DIR    folder of the PostgreSQL programs (default: the newest under
                         /usr/lib/postgresql/*/bin, then PATH); also [tools] pg_bin_dir
  CREDENTIALS_DIRECTORY  systemd credentials: a relative `*_file` path is read from here
  TMPDIR                 where `restore db --spool` spools and verification runs its server
  ${VAR}                 any variable named in the configuration file
Exit codes:
  0 ok, 1 failed, 2 usage, 3 damaged backup, 4 objectives breached, 5 repository locked by
  another run, 6 not a lifeboat repository, 75 temporary failure (storage or server
  unreachable: try again later), 130 interrupted; wal-fetch: 1 not in the archive, 255 failed";

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version = lifeboat_core::VERSION,
    about = "Backup and restore for PostgreSQL, S3-compatible object storage and Redis.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file [default: $LIFEBOAT_CONFIG, else ./lifeboat.toml, else built-in defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LIFEBOAT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Read from copy NAME of the repository (`[repository.copies.NAME]`) instead of the
    /// repository: for `list`, `show`, `status`, `restore`, `verify`, `wal-fetch`, `prune`
    /// (with the copy's retention) and `undelete`.
    #[arg(long, global = true, value_name = "NAME")]
    pub from: Option<String>,

    /// Wait up to this long for what is not ready yet instead of failing at once: another
    /// run's lock on the repository (`backup`, `prune`, `run`), an archived backup's restore
    /// request (`restore db`, `restore pitr`, `verify`).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mark the configured location as a lifeboat repository.
    Init,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage encryption keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Take a backup.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// List the backups in the repository (`list wal`: the WAL archive's timelines and gaps).
    List {
        #[arg(value_enum)]
        what: Option<ListWhat>,
    },
    /// Show one backup in full.
    Show {
        /// Backup id, a unique prefix of one, or `latest`.
        id: String,
    },
    /// Restore a backup.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Run a job (default `daily`): its steps in order, under the repository's lock; notify.
    Run {
        /// The job (`[jobs.NAME]`; built in: `daily`, `weekly`).
        #[arg(default_value = "daily")]
        job: String,
    },
    /// Run the jobs on their schedules; serve /metrics and /healthz (`daemon.listen`).
    Daemon {
        /// Run every scheduled job once at start, then follow the schedules.
        #[arg(long)]
        run_at_start: bool,
    },
    /// Each asset against its recovery objectives; exits 4 when one is breached.
    Status {
        /// Also write the status as Prometheus metrics to FILE, atomically, for node_exporter's
        /// textfile collector (written with `lifeboat_repository_up 0` when the repository
        /// cannot be read).
        #[arg(long, value_name = "FILE")]
        prometheus: Option<std::path::PathBuf>,
    },
    /// Check everything a run needs and say what to fix.
    Doctor,
    /// Prove that a backup restores: into a throwaway PostgreSQL, with checks and the recovery
    /// time measured; the result is recorded in the repository.
    Verify {
        /// Backup id, a unique prefix of one, or `latest`.
        #[arg(default_value = "latest")]
        id: String,
        /// Only backups of this kind (with `latest`).
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Check the stored bytes and the table of contents only, without restoring.
        #[arg(long)]
        quick: bool,
        /// Parallel pg_restore jobs for a dump (1 or more).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: u32,
        /// age identity file for an encrypted backup [default: `encryption.identity_file`].
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        thaw: ThawArgs,
    },
    /// Copy committed backups and the WAL archive to the repository's copies
    /// (`[repository.copies.NAME]`), each object checked by hash there, manifests last; then
    /// prune each copy with its own retention.
    Copy {
        /// Only this copy [default: every one].
        name: Option<String>,
        /// Show what would be copied, copy nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply the retention policy: show the plan, then delete, promote and expire what it says.
    Prune {
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Plan as at this moment instead of now (RFC 3339; without an offset, in `[daemon] time_zone` (else the system's zone)).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Also remove backups whose manifest is damaged (unreadable), with their data.
        #[arg(long)]
        force: bool,
    },
    /// Print the S3 lifecycle rules that match the repository and the policy (`--apply` sets
    /// them), or R2's bucket lock rules (`--locks`, `--check-locks FILE`).
    Lifecycle {
        /// Set the rules on the repository's bucket, keeping its other rules.
        #[arg(long)]
        apply: bool,
        /// Print the Cloudflare R2 bucket lock rules that match the policy instead (for
        /// `wrangler r2 bucket lock set BUCKET --file FILE`).
        #[arg(long, conflicts_with = "apply")]
        locks: bool,
        /// Check a bucket's R2 lock rules (JSON, as `--locks` prints them or Cloudflare's API
        /// gives them) against the policy.
        #[arg(long, value_name = "FILE", conflicts_with = "apply")]
        check_locks: Option<PathBuf>,
    },
    /// Show again the backups a leaked key hid: in a bucket that keeps versions (Object Lock),
    /// a delete without a version only hides an object behind a delete marker; this finds
    /// the repository's hidden objects and removes their markers.
    Undelete {
        /// Show what is hidden, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Disaster-recovery drill on throwaway parts: sample database, backup, restore, verify,
    /// point-in-time recovery, each step timed. It touches no repository but its own.
    Drill,
    /// Create a restore point on the server (`pg_create_restore_point`) and record it, for
    /// `restore pitr --target-name NAME` (before a migration, a bulk change).
    Mark {
        /// The restore point's name.
        name: String,
        /// The database (`[postgres.NAME]`) [default: the only one].
        #[arg(long)]
        db: Option<String>,
    },
    /// Remove the repository's run lock left by a run that died (killed, its host lost);
    /// refused while the holder is alive.
    Unlock {
        /// Show whose lock would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Archive one WAL file: PostgreSQL's `archive_command = 'lifeboat wal-push %p'` (with
    /// several archiving clusters, `wal-push --db NAME %p`).
    WalPush {
        /// The cluster (`[postgres.NAME]`) whose WAL this is [default: the only one with
        /// `pitr = true`].
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// The file, as PostgreSQL gives it (`%p`, relative to the data folder).
        path: PathBuf,
    },
    /// Record a cluster's new generation after a major upgrade (`pg_upgrade`), so that its
    /// archiving resumes, and take the generation's first base backup.
    Upgrade {
        /// The cluster (`[postgres.NAME]`), its server now on the new major version.
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// Record the generation but take no base backup (take one before relying on PITR).
        #[arg(long)]
        no_backup: bool,
        /// Show what would be recorded; record nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stream WAL from a replication slot into the repository (long-running; PostgreSQL 15
    /// and later): a recovery point seconds old, or none lost with `[wal] stream_sync`.
    /// Stops cleanly on SIGTERM, storing what it received.
    WalStream {
        /// The cluster (`[postgres.NAME]`) [default: the only one with `pitr = true`].
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// Check the server, measure its WAL rate and show what the stream would cost in
        /// requests; stream nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read the archived WAL: what happened, and when.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Restore one WAL file: PostgreSQL's `restore_command = 'lifeboat wal-fetch %f %p'`.
    /// Exits 1 without a message when the archive does not have the file, and 255 when it
    /// fails otherwise, so that PostgreSQL stops recovery instead of ending it there.
    WalFetch {
        /// The cluster (`[postgres.NAME]`) [default: the only one with `pitr = true`].
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// The cluster's generation to read [default: its newest] (`lifeboat list wal`).
        #[arg(long, value_name = "N")]
        generation: Option<u32>,
        /// The file name (`%f`).
        name: String,
        /// Where to write it (`%p`).
        dest: PathBuf,
    },
    /// Download WAL segments into the spool ahead of `wal-fetch` (started by it, in the
    /// background).
    #[command(hide = true)]
    WalPrefetch {
        #[arg(long)]
        db: Option<String>,
        #[arg(long)]
        generation: Option<u32>,
        names: Vec<String>,
    },
    /// Push the segments PostgreSQL marked ready after this one (started by `wal-push`, in the
    /// background).
    #[command(hide = true)]
    WalPushAhead {
        #[arg(long)]
        db: Option<String>,
        path: PathBuf,
    },
    /// Print a shell completion script, e.g. `lifeboat completions bash >
    /// /etc/bash_completion.d/lifeboat`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`lifeboat.1` and one per command) into a folder.
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Kill the process groups named on stdin once stdin closes (started by lifeboat, which
    /// registers its children there, so that they die with it).
    #[command(hide = true)]
    Watchdog,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    Db,
    Base,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ListWhat {
    /// The WAL archive: timelines, segments, gaps.
    Wal,
    /// The runs of every object backup (`[objects.NAME]`).
    Objects,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// The transactions in the archived WAL of a window that changed the tables named (rows
    /// inserted, updated, deleted; truncated, dropped) or definitions (`--ddl`), with their
    /// commit times and ids, the restore points among them, and for each the command that
    /// recovers the data as it was just before it.
    Find {
        /// A table to follow, as `SCHEMA.NAME` (several allowed).
        #[arg(long = "table", value_name = "SCHEMA.NAME")]
        tables: Vec<String>,
        /// Also the transactions that changed definitions (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`).
        #[arg(long)]
        ddl: bool,
        /// The window's start [default: an hour before `--until`]; a time as `restore pitr
        /// --target-time` takes it.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The window's end [default: now].
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// The cluster (`[postgres.NAME]`), when several archive into the repository.
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// List at most this many transactions, the first in the window (the rest are
        /// counted, with when the first of them ended: start a narrower window there).
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
        /// age identity file for an encrypted archive [default: `encryption.identity_file`].
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new age identity to FILE and print its public key (the recipient).
    Generate {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Logical backup of a database with pg_dump (custom format).
    Db(BackupDbArgs),
    /// Physical base backup of a database's cluster with pg_basebackup, for point-in-time recovery.
    Base {
        /// The configured database (`[postgres.NAME]`) whose server to back up.
        #[arg(long, value_name = "NAME")]
        db: Option<String>,
        /// Only what changed since the newest base backup of the same cluster (PostgreSQL 17
        /// and later, `summarize_wal = on`); a full backup when that cannot be, saying why.
        #[arg(long)]
        incremental: bool,
    },
    /// An RDB snapshot of Redis (only with `[redis] backup = true`: Redis is ephemeral by design).
    Redis,
    /// Copy a bucket into its backup bucket, keeping what the source deleted or overwrote.
    Objects {
        /// The configured object backup (`[objects.NAME]`); needed when several are configured.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Show what would be copied and moved to history; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct BackupDbArgs {
    /// The configured database (`[postgres.NAME]`); needed when several are configured.
    #[arg(long, value_name = "NAME")]
    pub db: Option<String>,
    /// Dump only the schema, no data.
    #[arg(long)]
    pub schema_only: bool,
    /// Dump only this schema (repeatable; exact, case-sensitive name).
    #[arg(long = "schema", value_name = "SCHEMA")]
    pub schemas: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore a logical backup into a database with pg_restore.
    Db(RestoreDbArgs),
    /// Point-in-time recovery: a base backup into an empty data folder, then WAL to the target.
    Pitr(RestorePitrArgs),
    /// Put a bucket (or a prefix of it) back as it was at a run of its object backup.
    Objects(RestoreObjectsArgs),
    /// Tables as they were at a moment, beside the live ones under new names (recovered on a
    /// throwaway server from a base backup and the WAL archive, or from a dump).
    Table(RestoreTableArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("naming").args(["as_name", "schema"])))]
pub struct RestoreTableArgs {
    /// The tables, as SCHEMA.TABLE (case-sensitive; double-quote a part that holds a dot or a
    /// quote: core."Comic Pages").
    #[arg(required = true, value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// The moment: 2026-12-01T14:04:00+07:00, 2026-12-01T14:04[Asia/Jakarta], or
    /// `2026-12-01 14:04` without an offset, in `[daemon] time_zone` (else the system's zone).
    #[arg(
        long,
        value_name = "TIME",
        required_unless_present = "before_xid",
        conflicts_with = "before_xid"
    )]
    pub as_of: Option<String>,
    /// As of just before transaction XID committed, every earlier commit included (`lifeboat
    /// wal find --table` lists the transactions that changed a table, and their ids).
    #[arg(long, value_name = "XID", conflicts_with = "from_dump")]
    pub before_xid: Option<u32>,
    /// The live database the copies go into: a configured name or a `postgresql://` URL.
    #[arg(long, value_name = "URL|NAME")]
    pub into: String,
    /// The copy's name (one table) [default: beside the live table, its name followed by the
    /// moment, e.g. core.comic_20261201_070400].
    #[arg(long = "as", value_name = "SCHEMA.NAME")]
    pub as_name: Option<String>,
    /// Put the copies in this schema under their own names (created if needed).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// Load the rows into an existing table (named by `--as` or `--schema`).
    #[arg(long)]
    pub data_only: bool,
    /// Recover from the newest dump before the moment (when no WAL covers it): the data is as
    /// old as that dump.
    #[arg(long)]
    pub from_dump: bool,
    /// The configured database whose backups are used [default: `--into` if it is one].
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Say which backup and WAL would be used, how much is downloaded and how long it should
    /// take; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folder for the throwaway server [default: the temp folder]; it needs room for the base
    /// backup (with `--from-dump`, for the tables restored).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// age identity file for an encrypted repository.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreObjectsArgs {
    /// The configured object backup (`[objects.NAME]`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Restore as of the latest run not after this moment [default: the latest run].
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Restore into this bucket (same account as the source) instead of the source.
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
    pub to: Option<String>,
    /// Only objects whose key starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Also delete objects of the target that the run did not hold.
    #[arg(long)]
    pub delete: bool,
    /// Show what would be restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["target_time", "target_lsn", "latest", "target_immediate", "target_name", "before_xid"])))]
pub struct RestorePitrArgs {
    /// The data folder to create (it must be empty or absent).
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The cluster (`[postgres.NAME]`) to recover, when the repository holds several.
    #[arg(long, value_name = "NAME")]
    pub db: Option<String>,
    /// Recover up to this moment: 2026-02-22T01:00:00+07:00, 2026-02-22T01:00[Asia/Jakarta],
    /// or `2026-02-22 01:00` without an offset, in `[daemon] time_zone` (else the system's zone).
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover up to this WAL position (e.g. 0/3000060).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover everything archived.
    #[arg(long)]
    pub latest: bool,
    /// Recover only to the base backup's consistent end: the fastest recovery.
    #[arg(long)]
    pub target_immediate: bool,
    /// Recover to a restore point made with `lifeboat mark NAME` (`list wal` shows them).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Recover to just before transaction XID committed, every earlier commit included
    /// (`lifeboat wal find` lists transactions and their ids).
    #[arg(long, value_name = "XID")]
    pub before_xid: Option<u32>,
    /// The timeline to follow: `latest` (the newest that branched off the base backup's),
    /// `current` (the base backup's), or a timeline's number (`lifeboat list wal` shows them).
    #[arg(long, value_name = "latest|current|N", default_value = "latest")]
    pub target_timeline: String,
    /// What the server does at the target.
    #[arg(long, value_enum, default_value = "promote")]
    pub target_action: TargetActionArg,
    /// Start the server, wait for recovery, report the moment reached and the time taken.
    #[arg(long)]
    pub start: bool,
    /// Port for the started server [default: the backup's].
    #[arg(long)]
    pub port: Option<u16>,
    /// Socket folder for the started server [default: the backup's].
    #[arg(long, value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    /// The recovered server is the new primary: it archives its new timeline into the
    /// repository. Without it, archiving is off, and the recovery changes nothing there.
    #[arg(long)]
    pub promote_as_primary: bool,
    /// Archiving off (the default; kept for scripts that pass it).
    #[arg(long, hide = true, conflicts_with = "promote_as_primary")]
    pub no_archive: bool,
    /// Recover from this base backup (an id from `lifeboat list`) instead of the newest that
    /// ended before the target: e.g. an earlier full one when an incremental's chain is broken.
    #[arg(long, value_name = "ID")]
    pub base: Option<String>,
    /// age identity file for an encrypted repository.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub thaw: ThawArgs,
}

/// How a backup that retention moved to an archive tier (GLACIER, DEEP_ARCHIVE) is read back.
#[derive(Debug, Args)]
pub struct ThawArgs {
    /// Restore-request tier for an archived backup: expedited (minutes, dearest), standard
    /// (hours) or bulk (cheapest, slowest). `--wait SECONDS` waits for it.
    #[arg(long, value_enum, default_value = "standard")]
    pub tier: TierArg,
}

impl ThawArgs {
    /// With `wait`, the global `--wait`: how long to wait for the restore request.
    pub fn thaw(&self, wait: std::time::Duration) -> lifeboat_core::storage::s3::tiers::Thaw {
        lifeboat_core::storage::s3::tiers::Thaw {
            tier: match self.tier {
                TierArg::Expedited => "Expedited",
                TierArg::Standard => "Standard",
                TierArg::Bulk => "Bulk",
            }
            .into(),
            wait,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TierArg {
    Expedited,
    Standard,
    Bulk,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TargetActionArg {
    Promote,
    Pause,
}

#[derive(Debug, Args)]
pub struct RestoreDbArgs {
    /// Backup id, a unique prefix of one, or `latest`.
    pub id: String,
    /// Target: a configured database name, or a `postgresql://` URL (put the password in
    /// $PGPASSWORD, not in the URL, so that `ps` does not show it).
    #[arg(long, value_name = "URL|NAME")]
    pub into: String,
    /// Parallel workers: into an existing database, each index build gets N-1 (the restore
    /// stays one transaction); with --create or --spool, N sessions loading tables in
    /// parallel (with --create, as the archive arrives, through a spool file that holds a
    /// window of it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// Into an existing database: spool the archive to a temporary file (disk for all of
    /// it) and, once it is verified, load tables in parallel with `pg_restore --jobs`, not in
    /// one transaction (a failure leaves part of the backup). With --create (where --jobs N
    /// does it anyway): tables load in pieces on N sessions while the archive still arrives
    /// (a large table on all of them), each table's indexes built as soon as it is in, into
    /// a database that appears only once whole; the spool holds a window of the archive (N+1
    /// pieces of at most 64 MiB), and --spool makes a spool that cannot be made an error
    /// instead of a restore in one stream.
    #[arg(long)]
    pub spool: bool,
    /// Drop objects before recreating them.
    #[arg(long)]
    pub clean: bool,
    /// Do not restore ownership and privileges (for a target without the same roles).
    #[arg(long)]
    pub no_owner: bool,
    /// Create the target database (it must not exist), with the backup's owner, encoding,
    /// locale and `ALTER DATABASE ... SET` settings: for an empty server. It is restored as
    /// NAME_lifeboat_partial and renamed once whole and checked; a failed restore drops it.
    #[arg(long)]
    pub create: bool,
    /// Create the roles and memberships of the backup's cluster that the server lacks, before
    /// restoring (existing roles are kept as they are); says what it did.
    #[arg(long)]
    pub globals: bool,
    /// With --globals: also alter existing roles (attributes, password) to match the backup.
    #[arg(long, requires = "globals")]
    pub replace_roles: bool,
    /// Restore only this table (repeatable), as SCHEMA.TABLE.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Restore only this schema (repeatable).
    #[arg(long = "schema", value_name = "SCHEMA")]
    pub schemas: Vec<String>,
    /// Restore only the data.
    #[arg(long)]
    pub data_only: bool,
    /// Restore only the schema.
    #[arg(long)]
    pub schema_only: bool,
    /// age identity file for an encrypted backup [default: `encryption.identity_file`].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Folder for the spool file of --spool or of a parallel --create [default: the temp
    /// folder].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    #[command(flatten)]
    pub thaw: ThawArgs,
}
