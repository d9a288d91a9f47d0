//! Records what lifeboat is built from (`lifeboat --version`, `lifeboat_build_info`): the git
//! commit when built from a clone, and the target triple.

use std::path::Path;
use std::process::Command;

fn main() {
    let git = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=LIFEBOAT_COMMIT");
    let commit = std::env::var("LIFEBOAT_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=LIFEBOAT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=LIFEBOAT_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
