//! `init`: marks the configured location as a lifeboat repository.

use lifeboat_core::repository::Repository;
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
