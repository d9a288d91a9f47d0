//! `restore db` (a logical backup into a database) and `restore pitr` (a base backup and WAL
//! into a data folder); `restore objects` is in [`super::objects`].

use lifeboat_core::config::{url_has_password, Secret};
use lifeboat_core::postgres::pitr;
use lifeboat_core::postgres::restore::{restore_db, RestoreRequest};
use lifeboat_core::repository::Repository;
use lifeboat_core::{wal, Context, Error, Result};

use crate::cli::{RestoreDbArgs, RestorePitrArgs, TargetActionArg};
use crate::output::{parse_time, print_json_or};

pub async fn db(ctx: &Context, r: &RestoreDbArgs, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let request = restore_request(ctx, r)?;
    let report = restore_db(ctx, &repo, &request).await?;
    tracing::info!(
        "restored `{}` into `{}` in {:.1}s: {} tables checked, {} rows, all as recorded",
        report.backup,
        report.target,
        report.seconds,
        report.tables_checked,
        report.rows_checked
    );
    print_json_or(json, &report, || report.backup.clone())
}

pub async fn pitr(ctx: &Context, p: &RestorePitrArgs, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let request = pitr_request(p)?;
    let report = pitr::restore_pitr(ctx, &repo, &request).await?;
    match (&report.reached, report.recovery_seconds) {
        (reached, Some(secs)) => tracing::info!(
            "recovered `{}` from base backup `{}` to {} (last transaction {}) in {:.1}s restore + {:.1}s recovery",
            report.pgdata,
            report.base_backup,
            report.target,
            reached.as_deref().unwrap_or("none replayed"),
            report.restore_seconds,
            secs
        ),
        _ => tracing::info!(
            "restored base backup `{}` into `{}`; start the server to recover to {}",
            report.base_backup,
            report.pgdata,
            report.target
        ),
    }
    print_json_or(json, &report, || report.base_backup.clone())
}

fn pitr_request(p: &RestorePitrArgs) -> Result<pitr::PitrRequest> {
    let target = if let Some(time) = &p.target_time {
        pitr::Target::Time(parse_time(time)?)
    } else if let Some(lsn) = &p.target_lsn {
        pitr::Target::Lsn(wal::parse_lsn(lsn).ok_or_else(|| {
            Error::Usage(format!(
                "`--target-lsn {lsn}` is not an LSN: write it as `0/3000060`"
            ))
        })?)
    } else {
        pitr::Target::Latest
    };
    let timeline = match p.target_timeline.as_str() {
        "latest" => pitr::TargetTimeline::Latest,
        "current" => pitr::TargetTimeline::Current,
        other => match other.parse::<u32>() {
            Ok(id) if id > 0 => pitr::TargetTimeline::Id(id),
            _ => {
                return Err(Error::Usage(format!(
                    "`--target-timeline {other}` is not a timeline: give `latest`, `current` or a timeline's number (`lifeboat list wal` shows them)"
                )))
            }
        },
    };
    Ok(pitr::PitrRequest {
        pgdata: p.pgdata.clone(),
        target,
        timeline,
        action: match p.target_action {
            TargetActionArg::Promote => pitr::TargetAction::Promote,
            TargetActionArg::Pause => pitr::TargetAction::Pause,
        },
        start: p.start,
        port: p.port,
        socket_dir: p.socket_dir.clone(),
        no_archive: p.no_archive,
        throwaway: false,
        identity: p.identity.clone(),
        base: None,
    })
}

fn restore_request(ctx: &Context, r: &RestoreDbArgs) -> Result<RestoreRequest> {
    let (into, into_password) = match ctx.config.postgres.get(&r.into) {
        Some(pg) => (pg.url.expose().to_string(), pg.password.clone()),
        None => {
            if !r.into.contains("://") {
                return Err(Error::Usage(format!(
                    "`--into {}` is neither a configured database nor a `postgresql://` URL",
                    r.into
                )));
            }
            if url_has_password(&r.into) {
                tracing::warn!("the password in `--into` can be seen by other users in `ps`: put it in $PGPASSWORD instead");
            }
            let from_env = std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new);
            (r.into.clone(), from_env)
        }
    };
    Ok(RestoreRequest {
        backup: r.id.clone(),
        into,
        into_password,
        jobs: r.jobs,
        clean: r.clean,
        no_owner: r.no_owner,
        tables: r.tables.clone(),
        schemas: r.schemas.clone(),
        data_only: r.data_only,
        schema_only: r.schema_only,
        identity: r.identity.clone(),
        spool_dir: r.spool_dir.clone(),
        create: r.create,
        globals: r.globals,
        replace_roles: r.replace_roles,
    })
}
