//! What this build is: its version, the commit it was built from and its target, as
//! `lifeboat --version` and the `lifeboat_build_info` metric say.

/// What lifeboat was built from, as `lifeboat --version` and `lifeboat_build_info` say.
#[derive(Debug, Clone, Copy)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub target: &'static str,
}

/// This build.
pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("LIFEBOAT_COMMIT"),
    target: env!("LIFEBOAT_TARGET"),
};

/// `--version`: the version, the commit and the target.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIFEBOAT_COMMIT"),
    ", ",
    env!("LIFEBOAT_TARGET"),
    ")"
);
