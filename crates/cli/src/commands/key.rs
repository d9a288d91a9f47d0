//! `key generate`: a new age identity, written once, and its public key printed.

use std::path::Path;

use lifeboat_core::{crypto, Result};

use crate::output::print_json_or;

pub fn generate(out: &Path, json: bool) -> Result<()> {
    let recipient = crypto::generate_identity(out)?;
    tracing::info!(
        "wrote identity `{}`; keep it safe and off the database host. Add the public key to `[encryption] recipients`",
        out.display()
    );
    print_json_or(
        json,
        &serde_json::json!({ "identity_file": out, "recipient": recipient }),
        || recipient.clone(),
    )
}
