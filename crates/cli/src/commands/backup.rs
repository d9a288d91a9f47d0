//! `backup db`, `backup base` and `backup redis`, each under the repository's run lock
//! (`backup objects` is in [`super::objects`]).

use lifeboat_core::repository::lock::with_run_lock;
use lifeboat_core::repository::manifest::Manifest;
use lifeboat_core::repository::Repository;
use lifeboat_core::units::human_bytes;
use lifeboat_core::{backup_base, backup_db, backup_redis, DumpRequest};
use lifeboat_core::{Context, Error, Result};

use crate::cli::BackupDbArgs;
use crate::output::{emit, print_json_or};

pub async fn db(ctx: &Context, b: &BackupDbArgs, json: bool) -> Result<()> {
    let (name, pg) = ctx.config.database(b.db.as_deref())?;
    let repo = Repository::open(ctx).await?;
    let request = DumpRequest {
        schema_only: b.schema_only,
        schemas: b.schemas.clone(),
    };
    let manifest = with_run_lock(ctx, &repo, "backup db", async |ctx| {
        backup_db(ctx, &repo, name, pg, &request).await
    })
    .await?;
    tracing::info!(
        "backup `{}` of `{name}` done: {} raw, {} stored, {} tables, {} rows",
        manifest.id,
        human_bytes(manifest.raw_size),
        human_bytes(manifest.stored_size),
        manifest.tables.len(),
        manifest.total_rows()
    );
    print_manifest(&manifest, json)
}

pub async fn base(ctx: &Context, db: Option<&str>, incremental: bool, json: bool) -> Result<()> {
    let (name, pg) = ctx.config.database(db)?;
    let repo = Repository::open(ctx).await?;
    let manifest = with_run_lock(ctx, &repo, "backup base", async |ctx| {
        backup_base(ctx, &repo, name, pg, incremental).await
    })
    .await?;
    tracing::info!(
        "{} `{}` of `{name}` done: {} raw, {} stored",
        match manifest.parent() {
            Some(parent) => format!("incremental base backup (since `{parent}`)"),
            None => "base backup".into(),
        },
        manifest.id,
        human_bytes(manifest.raw_size),
        human_bytes(manifest.stored_size)
    );
    print_manifest(&manifest, json)
}

pub async fn redis(ctx: &Context, json: bool) -> Result<()> {
    let redis = ctx.config.redis.as_ref().ok_or_else(|| {
        Error::Config("no `[redis]` section: Redis is ephemeral by design; add `[redis] url = ... backup = true` to snapshot it".into())
    })?;
    if !redis.backup {
        return Err(Error::Config(
            "`redis.backup` is false: Redis is ephemeral by design; set `backup = true` to take RDB snapshots".into(),
        ));
    }
    let repo = Repository::open(ctx).await?;
    let manifest = with_run_lock(ctx, &repo, "backup redis", async |ctx| {
        backup_redis(ctx, &repo, redis).await
    })
    .await?;
    tracing::info!(
        "redis snapshot `{}` stored ({} bytes)",
        manifest.id,
        manifest.stored_size
    );
    print_json_or(
        json,
        &serde_json::json!({ "id": manifest.id, "stored_size": manifest.stored_size }),
        || manifest.id.clone(),
    )
}

/// The new backup's id, or its manifest with `--json`.
fn print_manifest(manifest: &Manifest, json: bool) -> Result<()> {
    if json {
        emit(&String::from_utf8_lossy(&manifest.to_json()))
    } else {
        emit(&format!("{}\n", manifest.id))
    }
}
