//! Verification: proof that a backup restores, on throwaway parts, with the recovery time
//! measured; the result is recorded in the repository (`verifications/<backup>.json`).
//!
//! A logical dump is restored into a scratch cluster (initdb in a temporary folder, its own
//! socket and port); a base backup is unpacked and recovered to its end with the archived WAL,
//! then started. Then the checks: row counts as recorded (dumps), critical tables not empty,
//! configured SQL checks true. The scratch cluster is removed whatever happens (a stop request
//! ends the restore, and the cluster goes with it). `--quick` only reads the stored bytes
//! against the manifest's hash and asks `pg_restore` (or `tar`) to read their table of
//! contents. Needs the repository and, for encrypted backups, the identity: nothing in
//! production.
//!
//! [`scratch`] restores onto throwaway parts; [`checks`] checks what was restored and runs the
//! quick check; [`crate::repository::verifications`] keeps the results; [`drill`] rehearses a whole disaster.

mod checks;
pub mod drill;
mod scratch;

use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;

use crate::error::Result;
use crate::repository::manifest::BackupKind;
use crate::repository::{Repository, Selector};
use crate::Context;

pub use crate::repository::verifications::{
    list_verifications, verification_path, Check, Verification, VERIFICATION_FORMAT,
};

#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Backup id, unique prefix, or `latest`.
    pub backup: String,
    pub kind: Option<BackupKind>,
    pub quick: bool,
    pub identity: Option<PathBuf>,
    /// pg_restore jobs for a dump.
    pub jobs: u32,
    /// How a backup in an archive tier is read back.
    pub thaw: crate::storage::s3::tiers::Thaw,
}

/// Verifies one backup and records the result (a failed check is a result, not an error).
pub async fn verify_backup(
    ctx: &Context,
    repo: &Repository,
    request: &VerifyRequest,
) -> Result<Verification> {
    let manifest = repo
        .find(&Selector {
            id: &request.backup,
            kind: request.kind,
            ..Selector::default()
        })
        .await?;
    // An archived backup is restored by the storage first (or said not to be ready): not a
    // failed verification.
    crate::storage::s3::tiers::ensure_readable(
        repo.storage(),
        &manifest.id,
        &[manifest.data.as_str()],
        &request.thaw,
        &ctx.cancel,
    )
    .await?;
    let database = ctx.config.postgres.get(&manifest.database).cloned();
    let mut checks = Vec::new();
    let mut recovery_seconds = None;
    if request.quick || manifest.kind == BackupKind::Redis {
        checks.push(checks::quick_check(ctx, repo, &manifest, request).await?);
    } else {
        let started = Instant::now();
        let restored = match manifest.kind {
            BackupKind::Db => {
                scratch::restore_dump(ctx, repo, &manifest, request, &mut checks).await?
            }
            BackupKind::Base => {
                scratch::recover_base(ctx, repo, &manifest, request, &mut checks).await?
            }
            BackupKind::Redis => unreachable!("redis snapshots are checked like --quick"),
        };
        if let Some(target) = restored {
            recovery_seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            checks::run_checks(&target, database.as_ref(), &mut checks);
            drop(target);
        }
    }
    let objectives = &ctx.config.objectives;
    let rto_seconds = recovery_seconds.map(|_| {
        60 * match manifest.kind {
            BackupKind::Base => objectives.pitr_rto_minutes,
            BackupKind::Db | BackupKind::Redis => objectives.dump_rto_minutes,
        }
    });
    let verification = Verification {
        format: VERIFICATION_FORMAT,
        backup: manifest.id.clone(),
        kind: manifest.kind,
        database: manifest.database.clone(),
        verified_at: Timestamp::now(),
        quick: request.quick || manifest.kind == BackupKind::Redis,
        passed: checks.iter().all(|c| c.passed),
        checks,
        recovery_seconds,
        rto_seconds,
        within_rto: recovery_seconds
            .zip(rto_seconds)
            .map(|(took, rto)| took <= rto as f64),
        lifeboat: env!("CARGO_PKG_VERSION").into(),
    };
    let json = serde_json::to_vec_pretty(&verification).expect("verifications serialize");
    match repo
        .storage()
        .write(&verification_path(&manifest.id), json)
        .await
    {
        Ok(()) => {}
        // The verdict stands; only `status` will not know of it. A storage that does not
        // answer is worth the retry, which then records it.
        Err(e) if !e.is_temporary() => tracing::warn!(
            "the verification of `{}` could not be recorded in the repository, so `status` will not see it: {e}",
            manifest.id
        ),
        Err(e) => return Err(e),
    }
    Ok(verification)
}
