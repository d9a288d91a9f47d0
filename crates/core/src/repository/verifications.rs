//! Verification results, as recorded in the repository (`verifications/<backup>.json`, the
//! latest of each backup) and read back by `list`, `show` and `status`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::repository::manifest::BackupKind;
use crate::repository::Repository;

pub const VERIFICATION_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// The stored bytes do not match the manifest: the backup is damaged, not just failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub damaged: bool,
}

impl Check {
    pub fn passed(name: &str, detail: String) -> Check {
        Check {
            name: name.into(),
            passed: true,
            detail,
            damaged: false,
        }
    }

    pub fn failed(name: &str, detail: String) -> Check {
        Check {
            name: name.into(),
            passed: false,
            detail,
            damaged: false,
        }
    }

    /// The stored bytes' check, failed: the backup is damaged.
    pub fn damaged(detail: String) -> Check {
        Check {
            damaged: true,
            ..Check::failed("stored bytes", detail)
        }
    }
}

/// The result of one verification, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub format: u32,
    pub backup: String,
    pub kind: BackupKind,
    pub database: String,
    pub verified_at: Timestamp,
    pub quick: bool,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// From the first byte downloaded to a database that answers: the measured recovery time.
    pub recovery_seconds: Option<f64>,
    pub rto_seconds: Option<u64>,
    pub within_rto: Option<bool>,
    pub lifeboat: String,
}

impl Verification {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// The failed check that found the backup damaged, if one did.
    pub fn damage(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.damaged)
    }
}

pub fn verification_path(id: &str) -> String {
    crate::repository::layout::verification(id)
}

/// Every recorded verification (the latest of each backup), oldest first.
pub async fn list_verifications(repo: &Repository) -> Result<Vec<Verification>> {
    let prefix = crate::repository::layout::Area::Verifications.dirname();
    let mut out: Vec<Verification> = repo.storage().read_records(prefix, "verification").await?;
    out.sort_by_key(|v| v.verified_at);
    Ok(out)
}
