//! `verify`: a backup restored on throwaway parts and checked; the command fails (exit 3)
//! when it does not restore as recorded.

use std::path::PathBuf;

use lifeboat_core::repository::manifest::BackupKind;
use lifeboat_core::repository::Repository;
use lifeboat_core::units::human_duration;
use lifeboat_core::{verify, Context, Error, Result};

use crate::cli::KindArg;
use crate::output::{emit, print_json};

pub fn request(
    id: &str,
    kind: Option<KindArg>,
    quick: bool,
    jobs: u32,
    identity: Option<PathBuf>,
) -> verify::VerifyRequest {
    verify::VerifyRequest {
        backup: id.to_string(),
        kind: kind.map(|k| match k {
            KindArg::Db => BackupKind::Db,
            KindArg::Base => BackupKind::Base,
        }),
        quick,
        identity,
        jobs,
        ..Default::default()
    }
}

pub async fn verify(ctx: &Context, request: &verify::VerifyRequest, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let v = verify::verify_backup(ctx, &repo, request).await?;
    if json {
        print_json(&v)?;
    } else {
        emit(&show_verification(&v))?;
    }
    if let Some(check) = v.damage() {
        return Err(Error::Integrity {
            id: v.backup.clone(),
            detail: check.detail.clone(),
        });
    }
    match v.failures().first() {
        None => Ok(()),
        Some(check) => Err(Error::Mismatch {
            id: v.backup.clone(),
            detail: format!(
                "verification failed: {}: {}{}",
                check.name,
                check.detail,
                match v.failures().len() {
                    1 => String::new(),
                    n => format!(" (and {} more failed checks)", n - 1),
                }
            ),
        }),
    }
}

pub fn show_verification(v: &verify::Verification) -> String {
    let mut out = format!(
        "verification of {} at {}: {}{}\n",
        v.backup,
        v.verified_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        if v.passed { "passed" } else { "FAILED" },
        if v.quick { " (quick)" } else { "" }
    );
    if let (Some(took), Some(rto)) = (v.recovery_seconds, v.rto_seconds) {
        out.push_str(&format!(
            "  recovery time {}, objective {}: {}\n",
            human_duration(took),
            human_duration(rto as f64),
            if took <= rto as f64 {
                "met"
            } else {
                "EXCEEDED"
            }
        ));
    }
    for check in &v.checks {
        out.push_str(&format!(
            "  {} {}: {}\n",
            if check.passed { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        ));
    }
    out
}
