//! `status` (every asset against its recovery objectives; exit 4 when one is breached) and
//! `doctor` (everything a run needs, checked).

use std::path::Path;

use lifeboat_core::automation::metrics::{render, Render, Snapshot};
use lifeboat_core::repository::Repository;
use lifeboat_core::{Context, Error, Result};

use lifeboat_core::units::human_duration;

use crate::output::{emit, print_json, table, table_text};

pub async fn status(ctx: &Context, json: bool, prometheus: Option<&Path>) -> Result<()> {
    let read = async {
        let repo = Repository::open(ctx).await?;
        lifeboat_core::status(ctx, &repo, jiff::Timestamp::now()).await
    };
    let assets = match (read.await, prometheus) {
        (Ok(assets), Some(file)) => {
            let snapshot = Snapshot::collected(assets, jiff::Timestamp::now());
            write_textfile(file, &snapshot)?;
            snapshot.assets
        }
        (Ok(assets), None) => assets,
        (Err(e), Some(file)) => {
            let mut snapshot = Snapshot::default();
            snapshot.failed(e.to_string());
            write_textfile(file, &snapshot)?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if json {
        print_json(&assets)?;
    } else {
        let mut out = String::new();
        if assets.is_empty() {
            out.push_str(
                "nothing configured: add `[postgres.NAME]`, `[objects.NAME]` or `[redis]`\n",
            );
        }
        let rows = assets
            .iter()
            .map(|a| {
                vec![
                    if a.ok { "ok" } else { "FAIL" }.to_string(),
                    a.label(),
                    "last good".into(),
                    a.last_good
                        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    "age".into(),
                    a.age_seconds
                        .map(human_duration)
                        .unwrap_or_else(|| "-".into()),
                    format!(
                        "(RPO {})",
                        a.rpo_seconds
                            .map(|s| human_duration(s as f64))
                            .unwrap_or_else(|| "-".into())
                    ),
                    match (a.verified_recovery_seconds, a.rto_seconds) {
                        (Some(secs), Some(rto)) => format!(
                            "restores in {} (RTO {})",
                            human_duration(secs),
                            human_duration(rto as f64)
                        ),
                        _ => String::new(),
                    },
                ]
            })
            .collect();
        for (a, line) in assets.iter().zip(table(None, rows, &[5])) {
            out.push_str(&line);
            out.push('\n');
            for p in &a.problems {
                out.push_str(&format!("       ! {p}\n"));
            }
            for n in &a.notes {
                out.push_str(&format!("         {n}\n"));
            }
        }
        emit(&out)?;
    }
    let breached: Vec<String> = assets.iter().filter(|a| !a.ok).map(|a| a.label()).collect();
    if breached.is_empty() {
        Ok(())
    } else {
        Err(Error::Breached(format!(
            "recovery objectives breached for {}",
            breached.join(", ")
        )))
    }
}

pub async fn doctor(ctx: &Context, json: bool) -> Result<()> {
    let findings = lifeboat_core::doctor(ctx).await;
    if json {
        print_json(&findings)?;
    } else {
        let rows = findings
            .iter()
            .map(|f| {
                vec![
                    if f.ok { "ok" } else { "FAIL" }.to_string(),
                    f.check.clone(),
                    f.detail.clone(),
                ]
            })
            .collect();
        emit(&table_text("", None, rows, &[]))?;
    }
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| f.check.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Incomplete(format!(
            "doctor found problems with: {}",
            failed.join(", ")
        )))
    }
}

/// Writes the metrics of `snapshot` to `file` atomically (a sibling written, then renamed), so
/// that node_exporter never reads half a file.
fn write_textfile(file: &Path, snapshot: &Snapshot) -> Result<()> {
    let text = render(&Render {
        snapshot,
        runs: &[],
        requests: None,
        now: jiff::Timestamp::now(),
    });
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let context = || format!("writing the metrics to `{}` (--prometheus)", file.display());
    let mut staged = tempfile::Builder::new()
        .prefix(".lifeboat-metrics-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(context(), e))?;
    std::io::Write::write_all(&mut staged, text.as_bytes()).map_err(|e| Error::io(context(), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(context(), e))?;
    staged
        .persist(file)
        .map_err(|e| Error::io(context(), e.error))?;
    Ok(())
}
