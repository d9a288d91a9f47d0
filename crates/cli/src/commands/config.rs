//! `config check`: the configuration, validated (loading it did), shown with secrets redacted,
//! as TOML or (`--json`) as JSON.

use lifeboat_core::{Context, Result};

use crate::output::{emit, print_json};

pub fn check(ctx: &Context, json: bool) -> Result<()> {
    if json {
        return print_json(&serde_json::json!({
            "source": ctx.config.source_name(),
            "config": &ctx.config,
        }));
    }
    let mut out = format!("# configuration: {}\n", ctx.config.source_name());
    if let lifeboat_core::config::RepositoryUrl::S3 { .. } = &ctx.config.repository.url {
        let access = ctx.config.repository.access();
        out.push_str(
            &match lifeboat_core::storage::credentials::source(&access) {
                Some(source) => format!("# repository keys from {source}\n"),
                None => "# repository keys: none from any source (see `lifeboat doctor`)\n".into(),
            },
        );
    }
    out.push_str(&ctx.config.to_redacted_toml());
    emit(&out)
}
