//! The S3 extras as one capability: what can be asked of a bucket beyond keeping objects
//! (storage classes, lifecycle rules, archive tiers, Object Lock holds, versions), as one
//! [`S3Call`] answered by one [`S3Reply`]. A backend that is an S3 bucket answers it through
//! [`super::api::S3Api::call`]; any other answers it as a plain store does
//! ([`crate::storage::backend::plain`]); a layer forwards it, or changes what it must (the dry
//! run shows the calls that write). Typed methods on `dyn Backend` ask each call.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::LockMode;

/// One request of the S3 extras.
#[derive(Debug, Clone)]
pub enum S3Call {
    /// Moves an object to another storage class (a copy onto itself).
    SetClass { key: String, class: String },
    /// The bucket's lifecycle rules (XML), replaced first when `replace` is given.
    Lifecycle { replace: Option<String> },
    /// Whether an object can be read now (archive tiers).
    Readiness { key: String },
    /// Asks for a readable copy of an archived object for `days` days, served at `tier`.
    RequestRestore {
        key: String,
        days: u32,
        tier: String,
    },
    /// Whether the bucket has S3 Object Lock enabled.
    HoldEnabled,
    /// An object's hold.
    Hold { key: String },
    /// Holds an object until `until`.
    SetHold {
        key: String,
        mode: LockMode,
        until: Timestamp,
    },
    /// Deletes every version of an object; a held version stops it and is reported.
    DeleteVersions { key: String },
    /// Keys below `prefix` hidden behind a delete marker; with `show`, the markers go.
    Hidden { prefix: String, show: bool },
}

impl S3Call {
    /// What the call does, as an error message says it ("... `key`").
    pub fn op(&self) -> &'static str {
        match self {
            S3Call::SetClass { .. } => "changing the storage class of",
            S3Call::Lifecycle { .. } => "reading the lifecycle rules of",
            S3Call::Readiness { .. } => "checking",
            S3Call::RequestRestore { .. } => "requesting the restore of",
            S3Call::HoldEnabled => "reading the Object Lock configuration of",
            S3Call::Hold { .. } => "checking the lock of",
            S3Call::SetHold { .. } => "locking",
            S3Call::DeleteVersions { .. } => "deleting",
            S3Call::Hidden { .. } => "listing the versions of",
        }
    }

    /// The key (or prefix) it is about; empty for the bucket itself.
    pub fn key(&self) -> &str {
        match self {
            S3Call::SetClass { key, .. }
            | S3Call::Readiness { key }
            | S3Call::RequestRestore { key, .. }
            | S3Call::Hold { key }
            | S3Call::SetHold { key, .. }
            | S3Call::DeleteVersions { key } => key,
            S3Call::Hidden { prefix, .. } => prefix,
            S3Call::Lifecycle { .. } | S3Call::HoldEnabled => "",
        }
    }
}

/// The answer to an [`S3Call`], of the call's kind.
#[derive(Debug, Clone)]
pub enum S3Reply {
    Done,
    Lifecycle(Option<String>),
    Readiness(Option<Readiness>),
    Enabled(bool),
    Hold(Option<Held>),
    Deletion(Deletion),
    Keys(Vec<String>),
}

/// An object's hold (S3 Object Lock retention): its mode and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    pub until: Timestamp,
}

/// What became of a deletion of every version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// No version is left (or there was none).
    Deleted,
    /// A version is locked until `until`: that one and the newer ones are left as they were.
    Locked { until: Timestamp },
}

/// Storage classes whose objects must be restored before they can be read (Glacier Instant
/// Retrieval and the infrequent-access classes read at once).
pub fn needs_restore(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Readiness {
    /// In a class read at once (or not on S3).
    Readable,
    /// In an archive class, with no restored copy and none on the way.
    Archived { class: String },
    /// A restore was requested and is not done.
    Restoring { class: String },
    /// A restored copy can be read until `until` (as S3 gives it).
    Restored {
        class: String,
        until: Option<String>,
    },
}

impl Readiness {
    pub fn readable(&self) -> bool {
        matches!(self, Readiness::Readable | Readiness::Restored { .. })
    }

    /// From an object's `x-amz-storage-class` and `x-amz-restore` headers.
    pub fn from_headers(class: Option<&str>, restore: Option<&str>) -> Readiness {
        let Some(class) = class.filter(|c| needs_restore(c)) else {
            return Readiness::Readable;
        };
        let class = class.to_string();
        let Some(restore) = restore else {
            return Readiness::Archived { class };
        };
        // `ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`
        if restore.contains("ongoing-request=\"true\"") {
            return Readiness::Restoring { class };
        }
        let until = restore
            .split_once("expiry-date=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(date, _)| date.to_string());
        Readiness::Restored { class, until }
    }
}
