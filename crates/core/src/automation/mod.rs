//! Running lifeboat unattended: jobs of steps under the run lock ([`jobs`]), with a report
//! ([`report`]) sent where it is wanted ([`notify`]); the daemon that runs them on their
//! schedules and serves `/metrics` and `/healthz` ([`daemon`], [`http`]); the state of every
//! asset against its recovery objectives ([`status`], as Prometheus text by [`metrics`]); and
//! the check of everything a run needs ([`doctor`]).

pub mod daemon;
pub mod doctor;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod status;
mod steps;
