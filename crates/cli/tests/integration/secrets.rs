//! Secrets stay out of process arguments, environments of children, logs and errors.

use lifeboat_testkit::ClusterOptions;

use crate::support::{wait_for_blocked_dump, Env, Repo, TableLock};

fn processes_mentioning(secret: &str, skip_environ_of: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(secret) {
            found.push(format!(
                "cmdline of {pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
        if pid != skip_environ_of && pid != std::process::id() {
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(secret) {
                found.push(format!(
                    "environment of {pid} ({})",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
            }
        }
    }
    found
}

/// Takes a backup held mid-dump by a table lock, looking at every process meanwhile: the
/// password is in none of their arguments or environments, nor in the output.
fn backup_never_showing(env: &Env, password: &str) {
    let lock = TableLock::hold(env, "users.account");
    let child = env.start(&["backup", "db", "-v"]);
    wait_for_blocked_dump(env);
    let seen = processes_mentioning(password, child.id());
    drop(lock);
    let out = crate::support::run_of(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(seen.is_empty(), "password visible: {seen:?}");
    assert!(!out.stderr.contains(password) && !out.stdout.contains(password));
}

#[test]
fn database_password_is_never_visible() {
    let password = format!("Pw-{}-secret", std::process::id());
    let options = ClusterOptions {
        tcp_password: Some(password.clone()),
        ..ClusterOptions::default()
    };
    // The database is reached over TCP; the password comes from the environment through ${VAR}.
    let mut env = Env::with_cluster(Repo::S3, false, options);

    backup_never_showing(&env, &password);

    let check = env.lifeboat(&["config", "check"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(!check.stdout.contains(&password), "{}", check.stdout);
    assert!(
        !check.stdout.contains(crate::support::S3_SECRET),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("password = \"***\""),
        "{}",
        check.stdout
    );

    // A wrong password: one line, no password in it.
    env.extra_env.retain(|(k, _)| k != "LB_TEST_PG_PASSWORD");
    env.extra_env
        .push(("LB_TEST_PG_PASSWORD".into(), "wrong-pw-value".into()));
    let out = env.lifeboat(&["backup", "db"]);
    assert_eq!(out.code, 1);
    let line = out.error_line();
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(!line.contains("wrong-pw-value"), "{line}");
}

#[test]
fn a_server_that_requires_tls_is_backed_up_over_tls() {
    let options = ClusterOptions {
        tcp_password: Some("tls-test-password".into()),
        tls: true,
        ..ClusterOptions::default()
    };
    let env = Env::with_cluster(Repo::Local, false, options);
    let config = std::fs::read_to_string(&env.config).unwrap();
    // pg_hba.conf takes TCP connections with TLS only: without it, lifeboat is refused...
    std::fs::write(
        &env.config,
        config.replace("/yomira\"", "/yomira?sslmode=disable\""),
    )
    .unwrap();
    let out = env.lifeboat(&["backup", "db"]);
    assert_eq!(out.code, 1);
    assert!(out.error_line().contains("no encryption"), "{}", out.stderr);
    // ...and with `sslmode=require` both lifeboat's own connection and pg_dump's use TLS.
    std::fs::write(
        &env.config,
        config.replace("/yomira\"", "/yomira?sslmode=require\""),
    )
    .unwrap();
    let id = env.backup(&[]);
    let out = env.lifeboat(&["show", &id, "--json"]);
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(manifest["tables"].as_array().unwrap().len() >= 7);
    let out = env.lifeboat(&["doctor"]);
    assert_eq!(out.code, 0, "{}", out.stdout);

    // The server is authenticated on request: its certificate is signed by the test CA for
    // 127.0.0.1 only. `verify-full` to 127.0.0.1 backs up (lifeboat's connection and
    // pg_dump's); to `localhost` it is refused, which `verify-ca` (the signer only) accepts;
    // against another CA, both are refused.
    let ca = env.cluster.data_dir().join("ca.crt");
    let other_ca = env.dir.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(env.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    let with = |mode: &str, root: &std::path::Path, host: Option<&str>| {
        let mut text = config.replace(
            "/yomira\"",
            &format!("/yomira?sslmode={mode}&sslrootcert={}\"", root.display()),
        );
        if let Some(host) = host {
            text = text.replace("@127.0.0.1:", &format!("@{host}:"));
        }
        std::fs::write(&env.config, text).unwrap();
    };
    with("verify-full", &ca, None);
    env.backup(&[]);
    with("verify-full", &ca, Some("localhost"));
    let out = env.lifeboat(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("certificate") && out.error_line().contains("cannot connect"),
        "{}",
        out.stderr
    );
    with("verify-ca", &ca, Some("localhost"));
    env.backup(&[]);
    for mode in ["verify-full", "verify-ca"] {
        with(mode, &other_ca, None);
        let out = env.lifeboat(&["backup", "db"]);
        assert_eq!(out.code, 1, "{mode}: {}", out.stderr);
        assert!(
            out.error_line().contains("certificate"),
            "{mode}: {}",
            out.stderr
        );
    }

    // The password may come from a password file, as with libpq, for lifeboat's own
    // connection and for pg_dump's.
    let without: String = config
        .replace("/yomira\"", "/yomira?sslmode=require\"")
        .lines()
        .filter(|l| !l.starts_with("password"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.config, without).unwrap();
    let pgpass = env.dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        "# lifeboat test\n127.0.0.1:*:yomira:lifeboat:tls-test-password\n",
    )
    .unwrap();
    let out = crate::support::run_of(
        env.command(&["backup", "db"])
            .env("PGPASSFILE", &pgpass)
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Secrets read from files in systemd's credentials folder (`LoadCredential=`): used, and
/// never in `ps`, the logs or `config check`; every missing one named in one error.
#[test]
fn secrets_from_credential_files_are_used_and_never_visible() {
    let password = format!("File-Pw-{}-secret", std::process::id());
    let options = ClusterOptions {
        tcp_password: Some(password.clone()),
        ..ClusterOptions::default()
    };
    let mut env = Env::with_cluster(Repo::S3, false, options);
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("pg-main"), format!("{password}\n")).unwrap();
    std::fs::write(credentials.join("s3-secret"), crate::support::S3_SECRET).unwrap();
    let config = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(
            "password = \"${LB_TEST_PG_PASSWORD}\"",
            "password_file = \"pg-main\"",
        )
        .replace(
            "secret_access_key = \"${LB_TEST_S3_SECRET}\"",
            "secret_access_key_file = \"s3-secret\"",
        );
    assert!(config.contains("password_file") && config.contains("secret_access_key_file"));
    std::fs::write(&env.config, config).unwrap();
    env.extra_env.clear();
    env.extra_env.push((
        "CREDENTIALS_DIRECTORY".into(),
        credentials.display().to_string(),
    ));

    backup_never_showing(&env, &password);
    for args in [&["config", "check"][..], &["config", "check", "--json"]] {
        let check = env.lifeboat(args);
        assert_eq!(check.code, 0, "{}", check.stderr);
        for secret in [password.as_str(), crate::support::S3_SECRET] {
            assert!(!check.stdout.contains(secret), "{args:?}: {}", check.stdout);
        }
    }
    let json = env.lifeboat(&["config", "check", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(shown["config"]["postgres"]["main"]["password"], "***");

    // Without the credentials folder: both files named in one error, exit 1.
    env.extra_env.clear();
    let out = env.lifeboat(&["backup", "db"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.error_line();
    assert!(
        line.contains("`pg-main`") && line.contains("`s3-secret`"),
        "{line}"
    );
}

/// An S3 repository whose keys are in the environment only (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`): every command works, OpenDAL's requests and lifeboat's own signed
/// ones alike, and `config check` and `doctor` say where the keys come from (never the keys);
/// with no source at all, the repository is refused in one line that names the sources.
#[test]
fn s3_keys_from_the_environment_serve_every_command_and_none_is_refused() {
    let mut env = Env::new(Repo::S3, false);
    let config = std::fs::read_to_string(&env.config).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("access_key_id") && !l.starts_with("secret_access_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.config, without).unwrap();
    let home = env.dir.path().display().to_string();
    env.extra_env.extend([
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            crate::support::S3_KEY.to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            crate::support::S3_SECRET.into(),
        ),
        // No instance metadata to ask here, and no profile of this machine's.
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("HOME".into(), home),
    ]);
    let id = env.backup(&[]);
    let out = env.lifeboat(&["list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    env.new_database("restored");
    let out = env.restore(&id, "restored", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.fingerprints("restored"), env.fingerprints("yomira"));
    let out = env.lifeboat(&["verify", &id, "--quick"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.lifeboat(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("# repository keys from the environment (AWS_ACCESS_KEY_ID)")
            && !out.stdout.contains(crate::support::S3_SECRET),
        "{}",
        out.stdout
    );
    let out = env.lifeboat(&["doctor", "--json"]);
    assert!(
        out.stdout.contains("keys from the environment"),
        "{}",
        out.stdout
    );

    // No source gives keys: refused at once, in one line.
    env.extra_env
        .retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
    let out = env.lifeboat(&["list"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("no credentials for `s3://")
            && out.error_line().contains("AWS_ACCESS_KEY_ID"),
        "{}",
        out.stderr
    );
}
