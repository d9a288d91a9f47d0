//! `config check`: the configuration, validated (loading it did), shown with secrets redacted.

use lifeboat_core::{Context, Result};

use crate::output::emit;

pub fn check(ctx: &Context) -> Result<()> {
    let mut out = format!("# configuration: {}\n", ctx.config.source_name());
    out.push_str(&ctx.config.to_redacted_toml());
    emit(&out)
}
