//! `restore db` (a logical backup into a database), `restore pitr` (a base backup and WAL
//! into a data folder) and `restore table` (tables as they were, beside the live ones);
//! `restore objects` is in [`super::objects`].

use lifeboat_core::config::{url_has_password, Secret};
use lifeboat_core::postgres::pitr;
use lifeboat_core::repository::Repository;
use lifeboat_core::units::human_duration;
use lifeboat_core::{plan_table, restore_db, restore_pitr, restore_table, RestoreRequest};
use lifeboat_core::{wal, Context, Error, Result};

use lifeboat_core::postgres::table::{self, Naming, Qualified, TableRequest};

use crate::cli::{RestoreDbArgs, RestorePitrArgs, RestoreTableArgs, TargetActionArg};
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
    let request = pitr_request(ctx, &repo, p).await?;
    let report = restore_pitr(ctx, &repo, &request).await?;
    if !report.archives {
        tracing::info!(
            "archiving is off in `{}`: this recovery writes nothing into the repository; to make it the new primary, recover with `--promote-as-primary`",
            report.pgdata
        );
    }
    match (&report.reached, report.recovery_seconds) {
        (reached, Some(secs)) => tracing::info!(
            "recovered `{}` from base backup `{}` to {} (last transaction {}) in {} restore + {} recovery",
            report.pgdata,
            report.base_backup,
            report.target,
            reached.as_deref().unwrap_or("none replayed"),
            human_duration(report.restore_seconds),
            human_duration(secs)
        ),
        _ => tracing::info!(
            "restored base backup `{}` into `{}`; start the server to recover to {}",
            report.base_backup,
            report.pgdata,
            report.target
        ),
    }
    if report.archives {
        match report.timeline {
            Some(now) if now != report.timeline_followed => tracing::warn!(
                "promoted as the new primary: forked timeline {now} off timeline {}, archived into the repository; `lifeboat backup base` now starts its line",
                report.timeline_followed
            ),
            Some(_) => {}
            None => tracing::warn!(
                "once started and promoted, this server forks a new timeline off timeline {} and archives it into the repository as the new primary",
                report.timeline_followed
            ),
        }
    }
    print_json_or(json, &report, || report.base_backup.clone())
}

async fn pitr_request(
    ctx: &Context,
    repo: &Repository,
    p: &RestorePitrArgs,
) -> Result<pitr::PitrRequest> {
    let target = if let Some(time) = &p.target_time {
        pitr::Target::Time(parse_time(ctx, time)?)
    } else if let Some(lsn) = &p.target_lsn {
        pitr::Target::Lsn(wal::parse_lsn(lsn).ok_or_else(|| {
            Error::Usage(format!(
                "`--target-lsn {lsn}` is not an LSN: write it as `0/3000060`"
            ))
        })?)
    } else if p.target_immediate {
        pitr::Target::Immediate
    } else if let Some(xid) = p.before_xid {
        let end =
            lifeboat_core::postgres::find::committed_xid(ctx, repo, p.db.as_deref(), xid).await?;
        pitr::Target::BeforeXid(xid, end.lsn)
    } else if let Some(name) = &p.target_name {
        let mark = wal::marks::find(repo, name).await?.ok_or_else(|| {
            Error::Missing(format!(
                "restore point `{name}` is not recorded in the repository: `lifeboat list wal` shows those `lifeboat mark` made"
            ))
        })?;
        let lsn = wal::parse_lsn(&mark.lsn)
            .ok_or_else(|| Error::Internal(format!("restore point `{name}` at `{}`", mark.lsn)))?;
        pitr::Target::Name(mark.name, lsn)
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
        as_primary: p.promote_as_primary,
        throwaway: false,
        identity: p.identity.clone(),
        base: p.base.clone(),
        db: p.db.clone(),
        thaw: p.thaw.thaw(ctx.lock_wait),
    })
}

