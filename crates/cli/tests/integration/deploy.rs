//! The shipped systemd units: they pass `systemd-analyze verify` without a word, keep to the
//! sandbox rules that make them work (what `ProtectSystem=strict` leaves writable exists and
//! holds `TMPDIR`), and lifeboat's jobs run in that sandbox: with `/tmp` read-only and
//! `TMPDIR` and the repository where the units put them.

use std::path::{Path, PathBuf};

use lifeboat_testkit::ClusterOptions;

use crate::support::{run_of, Env, Repo};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "timer")
        })
        .collect();
    units.sort();
    units
}

/// The values of `key` in a unit file.
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_shipped_units_verify_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for unit in units() {
        let text = std::fs::read_to_string(&unit)
            .unwrap()
            .replace("/usr/local/bin/lifeboat", env!("CARGO_BIN_EXE_lifeboat"));
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    assert!(copies.len() >= 4, "{copies:?}");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian: apt-get install systemd; .ci/run installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // Hardened: each service scores 4 or below ("OK") in `systemd-analyze security`.
    for copy in copies
        .iter()
        .filter(|c| c.extension().is_some_and(|e| e == "service"))
    {
        let name = copy.file_name().unwrap().to_str().unwrap();
        // A template is scored as one of its instances.
        let instance = dir.path().join(name.replace("@.", "@daily."));
        if instance != *copy {
            std::fs::copy(copy, &instance).unwrap();
        }
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&instance)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let score: f64 = said
            .lines()
            .find_map(|l| l.split_once("exposure level for ")?.1.split_once(": "))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no score: {said}"));
        assert!(score <= 4.0, "{}: {score}: {said}", instance.display());
    }
}

#[test]
fn the_sandboxed_units_leave_a_writable_temporary_folder() {
    for unit in units()
        .into_iter()
        .filter(|u| u.extension().unwrap() == "service")
    {
        let text = std::fs::read_to_string(&unit).unwrap();
        let name = unit.display();
        if values(&text, "ProtectSystem") != ["strict"] {
            continue;
        }
        assert_eq!(values(&text, "PrivateTmp"), ["true"], "{name}");
        // Paths that may not exist make the unit fail to start: the directories it gets
        // are systemd's to create.
        assert!(values(&text, "ReadWritePaths").is_empty(), "{name}");
        let cache = values(&text, "CacheDirectory");
        assert_eq!(
            values(&text, "Environment"),
            [format!("TMPDIR=/var/cache/{}", cache[0])],
            "{name}"
        );
        assert_eq!(values(&text, "StateDirectory"), ["lifeboat"], "{name}");
    }
}

/// The daily and weekly jobs, as the units run them: `/tmp` read-only (the host's, as
/// `ProtectSystem=strict` leaves it when `PrivateTmp` is missing), `TMPDIR` on the cache
/// folder and the repository in the state folder (here, folders of the build's own).
#[test]
fn the_jobs_run_in_the_units_sandbox() {
    let env = Env::with_cluster(
        Repo::Local,
        false,
        ClusterOptions {
            tcp_password: Some("sandbox-pw".into()),
            ..Default::default()
        },
    );
    // Outside `/tmp`, which the sandbox makes read-only (a checkout under `/tmp` builds there).
    let base = match env!("CARGO_TARGET_TMPDIR") {
        dir if std::path::Path::new(dir).starts_with("/tmp") => "/var/tmp",
        dir => dir,
    };
    let root = tempfile::tempdir_in(base).unwrap();
    let (state, cache) = (root.path().join("state"), root.path().join("cache"));
    for dir in [&state, &cache] {
        std::fs::create_dir(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = std::fs::read_to_string(&env.config).unwrap();
    let repository = config
        .lines()
        .find(|l| l.starts_with("url = \"file://"))
        .unwrap()
        .to_string();
    let config = config.replace(
        &repository,
        &format!("url = \"file://{}/repo\"", state.display()),
    );
    let config_file = root.path().join("lifeboat.toml");
    std::fs::write(&config_file, config).unwrap();
    let sandboxed = |args: &[&str]| {
        let out = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(
                "mount --make-rprivate / && mount --bind /tmp /tmp && \
                 mount -o remount,bind,ro /tmp && exec \"$@\"",
            )
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("--config")
            .arg(&config_file)
            .args(args)
            .env("TMPDIR", &cache)
            .env("LIFEBOAT_LOG", "info")
            .envs(env.extra_env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .output()
            .expect("unshare (util-linux) runs");
        run_of(out)
    };
    for args in [&["init"][..], &["run", "daily"], &["run", "weekly"]] {
        let out = sandboxed(args);
        assert_eq!(out.code, 0, "{args:?} in the sandbox: {}", out.stderr);
    }
    let out = sandboxed(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1, "{}", out.stdout);
    assert_eq!(listed[0]["verification"]["passed"], true, "{}", out.stdout);
}

/// The shipped alerting rules load, fire as their unit tests say (promtool), and name only
/// metrics that lifeboat writes.
#[test]
fn the_alerting_rules_load_fire_and_name_real_metrics() {
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(deploy_dir())
            .output()
            .expect("promtool (Debian: apt-get install prometheus; scripts/test installs it)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}: {said}");
        said
    };
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("12 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts-test.yml"]);

    // Every metric the rules read is one that `status --prometheus` writes (the archiver's
    // for a database that archives, with a queue limit).
    let env = Env::new(Repo::Local, false);
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "[wal]\nqueue_max_mib = 1024\n{}",
            config.replace("[postgres.main]\n", "[postgres.main]\npitr = true\n")
        ),
    )
    .unwrap();
    env.backup(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lifeboat.prom");
    // The stream's metrics are written while its slot exists. A slot could keep more WAL
    // than `[wal] queue_max_mib` allows: refused until the server caps it.
    let refused = env.lifeboat(&["wal-stream"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .error_line()
            .contains("max_slot_wal_keep_size = '1024MB'"),
        "{}",
        refused.stderr
    );
    env.sql("yomira", "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'");
    env.sql("yomira", "SELECT pg_reload_conf()");
    let mut stream = env.start(&["wal-stream"]);
    crate::support::wait_until(std::time::Duration::from_secs(30), "the stream", || {
        env.sql(
            "yomira",
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat'",
        ) == "1"
    });
    env.lifeboat(&["status", "--prometheus", file.to_str().unwrap()]);
    let _ = stream.kill();
    let _ = stream.wait();
    let written = std::fs::read_to_string(&file).unwrap();
    let rules = std::fs::read_to_string(deploy_dir().join("alerts.yml")).unwrap();
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lifeboat_"))
        .collect();
    named.sort();
    named.dedup();
    assert!(named.len() >= 8, "{named:?}");
    // Verification metrics appear once a verification ran; the rest at once.
    let verified = env.lifeboat(&["verify", "--json"]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    env.lifeboat(&["status", "--prometheus", file.to_str().unwrap()]);
    let written = written + &std::fs::read_to_string(&file).unwrap();
    for name in named {
        assert!(
            written.contains(&format!("\n{name}{{")) || written.contains(&format!("\n{name} ")),
            "{name} is not written: {written}"
        );
    }
}
