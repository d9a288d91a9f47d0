//! `prune`: the retention plan shown, then carried out (against a storage that only shows
//! what it would do, with `--dry-run`).

use lifeboat_core::repository::Repository;
use lifeboat_core::{execute_prune, plan_prune, PrunePlan};
use lifeboat_core::{Context, Result};

use crate::output::{emit, parse_time, print_json};

pub async fn prune(
    ctx: &Context,
    dry_run: bool,
    force: bool,
    at: Option<&str>,
    json: bool,
) -> Result<()> {
    let at = match at {
        Some(text) => parse_time(ctx, text)?,
        None => jiff::Timestamp::now(),
    };
    if dry_run {
        // The plan is carried out against storage that shows each deletion and promotion
        // instead of making it.
        let env = ctx.storage_env().dry();
        let repo = Repository::open_in(ctx, &env).await?;
        return prune_locked(ctx, &repo, at, force, json).await;
    }
    let repo = Repository::open(ctx).await?;
    lifeboat_core::repository::lock::with_run_lock(ctx, &repo, "prune", async |ctx| {
        prune_locked(ctx, &repo, at, force, json).await
    })
    .await
}

/// Plans and carries out a prune (as a dry run when `repo` is opened as one); the caller
/// holds the run lock.
async fn prune_locked(
    ctx: &Context,
    repo: &Repository,
    at: jiff::Timestamp,
    force: bool,
    json: bool,
) -> Result<()> {
    let plan = plan_prune(ctx, repo, at, force).await?;
    if !json {
        emit(&show_plan(&plan))?;
    }
    let outcome = execute_prune(ctx, repo, &plan).await?;
    let dry_run = repo.storage().backend().info().dry_run;
    tracing::info!(
        "{}: {} backups deleted, {} promoted, {} WAL files deleted, {} leftovers removed, {} damaged backups removed, {} kept by a lock, {} objects locked{}",
        if dry_run { "dry run, would have pruned" } else { "pruned" },
        outcome.backups_deleted,
        outcome.promoted,
        outcome.wal_deleted,
        outcome.leftovers_deleted,
        outcome.damaged_deleted,
        outcome.locked,
        outcome.locks_set,
        outcome
            .objects
            .iter()
            .map(|(name, o)| format!(
                "; objects `{name}`: {} runs and {} old versions removed",
                o.runs_removed, o.versions_removed
            ))
            .collect::<String>()
    );
    if json {
        print_json(&serde_json::json!({ "plan": plan, "outcome": outcome }))?;
    }
    Ok(())
}

fn show_plan(plan: &PrunePlan) -> String {
    let mut out = format!("retention plan at {}\n", plan.at);
    if plan.backups.is_empty() {
        out.push_str("  no backups\n");
    }
    let rows = plan
        .backups
        .iter()
        .map(|d| {
            let locked = plan.locked.iter().any(|l| l.id == d.id);
            let action = match (d.keep, d.promote) {
                _ if locked => "keep, locked".to_string(),
                (false, _) => "delete".to_string(),
                (true, Some(tier)) => format!("keep, to {}", tier.as_str()),
                (true, None) => "keep".to_string(),
            };
            vec![
                action,
                d.id.clone(),
                d.series.clone(),
                d.started.strftime("%Y-%m-%d %H:%M").to_string(),
                d.reasons.join("; "),
            ]
        })
        .collect();
    out.push_str(&crate::output::table_text("  ", None, rows, &[]));
    for archive in &plan.wal {
        let label = if plan.wal.len() == 1 {
            "wal".to_string()
        } else {
            format!("wal of `{}`, {}", archive.cluster, archive.describe)
        };
        let wal = &archive.plan;
        match &wal.keep_from {
            _ if archive.whole => out.push_str(&format!(
                "  {label}: delete all {} files (a later generation's base backup replaces it; no kept base backup needs it)\n",
                wal.delete.len()
            )),
            Some((first, base)) => out.push_str(&format!(
                "  {label}: keep {} files from {first} (needed by base backup {base}), delete {}\n",
                wal.kept,
                wal.delete.len()
            )),
            None if wal.kept > 0 => out.push_str(&format!(
                "  {label}: keep all {} files (no base backup says which are needed)\n",
                wal.kept
            )),
            None => {}
        }
    }
    for path in &plan.leftovers {
        out.push_str(&format!(
            "  remove leftover {path} (no manifest, over a day old)\n"
        ));
    }
    for d in &plan.damaged {
        let action = if d.delete { "delete (--force)" } else { "keep" };
        out.push_str(&format!(
            "  {:<16} {:<22} manifest damaged ({}), {} data objects{}\n",
            action,
            d.manifest.id,
            d.manifest.reason,
            d.data.len(),
            if d.delete {
                ""
            } else {
                ": restore the manifest, or remove the backup with `prune --force`"
            }
        ));
    }
    for l in &plan.locks {
        out.push_str(&format!(
            "  lock {:<11} {:<22} until {} ({} objects)\n",
            "",
            l.id,
            l.until,
            l.keys.len()
        ));
    }
    for o in &plan.objects {
        out.push_str(&format!(
            "  objects `{}`: keep {} runs, remove {} ({}-day history{})\n",
            o.name,
            o.plan.keep.len(),
            o.plan.remove.len(),
            o.history_days,
            o.plan
                .purge_through
                .as_ref()
                .map(|r| format!("; versions replaced up to run {r} go"))
                .unwrap_or_default()
        ));
    }
    out
}
