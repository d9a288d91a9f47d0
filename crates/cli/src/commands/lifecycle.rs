//! `lifecycle`: the bucket lifecycle rules lifeboat wants, printed; with `--apply`, merged
//! with the bucket's own rules (kept as they are) and written.

use lifeboat_core::config::RepositoryUrl;
use lifeboat_core::retention::lifecycle;
use lifeboat_core::storage::Storage;
use lifeboat_core::{Context, Error, Result};

use crate::output::{print_json, print_json_or};

pub async fn lifecycle(ctx: &Context, apply: bool, json: bool) -> Result<()> {
    let config = &ctx.config.repository;
    let RepositoryUrl::S3 { prefix, .. } = &config.url else {
        return Err(Error::Usage(format!(
            "lifecycle rules are for S3 repositories; `{}` is a local folder (prune keeps it tidy)",
            config.url
        )));
    };
    let bucket = Storage::open(config, false, &ctx.storage_env())?;
    let bucket_name = bucket.location().to_string();
    let wanted = lifecycle::wanted(prefix);
    let existing = match bucket.lifecycle(None).await {
        Ok(None) => Some(lifecycle::Configuration::default()),
        Ok(Some(xml)) => {
            match lifecycle::Configuration::parse(&xml) {
                Ok(config) => Some(config),
                Err(reason) if apply => {
                    return Err(Error::Usage(format!(
                        "the lifecycle configuration of `{bucket_name}` is {reason}: refusing to replace what cannot be read; merge the printed rules by hand"
                    )))
                }
                Err(reason) => {
                    tracing::warn!("the bucket's lifecycle configuration is {reason}");
                    None
                }
            }
        }
        Err(e) if apply => return Err(e),
        Err(e) => {
            tracing::warn!("cannot read the bucket's lifecycle rules to check them: {e}");
            None
        }
    };
    if let Some(config) = &existing {
        for warning in config.conflicts(prefix) {
            tracing::warn!("{warning}");
        }
    }
    if !apply {
        tracing::info!("lifeboat expires nothing by age: prune knows what each backup still needs; these rules only clean up after killed uploads and old noncurrent versions");
        return print_json(&lifecycle::to_aws_json(&wanted));
    }
    let config = existing.unwrap_or_default();
    bucket.lifecycle(Some(config.merged_xml(&wanted))).await?;
    let kept = config
        .rules
        .iter()
        .filter(|r| !r.id().starts_with(lifecycle::ID_PREFIX))
        .count();
    tracing::info!(
        "applied {} lifecycle rules to `{bucket_name}`: lifeboat's {}, and the bucket's other {kept} as they were",
        kept + wanted.len(),
        wanted.len()
    );
    print_json_or(json, &config.merged_aws_json(&wanted), || "applied".into())
}
