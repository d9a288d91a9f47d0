//! `drill`: the disaster-recovery rehearsal on throwaway parts, timed step by step.

use lifeboat_core::{Context, Result};

use lifeboat_core::units::human_duration;

use crate::output::{emit, print_json, table_text};

pub async fn drill(ctx: &Context, json: bool) -> Result<()> {
    let report = lifeboat_core::run_drill(ctx).await?;
    if json {
        return print_json(&report);
    }
    let mut out = String::from("drill passed\n");
    let mut rows: Vec<Vec<String>> = report
        .steps
        .iter()
        .map(|step| {
            vec![
                step.step.clone(),
                human_duration(step.seconds),
                step.detail.clone(),
            ]
        })
        .collect();
    let total: f64 = report.steps.iter().map(|s| s.seconds).sum();
    rows.push(vec![
        "total".into(),
        human_duration(total),
        format!("backup {} in {}", report.backup, report.repository),
    ]);
    out.push_str(&table_text("  ", None, rows, &[1]));
    out.push_str(&format!(
        "recovered: {} tables compared equal ({} rows); dump verified, restores in {}; \
         point in time {} recovered from base backup {} in {}\n\
         the drill's repository, WAL archive and clusters were its own and are gone: nothing else was touched\n",
        report.tables_compared,
        report.rows_restored,
        human_duration(report.verified_recovery_seconds.unwrap_or_default()),
        report.pitr_target,
        report.base_backup,
        human_duration(report.pitr_seconds),
    ));
    emit(&out)
}
