//! `list`: the backups with their verifications (and damaged manifests); `list wal`: the WAL
//! archive's timelines, what they can recover, and their gaps; `list objects`: the runs of
//! every object backup.

use lifeboat_core::repository::{Catalog, Repository};
use lifeboat_core::storage::s3::tiers;
use lifeboat_core::units::human_bytes;
use lifeboat_core::{verify, wal, Context, Result};

use crate::cli::ListWhat;
use crate::output::{emit, print_json};

pub async fn list(ctx: &Context, what: Option<ListWhat>, json: bool) -> Result<()> {
    match what {
        None => backups(ctx, json).await,
        Some(ListWhat::Wal) => archive(ctx, json).await,
        Some(ListWhat::Objects) => super::objects::list(ctx, json).await,
    }
}

async fn backups(ctx: &Context, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let catalog = repo.catalog().await?;
    for damaged in &catalog.damaged {
        tracing::warn!("{}", damaged.describe());
    }
    let verifications = verify::list_verifications(&repo).await?;
    // Backups in an archive tier: whether they can be read now (one request each).
    let mut readiness = std::collections::BTreeMap::new();
    for m in &catalog.manifests {
        if m.storage_class.as_deref().is_some_and(tiers::needs_restore) {
            if let Some(state) = repo.storage().readiness(&m.data).await? {
                readiness.insert(m.id.clone(), state);
            }
        }
    }
    if json {
        // A damaged manifest is listed too, as `{"id", "damaged": reason, "manifest"}`.
        let mut listed: Vec<(String, serde_json::Value)> = catalog
            .manifests
            .iter()
            .map(|m| {
                let mut value = serde_json::to_value(m).expect("manifests serialize");
                if let Some(v) = verifications.iter().find(|v| v.backup == m.id) {
                    value["verification"] =
                        serde_json::to_value(v).expect("verifications serialize");
                }
                if let Some(state) = readiness.get(&m.id) {
                    value["readiness"] = serde_json::to_value(state).expect("states serialize");
                }
                (m.id.clone(), value)
            })
            .collect();
        listed.extend(catalog.damaged.iter().map(|d| {
            let value = serde_json::json!({
                "id": d.id, "damaged": d.reason, "manifest": d.manifest
            });
            (d.id.clone(), value)
        }));
        listed.sort_by(|a, b| started_second(&a.0).cmp(started_second(&b.0)));
        let listed: Vec<serde_json::Value> = listed.into_iter().map(|(_, v)| v).collect();
        return print_json(&listed);
    }
    emit(&list_table(&catalog, &verifications, &readiness))
}

/// The second a backup id names (`20261202T105654Z` of `20261202T105654Z-356e`): damaged
/// manifests go among the backups by it, and a stable sort keeps the catalog's order (by start
/// time) within a second, which the random suffix does not follow.
fn started_second(id: &str) -> &str {
    id.split('-').next().unwrap_or(id)
}

async fn archive(ctx: &Context, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let manifests = repo.list().await?;
    let mut reports = Vec::new();
    for (_, archives) in wal::cluster::every_archive(ctx, &repo, &manifests).await? {
        for archive in archives {
            let report = wal::archive_report(ctx, &archive, &manifests).await?;
            reports.push((archive, report));
        }
    }
    let marks = wal::marks::list(&repo).await?;
    if json {
        let archives: Vec<serde_json::Value> = reports
            .iter()
            .map(|(archive, report)| {
                let mut value = serde_json::to_value(report).expect("reports serialize");
                value["cluster"] = archive.cluster.clone().into();
                value["generation"] =
                    serde_json::to_value(&archive.generation).expect("records serialize");
                value
            })
            .collect();
        return print_json(&serde_json::json!({
            "archives": archives,
            "restore_points": marks,
        }));
    }
    let mut text = String::new();
    let several = reports.len() > 1;
    for (archive, report) in &reports {
        if several || archive.generation.generation > 1 {
            text.push_str(&format!(
                "{} (at {}):\n",
                archive.describe(),
                archive.prefix()
            ));
        }
        text.push_str(&wal_report_text(report));
    }
    if reports.is_empty() {
        text.push_str("no WAL archived\n");
    }
    for mark in &marks {
        text.push_str(&format!(
            "restore point `{}`: {} on `{}`, made {} (`restore pitr --target-name {}`)\n",
            mark.name,
            mark.lsn,
            mark.database,
            mark.at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
            mark.name
        ));
    }
    emit(&text)
}

