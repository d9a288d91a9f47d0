//! The state of the assets and of the daemon's job runs as Prometheus metrics, encoded by
//! prometheus-client (which escapes label values: a job named `night"ly` is one valid line).
//!
//! What is rendered is a [`Snapshot`] collected beforehand (by the daemon on a timer and after
//! each job, or by `status --prometheus`): a scrape never reads the repository. Assets are
//! labelled `kind` and `name`, jobs `job_name` (Prometheus owns `job`); durations are seconds.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::status::AssetStatus;
use crate::storage::RequestCounts;
pub use crate::version::{BuildInfo, BUILD, VERSION};

/// The assets' status as last collected.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The assets as of the last collection that read the repository.
    pub assets: Vec<AssetStatus>,
    /// When that collection ended; `None` before the first.
    pub collected_at: Option<Timestamp>,
    /// Whether the last attempt read the repository.
    pub up: bool,
    /// Why the last attempt did not.
    pub error: Option<String>,
}

impl Snapshot {
    /// A successful collection at `at`.
    pub fn collected(assets: Vec<AssetStatus>, at: Timestamp) -> Snapshot {
        Snapshot {
            assets,
            collected_at: Some(at),
            up: true,
            error: None,
        }
    }

    /// A failed attempt: the assets of the last good collection stay, marked by their age.
    pub fn failed(&mut self, error: String) {
        self.up = false;
        self.error = Some(error);
    }
}

/// A job's runs in this daemon: the last one, and totals since the daemon started.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job: String,
    pub started: Timestamp,
    pub ok: bool,
    pub seconds: f64,
    pub runs: u64,
    pub failures: u64,
    /// Bytes stored by its steps (backups, copies).
    pub stored_bytes: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetLabels {
    kind: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: String,
}

/// Registers a gauge family and sets one value per item that has one.
fn gauges<T, L, V>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    items: &[T],
    value: impl Fn(&T) -> Option<(L, V)>,
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    V: GaugeValue,
{
    let family = Family::<L, V::Gauge>::default();
    for item in items {
        if let Some((labels, v)) = value(item) {
            v.set(family.get_or_create(&labels).clone());
        }
    }
    registry.register(name, help, family);
}

/// Registers a counter family (`NAME_total`) with one value per item.
fn counters<T, L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    items: &[T],
    value: impl Fn(&T) -> (L, u64),
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for item in items {
        let (labels, v) = value(item);
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

/// A value a gauge holds: whole numbers as integers, the rest as floats.
trait GaugeValue {
    type Gauge: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    fn set(self, gauge: Self::Gauge);
}

impl GaugeValue for i64 {
    type Gauge = Gauge;
    fn set(self, gauge: Gauge) {
        gauge.set(self);
    }
}

impl GaugeValue for f64 {
    type Gauge = Gauge<f64, AtomicU64>;
    fn set(self, gauge: Self::Gauge) {
        gauge.set(self);
    }
}

/// What one rendering shows.
pub struct Render<'a> {
    pub snapshot: &'a Snapshot,
    /// The daemon's jobs; empty for `status --prometheus`.
    pub runs: &'a [JobRun],
    /// The daemon's storage requests since it started.
    pub requests: Option<&'a RequestCounts>,
    pub now: Timestamp,
}

