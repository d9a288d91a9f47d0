//! The configuration as a user writes it: whole files, their errors and their lookups.

use super::*;

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/lifeboat/lifeboat.toml"))
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = parse("[repository]\nurl = \"/x\"\nbukket = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("`bukket`"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn missing_variable_names_variable_and_line() {
    let err = parse("[postgres.main]\nurl = \"postgresql://u@h/db\"\npassword = \"${LIFEBOAT_TEST_UNSET_VAR}\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("`LIFEBOAT_TEST_UNSET_VAR`"), "{err}");
}

#[test]
fn malformed_urls_are_errors() {
    let err = parse("[repository]\nurl = \"ftp://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("ftp://x"), "{err}");
    let err = parse("[postgres.a]\nurl = \"mysql://u:hunter2@h/db\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn unknown_storage_class_is_an_error() {
    let err =
        parse("[repository]\nurl = \"s3://b/p\"\n[repository.storage_class]\ndb = \"GLACIERR\"\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("line 4") && err.contains("`GLACIERR`"),
        "{err}"
    );
}

#[test]
fn relative_local_repository_is_anchored_at_the_config() {
    let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
    assert_eq!(
        config.repository.url,
        RepositoryUrl::Local(PathBuf::from("/etc/lifeboat/repo"))
    );
    let s3 = parse("[repository]\nurl = \"s3://bucket/a/b/\"\n").unwrap();
    assert_eq!(
        s3.repository.url,
        RepositoryUrl::S3 {
            bucket: "bucket".into(),
            prefix: "a/b".into()
        }
    );
}

#[test]
fn secrets_never_show() {
    let config = parse(
        "[repository]\nurl = \"s3://b\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"topsecret\"\n\
         [postgres.main]\nurl = \"postgresql://u:pw123@h/db?password=pw456\"\npassword = \"pw789\"\n",
    )
    .unwrap();
    let shown = format!("{config:?}{}", config.to_redacted_toml());
    for secret in ["topsecret", "pw123", "pw456", "pw789"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(shown.contains("postgresql://u:***@h/db"), "{shown}");
}

#[test]
fn the_example_config_is_valid() {
    let text = include_str!("../../../../lifeboat.example.toml");
    // Every `${VAR}` it uses, set to something plausible.
    let mut expanded = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        expanded.push_str("example");
        rest = &rest[end + 1..];
    }
    expanded.push_str(rest);
    let config = Config::parse(&expanded, Path::new("/etc/lifeboat/lifeboat.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.objects.contains_key("media"));
    assert_eq!(
        config.retention.monthly_class.as_deref(),
        Some("STANDARD_IA")
    );
    assert_eq!(config.jobs().len(), 2);
    assert!(config.postgres["yomira"].pitr);
}

#[test]
fn several_clusters_archive_into_one_repository_under_plain_names() {
    let text = "[postgres.a]\nurl = \"postgresql://h/a\"\npitr = true\n\
                [postgres.b]\nurl = \"postgresql://h2/b\"\npitr = true\n";
    let config = parse(text).unwrap();
    assert!(config.postgres["a"].pitr && config.postgres["b"].pitr);
    let text = "[postgres.\"a b\"]\nurl = \"postgresql://h/a\"\npitr = true\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(
        err.contains("`postgres.a b` archives its WAL (`pitr = true`) under its name"),
        "{err}"
    );
}

#[test]
fn choosing_a_database() {
    let none = parse("").unwrap();
    assert!(none
        .database(None)
        .unwrap_err()
        .to_string()
        .contains("[postgres.NAME]"));
    let two = parse(
        "[postgres.a]\nurl = \"postgresql://h/a\"\n[postgres.b]\nurl = \"postgresql://h/b\"\n",
    )
    .unwrap();
    assert!(two.database(None).unwrap_err().to_string().contains("--db"));
    assert_eq!(two.database(Some("b")).unwrap().0, "b");
    assert!(two
        .database(Some("c"))
        .unwrap_err()
        .to_string()
        .contains("`a`, `b`"));
}

#[test]
fn bad_recipient_and_level_are_errors() {
    let err = parse("[encryption]\nrecipients = [\"age1nope\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("age1nope"), "{err}");
    let err = parse("[compression]\nlevel = 40\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("compression.level"), "{err}");
}

#[test]
fn bad_steps_and_schedules_name_their_line() {
    let err = parse("[jobs.nightly]\nsteps = [\"backup db\", \"backup everything\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("unknown step `backup everything`"),
        "{err}"
    );
    let err = parse("[jobs.nightly]\nsteps = [\"prune\"]\nschedule = \"0 25 * * *\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 3") && err.contains("schedule `0 25 * * *`"),
        "{err}"
    );
}

#[test]
fn defaults_fill_what_is_not_written() {
    let config = parse("[compression]\nthreads = 2\n[retention]\ndaily_days = 10\n").unwrap();
    assert_eq!(
        (config.compression.level, config.compression.threads),
        (3, 2)
    );
    assert_eq!(
        (config.retention.daily_days, config.retention.monthly_months),
        (10, 12)
    );
    assert_eq!(config.retention.time_zone.name(), "UTC");
    let jobs = config.jobs();
    assert_eq!(jobs["daily"].steps.len(), 6);
    assert_eq!(jobs["weekly"].steps, vec![Step::Verify(None)]);
    // A section with a required key says so.
    let err = parse("[repository]\nendpoint = \"http://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `url`"), "{err}");
}

#[test]
fn the_redacted_display_reads_back() {
    let text = "[repository]\nurl = \"s3://b/p\"\nendpoint = \"http://127.0.0.1:9\"\n\
                [jobs.nightly]\nsteps = [\"backup db main\", \"prune\"]\nschedule = \"30 1 * * *\"\n\
                [daemon]\ntime_zone = \"Asia/Jakarta\"\n";
    let config = parse(text).unwrap();
    let shown = config.to_redacted_toml();
    let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again.jobs["nightly"].steps, config.jobs["nightly"].steps);
    assert_eq!(again.daemon.time_zone.name(), "Asia/Jakarta");
    assert_eq!(again.repository.url, config.repository.url);
}

#[test]
fn every_missing_variable_and_file_at_once() {
    let err = parse(
        "[repository]\nurl = \"s3://b/p\"\nsecret_access_key = \"${LIFEBOAT_TEST_UNSET_A}\"\n\
         [postgres.main]\nurl = \"postgresql://u@h/db\"\npassword_file = \"/nonexistent/lifeboat-pg\"\n\
         [notify]\nwebhook = \"${LIFEBOAT_TEST_UNSET_B}\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 3"), "{err}");
    for named in [
        "`LIFEBOAT_TEST_UNSET_A`",
        "`/nonexistent/lifeboat-pg`",
        "`LIFEBOAT_TEST_UNSET_B`",
    ] {
        assert!(err.contains(named), "{named} missing from: {err}");
    }
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn secrets_from_files_are_used_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let text = format!(
        "[repository]\nurl = \"s3://b/p\"\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n\
         [postgres.main]\nurl = \"postgresql://u@h/db\"\npassword_file = \"{}\"\n\
         [notify]\nslack_webhook_file = \"{}\"\n\
         [redis]\nurl = \"redis://cache:6379\"\nuser = \"app\"\npassword_file = \"{}\"\n",
        file("key", "AKIDFILE\n"),
        file("secret", "filesecret-1\n"),
        file("pg", "pg-from-file\n"),
        file("slack", "https://hooks.slack.com/services/T/B/filetoken\n"),
        file("redis", "redis pass!\n"),
    );
    let config = parse(&text).unwrap();
    let access = config.repository.access();
    assert_eq!(access.access_key_id.unwrap().expose(), "AKIDFILE");
    assert_eq!(access.secret_access_key.unwrap().expose(), "filesecret-1");
    let pg = &config.postgres["main"];
    assert_eq!(pg.password.as_ref().unwrap().expose(), "pg-from-file");
    let redis = config.redis.as_ref().unwrap();
    assert_eq!(redis.password.as_ref().unwrap().expose(), "redis pass!");
    let shown = format!(
        "{}{:?}{}",
        config.to_redacted_toml(),
        config,
        serde_json::to_string(&config).unwrap()
    );
    for secret in [
        "AKIDFILE",
        "filesecret-1",
        "pg-from-file",
        "filetoken",
        "redis pass!",
    ] {
        assert!(!shown.contains(secret), "{secret} shown");
    }
    // Both forms of one secret: which one is meant?
    let err = parse(&format!(
        "[postgres.main]\nurl = \"postgresql://u@h/db\"\npassword = \"x\"\npassword_file = \"{}\"\n",
        file("pg2", "y")
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[postgres.main]") && err.contains("`password_file`"),
        "{err}"
    );
}

#[test]
fn copies_are_elsewhere_anchored_secret_and_seen_as_repositories() {
    let text = "[repository]\nurl = \"repo\"\n[retention]\ndaily_days = 30\n\
                [repository.copies.near]\nurl = \"near-copy\"\n\
                [repository.copies.offsite]\nurl = \"s3://other/lifeboat\"\n\
                endpoint = \"https://acct.r2.cloudflarestorage.com\"\n\
                access_key_id = \"AKIA\"\nsecret_access_key = \"copysecret\"\n\
                [repository.copies.offsite.retention]\ndaily_days = 60\n";
    let config = parse(text).unwrap();
    let near = config.for_copy("near").unwrap();
    assert_eq!(
        near.repository.url,
        RepositoryUrl::Local(PathBuf::from("/etc/lifeboat/near-copy"))
    );
    assert_eq!(near.retention.daily_days, 30, "unset: [retention]");
    let offsite = config.for_copy("offsite").unwrap();
    assert_eq!(offsite.retention.daily_days, 60);
    assert!(offsite.repository.copies.is_empty());
    let shown = format!("{config:?}{offsite:?}{}", config.to_redacted_toml());
    assert!(!shown.contains("copysecret"), "{shown}");
    let err = config.for_copy("nope").unwrap_err().to_string();
    assert!(
        err.contains("copy `nope` is not configured") && err.contains("`near`, `offsite`"),
        "{err}"
    );
    // A copy where the repository is, or where another copy is, is refused.
    let err = parse("[repository]\nurl = \"repo\"\n[repository.copies.same]\nurl = \"repo\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`repository.copies.same.url`") && err.contains("the repository"),
        "{err}"
    );
    let err = parse(
        "[repository]\nurl = \"repo\"\n[repository.copies.a]\nurl = \"s3://x/y\"\n\
         [repository.copies.b]\nurl = \"s3://x/y\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("copy `a`"), "{err}");
}

#[test]
fn object_lock_is_refused_where_it_cannot_be() {
    let err = parse("[repository]\nurl = \"repo\"\nobject_lock = \"governance\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`repository.object_lock`") && err.contains("is a local folder"),
        "{err}"
    );
    let err = parse(
        "[repository]\nurl = \"s3://b/p\"\n[repository.copies.r2]\nurl = \"s3://c/p\"\n\
         endpoint = \"https://acct.r2.cloudflarestorage.com\"\nobject_lock = \"compliance\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`repository.copies.r2.object_lock`")
            && err.contains("Cloudflare R2")
            && err.contains("lifecycle --locks"),
        "{err}"
    );
    let err = parse("[repository]\nurl = \"s3://b/p\"\nobject_lock = \"forever\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forever") && err.contains("governance"),
        "{err}"
    );
    let config = parse("[repository]\nurl = \"s3://b/p\"\nobject_lock = \"compliance\"\n").unwrap();
    assert_eq!(
        config.repository.object_lock,
        Some(crate::config::LockMode::Compliance)
    );
}

#[test]
fn stream_settings_are_checked() {
    let err = parse("[wal]\nstream_slot = \"Life-Boat\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`wal.stream_slot` is `Life-Boat`"), "{err}");
    let err = parse("[daemon]\nwal_stream = [\"main\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`daemon.wal_stream` names `main`"), "{err}");
    let ok = parse("[wal]\nstream_sync = true\nstream_slot = \"lifeboat_2\"\n").unwrap();
    assert!(ok.wal.stream_sync);
    assert_eq!(ok.wal.stream_flush_ms, 1000);
}