fn list_table(
    catalog: &Catalog,
    verifications: &[verify::Verification],
    readiness: &std::collections::BTreeMap<String, tiers::Readiness>,
) -> String {
    if catalog.manifests.is_empty() && catalog.damaged.is_empty() {
        return "no backups\n".into();
    }
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for m in &catalog.manifests {
        let mut notes = Vec::new();
        if let Some(parent) = m.parent() {
            // The chain, oldest first: what a restore of this backup reads.
            notes.push(format!("incremental since {parent}"));
        } else if catalog
            .manifests
            .iter()
            .any(|o| o.parent() == Some(m.id.as_str()))
        {
            notes.push("full, incrementals build on it".into());
        }
        if m.is_encrypted() {
            notes.push("encrypted".to_string());
        }
        if m.options.schema_only {
            notes.push("schema-only".into());
        }
        if !m.options.schemas.is_empty() {
            notes.push(format!("schemas: {}", m.options.schemas.join(",")));
        }
        if let Some(tier) = &m.tier {
            notes.push(tier.clone());
        }
        match readiness.get(&m.id) {
            Some(tiers::Readiness::Archived { class }) => {
                notes.push(format!("{class}: archived, `restore` requests it back"));
            }
            Some(tiers::Readiness::Restoring { class }) => {
                notes.push(format!("{class}: restore under way"));
            }
            Some(tiers::Readiness::Restored { class, until }) => notes.push(format!(
                "{class}: restored, readable until {}",
                until.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
        if let Some(v) = verifications.iter().find(|v| v.backup == m.id) {
            notes.push(match (v.passed, v.recovery_seconds) {
                (true, Some(secs)) => format!(
                    "verified, restores in {}",
                    lifeboat_core::units::human_duration(secs)
                ),
                (true, None) => "verified (quick)".into(),
                (false, _) => "VERIFICATION FAILED".into(),
            });
        }
        rows.push((
            m.id.clone(),
            vec![
                m.id.clone(),
                m.kind.as_str().to_string(),
                m.database.clone(),
                m.finished_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                human_bytes(m.raw_size),
                human_bytes(m.stored_size),
                m.tables.len().to_string(),
                notes.join("; "),
            ],
        ));
    }
    for d in &catalog.damaged {
        let mut row = vec![d.id.clone()];
        row.extend(["?"; 6].map(String::from));
        row.push(format!("MANIFEST DAMAGED: {}", d.reason));
        rows.push((d.id.clone(), row));
    }
    rows.sort_by(|a, b| started_second(&a.0).cmp(started_second(&b.0)));
    let header = [
        "ID",
        "KIND",
        "DATABASE",
        "FINISHED (UTC)",
        "RAW",
        "STORED",
        "TABLES",
        "NOTES",
    ];
    let rows = rows.into_iter().map(|(_, row)| row).collect();
    crate::output::table_text("", Some(&header), rows, &[4, 5, 6])
}

/// `list wal`: per timeline, its segments, where it branched off, the moments it can recover
/// (to the millisecond, rounded inwards, so that they can be given as `--target-time`), and
/// its gaps.
fn wal_report_text(report: &wal::ArchiveReport) -> String {
    use std::fmt::Write;
    let millis = |t: jiff::Timestamp, up: bool| {
        let ms = t.as_millisecond() + i64::from(up && t.subsec_nanosecond() % 1_000_000 != 0);
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(t)
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    if report.timelines.is_empty() {
        return "no WAL archived\n".into();
    }
    let mut out = String::new();
    for t in &report.timelines {
        let _ = write!(
            out,
            "timeline {}: {} .. {} ({} segments",
            t.span.timeline, t.span.first, t.span.last, t.span.segments
        );
        if !t.span.gaps.is_empty() {
            let _ = write!(out, ", {} gaps", t.span.gaps.len());
        }
        out.push(')');
        if let Some((parent, lsn)) = &t.parent {
            let _ = write!(out, ", branched off timeline {parent} at {lsn}");
        }
        if let Some(at) = t.newest_archived_at {
            let _ = write!(out, ", newest archived {}", millis(at, false));
        }
        out.push('\n');
        for w in &t.recoverable {
            let _ = writeln!(
                out,
                "  recoverable: {} .. {} (from base backup {})",
                millis(w.from, true),
                millis(w.to, false),
                w.base_backup
            );
        }
        if t.recoverable.is_empty() {
            out.push_str("  recoverable: nothing (no base backup reaches this timeline)\n");
        }
        for (from, to) in &t.span.gaps {
            let _ = writeln!(out, "  gap: {from} .. {to} missing");
        }
    }
    let left_behind = report.left_behind();
    for fork in &report.forks {
        let _ = writeln!(
            out,
            "fork: timeline {} branched off timeline {} at {} while timeline {} went on to {}{}",
            fork.timeline,
            fork.parent,
            fork.at,
            fork.parent,
            fork.parent_went_on_to,
            if left_behind.contains(&fork) {
                format!(
                    "; timeline {} stopped: a recovery to the latest moment follows the line archived last, not it",
                    fork.timeline
                )
            } else {
                String::new()
            }
        );
    }
    out
}
