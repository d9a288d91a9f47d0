//! `show ID`: one backup in full, with its last verification.

use lifeboat_core::repository::manifest::Manifest;
use lifeboat_core::repository::{Repository, Selector};
use lifeboat_core::units::human_bytes;
use lifeboat_core::{verify, Context, Result};

use super::verify::show_verification;
use crate::output::{emit, print_json};

pub async fn show(ctx: &Context, id: &str, json: bool) -> Result<()> {
    let repo = Repository::open(ctx).await?;
    let manifest = repo
        .find(&Selector {
            id,
            ..Selector::default()
        })
        .await?;
    let verification = verify::list_verifications(&repo)
        .await?
        .into_iter()
        .find(|v| v.backup == manifest.id);
    if json {
        let mut value = serde_json::to_value(&manifest).expect("manifests serialize");
        if let Some(v) = &verification {
            value["verification"] = serde_json::to_value(v).expect("verifications serialize");
        }
        print_json(&value)
    } else {
        let mut out = describe(&manifest);
        if let Some(v) = &verification {
            out.push_str(&show_verification(v));
        }
        emit(&out)
    }
}

fn describe(m: &Manifest) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line("id", m.id.clone());
    line("kind", m.kind.as_str().into());
    line(
        "database",
        format!(
            "{} (`{}` on PostgreSQL {})",
            m.database, m.dbname, m.server_version
        ),
    );
    line("taken with", m.client_version.clone());
    if let Some(base) = &m.base {
        line("timeline", base.timeline.to_string());
        line("lsn", format!("{} .. {}", base.start_lsn, base.end_lsn));
        line("wal", format!("{} .. {}", base.first_wal, base.last_wal));
    }
    line("started", m.started_at.to_string());
    line("finished", m.finished_at.to_string());
    line(
        "options",
        format!(
            "schema-only: {}, schemas: {}",
            m.options.schema_only,
            if m.options.schemas.is_empty() {
                "all".into()
            } else {
                m.options.schemas.join(", ")
            }
        ),
    );
    line(
        "raw size",
        format!("{} ({} bytes)", human_bytes(m.raw_size), m.raw_size),
    );
    line(
        "stored size",
        format!("{} ({} bytes)", human_bytes(m.stored_size), m.stored_size),
    );
    line("sha256", m.sha256.clone());
    line(
        "compression",
        format!("{} level {}", m.compression.algorithm, m.compression.level),
    );
    line(
        "encryption",
        m.encryption.as_ref().map_or("none".into(), |e| {
            format!("{} to {}", e.algorithm, e.recipients.join(", "))
        }),
    );
    line(
        "storage class",
        m.storage_class
            .clone()
            .unwrap_or_else(|| "bucket default".into()),
    );
    line("data", m.data.clone());
    line("lifeboat", m.tool_version.clone());
    out.push_str(&format!(
        "tables ({}, {} rows):\n",
        m.tables.len(),
        m.total_rows()
    ));
    let rows = m
        .tables
        .iter()
        .map(|t| vec![t.qualified(), t.rows.to_string()])
        .collect();
    out.push_str(&crate::output::table_text("  ", None, rows, &[1]));
    out
}
