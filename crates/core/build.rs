//! Records what lifeboat is built from (`lifeboat --version`, `lifeboat_build_info`): the git
//! commit when built from a clone, and the target triple.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    // Watch what names the commit, where it exists: cargo rebuilds every time for a watched
    // file that is missing (a fresh clone has no `packed-refs`, a tarball no `.git`).
    for watched in ["HEAD", "packed-refs", &head_ref().unwrap_or_default()] {
        if let Some(path) = git_path(watched).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=LIFEBOAT_COMMIT");
    let commit = std::env::var("LIFEBOAT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    println!(
        "cargo:rustc-env=LIFEBOAT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=LIFEBOAT_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
}

/// Where git keeps `name` (`HEAD`, `packed-refs`, `refs/heads/main`), as an absolute path.
fn git_path(name: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(if path.is_absolute() {
        path
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    })
}

/// The branch HEAD points to (`refs/heads/main`), if any.
fn head_ref() -> Option<String> {
    git(&["symbolic-ref", "-q", "HEAD"])
}
