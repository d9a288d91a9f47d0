//! `init`: marks the configured location as a lifeboat repository; `unlock`: removes the run
//! lock of a run that died.

use lifeboat_core::repository::{lock, Repository};
use lifeboat_core::{Context, Result};

use crate::output::print_json_or;

pub async fn init(ctx: &Context, json: bool) -> Result<()> {
    let repo = Repository::init(ctx).await?;
    tracing::info!("initialized repository `{}`", repo.location());
    print_json_or(
        json,
        &serde_json::json!({ "repository": repo.location() }),
        || repo.location().to_string(),
    )
}

pub async fn unlock(ctx: &Context, dry_run: bool, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let removed = lock::unlock(repo.storage(), dry_run).await?;
    let text = match &removed {
        None => format!("repository `{}` has no run lock", repo.location()),
        Some(held) => format!(
            "{} the run lock of job `{}` on `{}` (pid {}), held since {}: its holder is not alive",
            if dry_run { "would remove" } else { "removed" },
            held.job,
            held.host,
            held.pid,
            held.started.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
    };
    tracing::info!("{text}");
    print_json_or(
        json,
        &serde_json::json!({ "removed": removed, "dry_run": dry_run }),
        || text.clone(),
    )
}
