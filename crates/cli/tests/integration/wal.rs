//! The WAL archive: wal-push and wal-fetch by hand, and as PostgreSQL's archive_command.

use std::time::Duration;

use crate::support::{fake_segment, wait_until, Env, Repo, FAKE_SYSTEM_ID};

fn segment(name: &str, seed: u8) -> Vec<u8> {
    fake_segment(name, FAKE_SYSTEM_ID, seed)
}

#[test]
fn push_fetch_idempotence_and_conflicts() {
    let env = Env::new(Repo::S3, true);
    let wal_dir = env.dir.path().join("pg_wal");
    std::fs::create_dir_all(wal_dir.join("archive_status")).unwrap();
    let name = "000000090000000000000001";
    let data = segment(name, 1);
    std::fs::write(wal_dir.join(name), &data).unwrap();
    let path = format!("pg_wal/{name}");

    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        env.stored_files()
            .iter()
            .any(|k| k.ends_with(&format!("wal/{name}.zst.age"))),
        "{:?}",
        env.stored_files()
    );

    // The same content again: a retry, which succeeds.
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Other content under the same name: refused, the archived copy untouched.
    std::fs::write(wal_dir.join(name), segment(name, 2)).unwrap();
    let out = env.lifeboat(&["wal-push", &path]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("different content"),
        "{}",
        out.stderr
    );

    let fetched = env.dir.path().join("fetched");
    let out = env.lifeboat(&["wal-fetch", name, fetched.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        std::fs::read(&fetched).unwrap() == data,
        "fetched segment differs"
    );

    // A file the archive does not have: exit 1, nothing said, nothing written.
    let missing = env.dir.path().join("missing");
    let out = env.lifeboat(&[
        "-q",
        "wal-fetch",
        "000000090000000000000002",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
    assert!(!missing.exists());

    // Any other failure exits 255, which PostgreSQL takes as fatal rather than as the end of
    // the archive: here the key to the encrypted archive is not configured.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("identity_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut env = env;
    env.write_config(&without);
    let unreadable = env.dir.path().join("unreadable");
    let out = env.lifeboat(&["wal-fetch", name, unreadable.to_str().unwrap()]);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(
        out.error_line().contains("set `encryption.identity_file`"),
        "{}",
        out.stderr
    );
    assert!(!unreadable.exists());
    // So does a `restore_command` written wrong.
    let out = env.lifeboat(&["wal-fetch", name]);
    assert_eq!(out.code, 255, "{}", out.stderr);
    env.write_config(&text);

    // History files are archived too.
    std::fs::write(
        wal_dir.join("00000009.history"),
        b"8\t0/3000000\tno recovery target specified\n",
    )
    .unwrap();
    assert_eq!(
        env.lifeboat(&["wal-push", "pg_wal/00000009.history"]).code,
        0
    );
    let out = env.lifeboat(&[
        "wal-fetch",
        "00000009.history",
        env.dir.path().join("h").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Not a WAL name: a clear error.
    std::fs::write(wal_dir.join("postgresql.conf"), b"x").unwrap();
    let out = env.lifeboat(&["wal-push", "pg_wal/postgresql.conf"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("not a WAL segment"),
        "{}",
        out.stderr
    );
}

#[test]
fn push_ahead_pushes_ready_segments_once() {
    let env = Env::new(Repo::Local, false);
    let wal_dir = env.dir.path().join("pg_wal");
    std::fs::create_dir_all(wal_dir.join("archive_status")).unwrap();
    let names: Vec<String> = (1..=4)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(wal_dir.join(name), segment(name, i as u8)).unwrap();
        std::fs::write(
            wal_dir.join("archive_status").join(format!("{name}.ready")),
            b"",
        )
        .unwrap();
    }
    let spool_root = env.dir.path().join("spool");
    let text = std::fs::read_to_string(&env.config).unwrap();
    let mut env = env;
    env.write_config(&format!(
        "{text}[wal]\nspool_dir = \"{}\"\n",
        spool_root.display()
    ));

    let out = env.lifeboat(&["wal-push", &format!("pg_wal/{}", names[0])]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The spool is private, with a folder per repository.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&spool_root).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "spool mode {mode:o}");
    let spool = only_folder_in(&spool_root);
    // The others go in the background; PostgreSQL's push for the first did not wait for them.
    wait_until(Duration::from_secs(10), "segments pushed ahead", || {
        names[1..]
            .iter()
            .all(|n| spool.join(format!("{n}.pushed")).exists())
    });
    let stored: Vec<String> = env
        .stored_files()
        .into_iter()
        .filter(|k| k.starts_with("wal/") && k.ends_with(".zst"))
        .collect();
    assert_eq!(stored.len(), 4, "pushed ahead: {stored:?}");
    for name in &names[1..] {
        assert!(spool.join(format!("{name}.pushed")).exists());
    }
    // PostgreSQL then asks for the next one: served by the marker, which is consumed.
    let out = env.lifeboat(&["wal-push", &format!("pg_wal/{}", names[1])]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!spool.join(format!("{}.pushed", names[1])).exists());
    // A marker vouches only for the file it was written for: another file of that name is
    // pushed for real, and refused, since the archive holds other content.
    std::fs::write(wal_dir.join(&names[2]), segment(&names[2], 9)).unwrap();
    let out = env.lifeboat(&["wal-push", &format!("pg_wal/{}", names[2])]);
    assert_ne!(out.code, 0, "a marker vouched for another file");
    assert!(
        out.error_line().contains("different content"),
        "{}",
        out.stderr
    );

    // wal-fetch prefetches the following segments into the spool.
    let out = env.lifeboat(&[
        "wal-fetch",
        &names[0],
        env.dir.path().join("s1").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // In the background: the fetch itself returned at once.
    wait_until(Duration::from_secs(5), "prefetched segments", || {
        names[1..]
            .iter()
            .all(|n| spool.join("fetched").join(n).exists())
    });
    let out = env.lifeboat(&[
        "wal-fetch",
        &names[2],
        env.dir.path().join("s3").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(std::fs::read(env.dir.path().join("s3")).unwrap() == segment(&names[2], 2));
    assert!(
        !spool.join("fetched").join(&names[2]).exists(),
        "a served prefetch stays behind"
    );
    assert!(
        !spool.join("fetched").join(&names[1]).exists(),
        "a segment recovery went past stays in the spool"
    );

    let list = env.lifeboat(&["list", "wal"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains(
            "timeline 1: 000000010000000000000001 .. 000000010000000000000004 (4 segments)"
        ),
        "{}",
        list.stdout
    );

    // A repository created anew at the same location never gets the old one's prefetched
    // segments: here the old archive's `names[3]` waits in the spool, and the new archive
    // holds other content under that name.
    wait_until(Duration::from_secs(5), "a prefetched segment", || {
        spool.join("fetched").join(&names[3]).exists()
    });
    std::fs::remove_dir_all(env.dir.path().join("repo")).unwrap();
    assert_eq!(env.lifeboat(&["init"]).code, 0);
    std::fs::write(wal_dir.join(&names[3]), segment(&names[3], 7)).unwrap();
    let out = env.lifeboat(&["wal-push", &format!("pg_wal/{}", names[3])]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fetched = env.dir.path().join("s4");
    let out = env.lifeboat(&["wal-fetch", &names[3], fetched.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        std::fs::read(&fetched).unwrap() == segment(&names[3], 7),
        "a segment of the old repository was handed over"
    );

    // A spool that others may write to is refused: what is in it would be trusted.
    std::fs::set_permissions(&spool_root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.lifeboat(&["wal-fetch", &names[3], fetched.to_str().unwrap()]);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(
        out.error_line().contains("is not a private folder"),
        "{}",
        out.stderr
    );
}

fn only_folder_in(dir: &std::path::Path) -> std::path::PathBuf {
    let folders: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    folders[0].clone()
}