/// `--into`: a configured database's URL and password, or a URL (its password from
/// $PGPASSWORD).
fn resolve_into(ctx: &Context, into: &str) -> Result<(String, Option<Secret>)> {
    if let Some(pg) = ctx.config.postgres.get(into) {
        return Ok((pg.url.expose().to_string(), pg.password.clone()));
    }
    if !into.contains("://") {
        return Err(Error::Usage(format!(
            "`--into {into}` is neither a configured database nor a `postgresql://` URL"
        )));
    }
    if url_has_password(into) {
        tracing::warn!("the password in `--into` can be seen by other users in `ps`: put it in $PGPASSWORD instead");
    }
    let from_env = std::env::var("PGPASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    Ok((into.to_string(), from_env))
}

pub async fn table(ctx: &Context, t: &RestoreTableArgs, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let (into, into_password) = resolve_into(ctx, &t.into)?;
    let naming = match (&t.as_name, &t.schema) {
        (Some(name), _) => Naming::As(Qualified::parse(name)?),
        (None, Some(schema)) => Naming::Schema(schema.clone()),
        (None, None) => Naming::Beside,
    };
    let (as_of, before_xid) = match (t.before_xid, &t.as_of) {
        (Some(xid), _) => {
            let end = lifeboat_core::postgres::find::committed_xid(
                ctx,
                &repo,
                t.database.as_deref(),
                xid,
            )
            .await?;
            (
                end.at.unwrap_or_else(jiff::Timestamp::now),
                Some((xid, end.lsn)),
            )
        }
        (None, Some(time)) => (parse_time(ctx, time)?, None),
        (None, None) => {
            return Err(Error::Usage(
                "say when: `--as-of TIME` or `--before-xid XID`".into(),
            ))
        }
    };
    let request = TableRequest {
        tables: t
            .tables
            .iter()
            .map(|name| Qualified::parse(name))
            .collect::<Result<_>>()?,
        as_of,
        before_xid,
        into,
        into_password,
        database: t.database.clone().or_else(|| {
            ctx.config
                .postgres
                .contains_key(&t.into)
                .then(|| t.into.clone())
        }),
        naming,
        data_only: t.data_only,
        from_dump: t.from_dump,
        identity: t.identity.clone(),
        work_dir: t.work_dir.clone(),
    };
    if t.dry_run {
        let plan = plan_table(ctx, &repo, &request).await?;
        return print_json_or(json, &plan, || plan_text(&plan));
    }
    let report = restore_table(ctx, &repo, &request).await?;
    print_json_or(json, &report, || report_text(&report))
}

fn plan_text(plan: &table::TablePlan) -> String {
    let mut lines = vec![match &plan.wal {
        Some(wal) => format!(
            "would recover {} from base backup `{}` (finished {}) and {} archived WAL segments ({} to {})",
            plan.as_of, plan.backup, plan.backup_finished, wal.segments, wal.first, wal.last
        ),
        None => format!(
            "would use dump `{}` (finished {}): the data is {:#} older than {}",
            plan.backup,
            plan.backup_finished,
            jiff::SignedDuration::from_secs(plan.data_age_seconds.unwrap_or(0)),
            plan.as_of
        ),
    }];
    lines.push(format!(
        "download {}; estimated time {}",
        lifeboat_core::units::human_bytes(plan.download_bytes),
        match (plan.estimated_seconds, &plan.estimate_basis) {
            (Some(s), Some(basis)) => format!("{} (from the {basis})", human_duration(s)),
            _ => "unknown (no verification has measured a recovery yet: `lifeboat verify`)".into(),
        }
    ));
    for t in &plan.tables {
        lines.push(format!("{} -> {}", t.table, t.restored_as));
    }
    lines.join("\n")
}

fn report_text(report: &lifeboat_core::TableReport) -> String {
    let mut lines = vec![match report.from {
        "dump" => format!(
            "from dump `{}`: the data is as of {}, {:#} before the moment asked for ({}); later changes are not in the copy",
            report.backup,
            report.data_as_of.as_deref().unwrap_or("?"),
            jiff::SignedDuration::from_secs(report.data_age_seconds.unwrap_or(0)),
            report.as_of
        ),
        _ => format!(
            "recovered as of {} from base backup `{}` (last transaction replayed: {}) in {:.1}s",
            report.as_of,
            report.backup,
            report.data_as_of.as_deref().unwrap_or("none"),
            report.recovery_seconds
        ),
    }];
    for t in &report.tables {
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        lines.push(format!(
            "{} -> {}: {} rows{}; missing now {}, changed {}, added since {}",
            t.table,
            t.restored_as,
            t.rows,
            if t.partitions > 0 {
                format!(" in {} partitions", t.partitions)
            } else {
                String::new()
            },
            count(t.missing_now),
            count(t.changed),
            count(t.added_since)
        ));
        lines.push(format!(
            "  rows then, missing now: {};",
            t.compare.missing_now
        ));
        if let Some(changed) = &t.compare.changed {
            lines.push(format!("  rows changed since: {changed};"));
        }
        lines.push(format!("  rows added since: {};", t.compare.added_since));
        lines.push(format!(
            "  put the missing rows back: {};",
            t.compare.put_back
        ));
    }
    lines.push(format!("the copies are made without {}", report.left_out));
    lines.join("\n")
}

fn restore_request(ctx: &Context, r: &RestoreDbArgs) -> Result<RestoreRequest> {
    let (into, into_password) = resolve_into(ctx, &r.into)?;
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
        spool: r.spool,
        spool_dir: r.spool_dir.clone(),
        thaw: r.thaw.thaw(ctx.lock_wait),
        create: r.create,
        globals: r.globals,
        replace_roles: r.replace_roles,
    })
}
