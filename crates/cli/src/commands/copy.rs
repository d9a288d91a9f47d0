//! `copy`: the repository's committed backups and WAL archive into its copies, then each copy
//! pruned with its own retention.

use lifeboat_core::repository::Repository;
use lifeboat_core::{copy_repository, CopyReport};
use lifeboat_core::{Context, Error, Result};

use crate::output::{emit, print_json};

pub async fn copy(ctx: &Context, name: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let names: Vec<String> = match name {
        Some(name) => vec![name.to_string()],
        None => ctx.config.repository.copies.keys().cloned().collect(),
    };
    if names.is_empty() {
        return Err(Error::Config(format!(
            "no copies configured in `{}`: add a `[repository.copies.NAME]` section with the copy's `url` (and its endpoint and credentials)",
            ctx.config.source_name()
        )));
    }
    for name in &names {
        ctx.config.for_copy(name)?;
    }
    let primary = Repository::open(ctx).await?;
    let mut reports = Vec::new();
    let mut first_error = None;
    for name in &names {
        match copy_repository(ctx, &primary, name, dry_run).await {
            Ok(report) => {
                if !json {
                    emit(&describe(&report))?;
                }
                reports.push(report);
            }
            Err(e) => {
                tracing::error!(copy = %name, "{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    if json {
        print_json(&reports)?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn describe(r: &CopyReport) -> String {
    let plan = &r.plan;
    if r.dry_run {
        let mut out = format!(
            "copy `{}` ({}): would copy {} backups and {} WAL files ({}); {} there already\n",
            r.copy,
            r.location,
            plan.backups.len(),
            plan.wal.len(),
            lifeboat_core::units::human_bytes(plan.bytes()),
            plan.present
        );
        for b in &plan.backups {
            out.push_str(&format!("  {} ({})\n", b.id, b.kind.as_str()));
        }
        return out;
    }
    format!(
        "copy `{}` ({}): {} backups and {} WAL files copied ({}), {} there already; {}\n",
        r.copy,
        r.location,
        r.backups_copied.len(),
        r.wal_copied,
        lifeboat_core::units::human_bytes(r.bytes_copied),
        plan.present,
        r.pruned.clone().unwrap_or_default()
    )
}
