//! `lifeboat wal find`: the transactions of a window that changed the tables named, or
//! definitions, and the restore points among them.

use lifeboat_core::postgres::find::{find, FindReport, FindRequest};
use lifeboat_core::repository::Repository;
use lifeboat_core::{Context, Result};

use crate::cli::WalCommand;
use crate::output::{parse_time, print_json_or};

pub async fn run(ctx: &Context, command: &WalCommand, json: bool) -> Result<()> {
    let WalCommand::Find {
        tables,
        ddl,
        since,
        until,
        db,
        limit,
        identity,
    } = command;
    let until = match until {
        Some(text) => parse_time(ctx, text)?,
        None => jiff::Timestamp::now(),
    };
    let since = match since {
        Some(text) => parse_time(ctx, text)?,
        None => until - jiff::SignedDuration::from_hours(1),
    };
    let repo = Repository::open(ctx).await?;
    let report = find(
        ctx,
        &repo,
        &FindRequest {
            db: db.clone(),
            since,
            until,
            tables: tables.clone(),
            ddl: *ddl,
            limit: *limit,
            identity: identity.clone(),
        },
    )
    .await?;
    print_json_or(json, &report, || text(&report))
}

fn text(report: &FindReport) -> String {
    let mut lines = vec![format!(
        "cluster `{}`, generation {}: {} to {}, {} segment(s), {} records read in {:.1} s",
        report.cluster,
        report.generation,
        report.since,
        report.until,
        report.segments,
        report.records,
        report.seconds
    )];
    for followed in &report.followed {
        if followed.found_in != "live" {
            lines.push(format!(
                "`{}`: not in the live database; its file {} found {}",
                followed.table, followed.file, followed.found_in
            ));
        }
    }
    // Transactions and restore points, in the WAL's order.
    let mut rows: Vec<(String, String)> = Vec::new();
    for t in &report.transactions {
        let mut what: Vec<String> = t
            .tables
            .iter()
            .map(|e| format!("{}: {}", e.table, e.summary))
            .collect();
        if let Some(ddl) = &t.ddl {
            what.push(format!(
                "definitions: {} catalog row(s), {} file(s) created, {} removed",
                ddl.catalog_rows, ddl.files_created, ddl.files_removed
            ));
        }
        let mut line = format!(
            "{}  xid {:<10} {:<12} {}  {}",
            t.at.map_or("?".into(), |at| at.to_string()),
            t.xid,
            t.lsn,
            if t.committed {
                "committed"
            } else {
                "aborted  "
            },
            what.join("; ")
        );
        if let Some(undo) = &t.undo {
            line.push_str(&format!("\n    before it: {undo}"));
        }
        rows.push((t.lsn.clone(), line));
    }
    for p in &report.restore_points {
        rows.push((
            p.lsn.clone(),
            format!(
                "restore point `{}` at {} (after the commit at {})",
                p.name,
                p.lsn,
                p.after_commit_at.map_or("?".into(), |at| at.to_string())
            ),
        ));
    }
    rows.sort_by_key(|(lsn, _)| lifeboat_core::wal::parse_lsn(lsn));
    if rows.is_empty() {
        lines.push("nothing found in the window".into());
    }
    lines.extend(rows.into_iter().map(|(_, line)| line));
    if report.more > 0 {
        lines.push(format!(
            "{} more transaction(s) not listed (`--limit`), the first ending at {}: `--since` there lists them",
            report.more,
            report.first_more.map_or("?".into(), |at| at.to_string())
        ));
    }
    if !report.gaps.is_empty() {
        lines.push(format!(
            "missing from the archive, so not read: {} (`lifeboat list wal` shows the gaps)",
            report.gaps.join(", ")
        ));
    }
    if let Some(ends) = report.archive_ends {
        if ends < report.until {
            lines.push(format!(
                "the archive ends with a segment stored at {ends}: later changes are not archived yet"
            ));
        }
    }
    lines.join("\n")
}