/// The metrics, as Prometheus text.
pub fn render(what: &Render<'_>) -> String {
    let mut registry = Registry::default();
    let snapshot = what.snapshot;
    registry.register(
        "lifeboat_build",
        "The lifeboat build that serves these metrics",
        Info::new(vec![
            ("version".to_string(), BUILD.version.to_string()),
            ("commit".to_string(), BUILD.commit.to_string()),
            ("target".to_string(), BUILD.target.to_string()),
        ]),
    );
    let up = Gauge::<i64>::default();
    up.set(i64::from(snapshot.up));
    registry.register(
        "lifeboat_repository_up",
        "1 when the last collection read the repository, 0 when it could not",
        up,
    );
    if let Some(at) = snapshot.collected_at {
        let collected = Gauge::<i64>::default();
        collected.set(at.as_second());
        registry.register(
            "lifeboat_status_collected_timestamp_seconds",
            "When the assets' status below was last read from the repository",
            collected,
        );
        let age = Gauge::<f64, AtomicU64>::default();
        age.set(what.now.duration_since(at).as_secs_f64().max(0.0));
        registry.register(
            "lifeboat_status_age_seconds",
            "How old the assets' status below is",
            age,
        );
    }
    let assets = &snapshot.assets;
    let asset = |a: &AssetStatus| AssetLabels {
        kind: a.kind.clone(),
        name: a.name.clone(),
    };
    gauges(
        &mut registry,
        "lifeboat_last_success_timestamp_seconds",
        "Start of the newest good backup of the asset",
        assets,
        |a| a.last_good.map(|t| (asset(a), t.as_second())),
    );
    gauges(
        &mut registry,
        "lifeboat_backup_age_seconds",
        "Age of the newest good backup when collected (for WAL: of the newest archived segment)",
        assets,
        |a| a.age_seconds.map(|s| (asset(a), s)),
    );
    gauges(
        &mut registry,
        "lifeboat_rpo_seconds",
        "The asset's recovery point objective",
        assets,
        |a| a.rpo_seconds.map(|s| (asset(a), s as i64)),
    );
    gauges(
        &mut registry,
        "lifeboat_last_backup_size_bytes",
        "Stored size of the newest backup",
        assets,
        |a| a.size_bytes.map(|b| (asset(a), b as i64)),
    );
    gauges(
        &mut registry,
        "lifeboat_last_backup_duration_seconds",
        "How long the newest backup took",
        assets,
        |a| a.duration_seconds.map(|s| (asset(a), s)),
    );
    gauges(
        &mut registry,
        "lifeboat_last_verification_timestamp_seconds",
        "When the newest backup of the asset was last verified",
        assets,
        |a| a.last_verified.map(|t| (asset(a), t.as_second())),
    );
    gauges(
        &mut registry,
        "lifeboat_last_verification_ok",
        "1 when the asset's last verification passed, 0 when it failed",
        assets,
        |a| {
            a.last_verification_passed
                .map(|ok| (asset(a), i64::from(ok)))
        },
    );
    gauges(
        &mut registry,
        "lifeboat_verified_recovery_seconds",
        "Recovery time measured by the last verification",
        assets,
        |a| a.verified_recovery_seconds.map(|s| (asset(a), s)),
    );
    gauges(
        &mut registry,
        "lifeboat_rto_seconds",
        "The asset's recovery time objective",
        assets,
        |a| a.rto_seconds.map(|s| (asset(a), s as i64)),
    );
    let archiver = |a: &AssetStatus| a.archiver.clone();
    gauges(
        &mut registry,
        "lifeboat_wal_waiting_segments",
        "Segments waiting in pg_wal to be archived (.ready files), as the server says",
        assets,
        |a| archiver(a)?.waiting_segments.map(|n| (asset(a), n as i64)),
    );
    gauges(
        &mut registry,
        "lifeboat_wal_waiting_bytes",
        "Bytes of WAL waiting in pg_wal to be archived",
        assets,
        |a| archiver(a)?.waiting_bytes.map(|n| (asset(a), n as i64)),
    );
    gauges(
        &mut registry,
        "lifeboat_wal_queue_max_bytes",
        "[wal] queue_max_mib: past it, wal-push lets PostgreSQL drop segments unarchived",
        assets,
        |a| archiver(a)?.queue_max_bytes.map(|n| (asset(a), n as i64)),
    );
    let stream = |a: &AssetStatus| a.archiver.as_ref()?.stream.clone();
    gauges(
        &mut registry,
        "lifeboat_wal_stream_lag_bytes",
        "WAL written and not yet stored by wal-stream",
        assets,
        |a| stream(a)?.lag_bytes.map(|n| (asset(a), n)),
    );
    gauges(
        &mut registry,
        "lifeboat_wal_stream_lag_seconds",
        "How long wal-stream took to store the last WAL it stored after it was written",
        assets,
        |a| stream(a)?.lag_seconds.map(|n| (asset(a), n)),
    );
    gauges(
        &mut registry,
        "lifeboat_wal_stream_slot_retained_bytes",
        "WAL the wal-stream replication slot keeps in pg_wal",
        assets,
        |a| stream(a)?.retained_bytes.map(|n| (asset(a), n)),
    );
    gauges(
        &mut registry,
        "lifeboat_wal_stream_active",
        "1 while wal-stream reads its replication slot",
        assets,
        |a| stream(a).map(|s| (asset(a), i64::from(s.active))),
    );
    gauges(
        &mut registry,
        "lifeboat_archive_failed_count",
        "Failed archive_command attempts since the server's statistics were reset",
        assets,
        |a| archiver(a).map(|s| (asset(a), s.failed_count)),
    );
    gauges(
        &mut registry,
        "lifeboat_objective_breached",
        "1 when the asset breaches its RPO or RTO, or its WAL archive has a gap",
        assets,
        |a| Some((asset(a), i64::from(!a.ok))),
    );
    let runs = what.runs;
    let job = |r: &JobRun| JobLabels {
        job_name: r.job.clone(),
    };
    gauges(
        &mut registry,
        "lifeboat_job_last_run_timestamp_seconds",
        "When the job last ran (in this daemon)",
        runs,
        |r| Some((job(r), r.started.as_second())),
    );
    gauges(
        &mut registry,
        "lifeboat_job_last_run_ok",
        "1 when every step of the job's last run succeeded",
        runs,
        |r| Some((job(r), i64::from(r.ok))),
    );
    gauges(
        &mut registry,
        "lifeboat_job_last_run_duration_seconds",
        "How long the job's last run took",
        runs,
        |r| Some((job(r), r.seconds)),
    );
    counters(
        &mut registry,
        "lifeboat_job_runs",
        "Runs of the job since the daemon started",
        runs,
        |r| (job(r), r.runs),
    );
    counters(
        &mut registry,
        "lifeboat_job_failures",
        "Runs of the job with a failed step since the daemon started",
        runs,
        |r| (job(r), r.failures),
    );
    counters(
        &mut registry,
        "lifeboat_stored_bytes",
        "Bytes stored by the job's steps since the daemon started",
        runs,
        |r| (job(r), r.stored_bytes),
    );
    if let Some(requests) = what.requests {
        let by_kind = [
            ("list", requests.list),
            ("head", requests.head),
            ("get", requests.get),
            ("put", requests.put),
            ("copy", requests.copy),
            ("delete", requests.delete),
            ("other", requests.other),
        ];
        counters(
            &mut registry,
            "lifeboat_storage_requests",
            "Storage requests sent since the daemon started, by kind",
            &by_kind,
            |(kind, n)| {
                (
                    RequestLabels {
                        kind: kind.to_string(),
                    },
                    *n,
                )
            },
        );
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a string cannot fail");
    out
}

#[cfg(test)]
mod tests;
