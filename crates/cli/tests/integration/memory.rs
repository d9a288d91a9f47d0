//! Memory stays bounded whatever the size of the backup: a dump several times larger than
//! the limit is backed up and restored, local and on S3, while its peak resident memory
//! (`VmHWM`) is watched. (OpenDAL's writers used to keep every uploaded part until the end:
//! 241 MB for a 1.3 GB database.)

use std::time::Duration;

use crate::support::{run_of, Env, Repo};

/// The limits: below the dump, above what the parts in flight need (5 MiB parts, four in
/// flight, one filling) plus the binary itself; a restore also holds the ranges it reads at
/// once (four of up to 8 MiB, and the one being handed on) and the decompressor's window.
const BACKUP_LIMIT_MIB: u64 = 96;
const RESTORE_LIMIT_MIB: u64 = 128;

/// Runs lifeboat with `args` and returns its output and its peak resident memory in MiB, read
/// from `/proc` until it exits (the high-water mark only grows).
fn peak_of(env: &Env, args: &[&str]) -> (crate::support::Run, u64) {
    let mut child = env.start(args);
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (run_of(child.wait_with_output().unwrap()), peak_kib >> 10)
}

fn backup_and_restore_in_bounded_memory(repo: Repo) {
    let env = Env::new(repo, false);
    let config = std::fs::read_to_string(&env.config).unwrap();
    if repo == Repo::Local {
        // Small parts, as on S3, so that the limit is many parts.
        std::fs::write(
            &env.config,
            config.replacen("[repository]\n", "[repository]\npart_size_mib = 5\n", 1),
        )
        .unwrap();
    }
    // About 120 MiB that zstd cannot shrink.
    env.sql(
        "yomira",
        "CREATE TABLE public.blobs AS SELECT g AS id, decode(string_agg(md5(g::text || ':' || r::text), ''), 'hex') AS payload \
         FROM generate_series(1, 30000) g, generate_series(1, 256) r GROUP BY g",
    );
    let (out, peak) = peak_of(&env, &["backup", "db", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let stored = manifest["stored_size"].as_u64().unwrap() >> 20;
    assert!(stored >= 110, "stored only {stored} MiB");
    eprintln!("{repo:?}: backing up {stored} MiB took {peak} MiB");
    assert!(
        peak < BACKUP_LIMIT_MIB,
        "{repo:?}: backing up {stored} MiB took {peak} MiB of memory"
    );
    let id = manifest["id"].as_str().unwrap().to_string();
    env.new_database("restored");
    let url = env.cluster.url("restored");
    let (out, peak) = peak_of(&env, &["restore", "db", &id, "--into", &url]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eprintln!("{repo:?}: restoring {stored} MiB took {peak} MiB");
    assert!(
        peak < RESTORE_LIMIT_MIB,
        "{repo:?}: restoring {stored} MiB took {peak} MiB of memory"
    );
    assert_eq!(
        env.sql("restored", "SELECT count(*) FROM public.blobs"),
        "30000"
    );
}

#[test]
fn a_large_backup_stays_in_bounded_memory_local() {
    backup_and_restore_in_bounded_memory(Repo::Local);
}

#[test]
fn a_large_backup_stays_in_bounded_memory_s3() {
    backup_and_restore_in_bounded_memory(Repo::S3);
}
