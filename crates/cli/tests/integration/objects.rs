//! Object backup between two real S3 servers with different credentials: first copy, an
//! incremental run after adds, changes and deletes, restores as of a run (whole bucket into
//! another, a prefix into the source), dry runs, and a server that fails some requests.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use lifeboat_testkit::{Faults, S3Server, ServeOptions};
use serde_json::Value;

use crate::support::{run_of, Run};

pub struct Buckets {
    pub dir: tempfile::TempDir,
    pub source: S3Server,
    pub dest: S3Server,
    pub config: PathBuf,
}

const SRC_SECRET: &str = "source-secret-value";
const DST_SECRET: &str = "destination-secret-value";

impl Buckets {
    pub fn new(dest_faults: Faults) -> Buckets {
        let dir = tempfile::tempdir().unwrap();
        let source = S3Server::start("source-key", SRC_SECRET);
        source.create_bucket("media");
        source.create_bucket("restored");
        let dest = S3Server::start_with(
            "dest-key",
            DST_SECRET,
            ServeOptions {
                faults: dest_faults,
                ..Default::default()
            },
        );
        dest.create_bucket("media-backup");
        let config = dir.path().join("lifeboat.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nurl = \"file://{}/repo\"\n\n\
                 [objects.media]\ntransfers = 4\npart_size_mib = 5\n\
                 [objects.media.source]\nurl = \"s3://media\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
                 access_key_id = \"source-key\"\nsecret_access_key = \"${{LB_SRC_SECRET}}\"\n\
                 [objects.media.destination]\nurl = \"s3://media-backup/yomira\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
                 access_key_id = \"dest-key\"\nsecret_access_key = \"${{LB_DST_SECRET}}\"\n",
                dir.path().display(),
                source.endpoint,
                dest.endpoint
            ),
        )
        .unwrap();
        Buckets {
            dir,
            source,
            dest,
            config,
        }
    }

    pub fn lifeboat(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("LIFEBOAT_CONFIG")
            .env("LIFEBOAT_LOG", "info")
            .env("LB_SRC_SECRET", SRC_SECRET)
            .env("LB_DST_SECRET", DST_SECRET)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("lifeboat runs");
        run_of(out)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.lifeboat(&all);
        assert_eq!(out.code, 0, "{args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        self.source.put("media", key, data.to_vec(), None, &[]);
    }

    /// Stored keys of the destination bucket below the backup's prefix.
    pub fn dest_keys(&self) -> Vec<String> {
        self.dest
            .keys("media-backup")
            .into_iter()
            .filter_map(|k| k.strip_prefix("yomira/").map(str::to_string))
            .collect()
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn data(b: &Buckets, bucket: &str, key: &str) -> Option<Vec<u8>> {
    b.source.get(bucket, key).map(|o| o.data)
}

#[test]
fn backup_history_and_restore_between_two_accounts() {
    let b = Buckets::new(Faults::default());
    let big = pseudo_random(12 << 20, 7);
    b.source.put(
        "media",
        "a.txt",
        b"first version of a".to_vec(),
        Some("text/plain"),
        &[("owner", "alice")],
    );
    b.source.put(
        "media",
        "img/1.jpg",
        b"jpeg-one".to_vec(),
        Some("image/jpeg"),
        &[],
    );
    b.put("img/2.jpg", b"jpeg-two");
    b.put("img/3.jpg", b"jpeg-three");
    b.put("big.bin", &big);

    // First copy.
    let first = b.json(&["backup", "objects"]);
    let run1 = first["run"].as_str().unwrap().to_string();
    assert_eq!(first["summary"]["scanned"], 5);
    assert_eq!(first["summary"]["added"], 5);
    assert_eq!(first["summary"]["copied"], 5);
    assert_eq!(
        first["summary"]["copied_bytes"],
        (12 << 20) + 18 + 8 + 8 + 10
    );
    assert_eq!(first["complete"], true);
    let keys = b.dest_keys();
    assert!(keys.contains(&format!("v/{run1}/big.bin")), "{keys:?}");
    assert!(keys.contains(&format!("runs/{run1}.json")), "{keys:?}");

    // A re-run with nothing changed copies nothing.
    let same = b.json(&["backup", "objects"]);
    assert_eq!(same["summary"]["unchanged"], 5);
    assert_eq!(same["summary"]["copied"], 0);

    // Changes: an overwrite of the same size (only the time tells), a resize, a delete, an add.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.put("img/1.jpg", b"JPEG-ONE");
    b.source.put(
        "media",
        "a.txt",
        b"second, longer version of a".to_vec(),
        Some("text/markdown"),
        &[],
    );
    b.source.delete("media", "img/2.jpg");
    b.put("new.txt", b"brand new");

    // A dry run shows the plan and records nothing.
    let plan = b.json(&["backup", "objects", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["summary"]["changed"], 2);
    assert_eq!(plan["summary"]["removed"], 1);
    assert_eq!(plan["summary"]["added"], 1);
    let runs_before = b.json(&["list", "objects"]).as_array().unwrap().len();
    assert_eq!(runs_before, 2);

    let second = b.json(&["backup", "objects"]);
    let run3 = second["run"].as_str().unwrap().to_string();
    assert_eq!(second["summary"]["added"], 1);
    assert_eq!(second["summary"]["changed"], 2);
    assert_eq!(second["summary"]["removed"], 1);
    assert_eq!(second["summary"]["unchanged"], 2);
    assert_eq!(second["summary"]["copied"], 3);
    assert_eq!(second["summary"]["to_history"], 3);
    assert_eq!(second["summary"]["objects"], 5);
    let keys = b.dest_keys();
    assert!(keys.contains(&format!("v/{run3}/new.txt")), "{keys:?}");
    // The old versions are still there.
    assert!(keys.contains(&format!("v/{run1}/img/2.jpg")), "{keys:?}");
    assert!(keys.contains(&format!("v/{run1}/a.txt")), "{keys:?}");

    let list = b.lifeboat(&["list", "objects"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains(&run1) && list.stdout.contains(&run3));

    // The whole bucket as of the first run, into another bucket.
    let as_of = first_run_time(&b, &run1);
    let restored = b.json(&[
        "restore",
        "objects",
        "--as-of",
        &as_of,
        "--to",
        "s3://restored",
    ]);
    assert_eq!(restored["run"], run1.as_str());
    assert_eq!(restored["restored"], 5);
    let a = b.source.get("restored", "a.txt").unwrap();
    assert_eq!(a.data, b"first version of a");
    assert_eq!(a.content_type.as_deref(), Some("text/plain"));
    assert_eq!(a.metadata.get("owner").map(String::as_str), Some("alice"));
    assert_eq!(
        b.source
            .get("restored", "img/1.jpg")
            .unwrap()
            .content_type
            .as_deref(),
        Some("image/jpeg")
    );
    assert_eq!(data(&b, "restored", "img/1.jpg").unwrap(), b"jpeg-one");
    assert_eq!(data(&b, "restored", "img/2.jpg").unwrap(), b"jpeg-two");
    assert_eq!(data(&b, "restored", "big.bin").unwrap(), big);
    assert_eq!(data(&b, "restored", "new.txt"), None);

    // A prefix of the source, as of the first run: the deleted and the overwritten image come
    // back, the unchanged one is not copied, nothing outside the prefix is touched.
    let restored = b.json(&["restore", "objects", "--as-of", &as_of, "--prefix", "img/"]);
    assert_eq!(restored["objects"], 3);
    assert_eq!(restored["restored"], 2);
    assert_eq!(restored["unchanged"], 1);
    assert_eq!(data(&b, "media", "img/2.jpg").unwrap(), b"jpeg-two");
    assert_eq!(data(&b, "media", "img/1.jpg").unwrap(), b"jpeg-one");
    assert_eq!(
        data(&b, "media", "a.txt").unwrap(),
        b"second, longer version of a"
    );
    assert_eq!(data(&b, "media", "new.txt").unwrap(), b"brand new");

    // A restore to a moment before any run names the oldest.
    let out = b.lifeboat(&["restore", "objects", "--as-of", "2001-01-01T00:00:00Z"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains(&format!("the oldest is `{run1}`")),
        "{}",
        out.stderr
    );

    // History older than `history_days` goes with prune: 100 days on, the third run is the
    // newest before the window, the versions it replaced go, and it still restores in full.
    assert_eq!(b.lifeboat(&["init"]).code, 0);
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 100)).to_string();
    let pruned = b.json(&["prune", "--at", &later]);
    let outcome = &pruned["outcome"]["objects"][0][1];
    assert_eq!(outcome["runs_removed"], 2, "{pruned}");
    assert_eq!(outcome["versions_removed"], 3, "{pruned}");
    let keys = b.dest_keys();
    assert!(!keys.contains(&format!("v/{run1}/a.txt")), "{keys:?}");
    assert!(!keys.contains(&format!("v/{run1}/img/2.jpg")), "{keys:?}");
    assert!(keys.contains(&format!("v/{run1}/big.bin")), "{keys:?}");
    assert_eq!(b.json(&["list", "objects"]).as_array().unwrap().len(), 1);
    let restored = b.json(&["restore", "objects", "--to", "s3://restored", "--delete"]);
    assert_eq!(restored["failed"], 0);
    assert_eq!(
        data(&b, "restored", "a.txt").unwrap(),
        b"second, longer version of a"
    );
    assert_eq!(
        data(&b, "restored", "img/2.jpg"),
        None,
        "--delete removes what the run lacked"
    );
    assert_eq!(data(&b, "restored", "big.bin").unwrap(), big);

    // Secrets never reach the output.
    for text in [&list.stdout, &list.stderr, &out.stderr] {
        assert!(!text.contains(SRC_SECRET) && !text.contains(DST_SECRET));
    }
}

fn first_run_time(b: &Buckets, run: &str) -> String {
    let runs = b.json(&["list", "objects"]);
    let record = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run)
        .unwrap();
    record["started"].as_str().unwrap().to_string()
}

#[test]
fn failing_objects_are_retried_then_reported_and_the_rest_is_copied() {
    let b = Buckets::new(Faults {
        broken: Some("broken".into()),
        flaky: Some("flaky".into()),
    });
    for key in ["ok-1", "flaky-1", "broken-1", "ok-2"] {
        b.put(key, key.as_bytes());
    }
    let out = b.lifeboat(&["backup", "objects", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.json_error();
    assert_eq!(error["kind"], "incomplete");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("1 of 4 objects could not be copied"),
        "{error}"
    );
    assert!(out.stderr.contains("broken-1"), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["summary"]["copied"], 3);
    assert_eq!(report["failures"][0]["key"], "broken-1");
    let run = report["run"].as_str().unwrap();
    let keys = b.dest_keys();
    for key in ["ok-1", "flaky-1", "ok-2"] {
        assert!(keys.contains(&format!("v/{run}/{key}")), "{key}: {keys:?}");
    }
    // The run is recorded as incomplete, and the next one tries the failed object again.
    let runs = b.json(&["list", "objects"]);
    assert_eq!(runs[0]["complete"], false);
    let again = b.lifeboat(&["backup", "objects", "--json"]);
    let report: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(report["summary"]["added"], 1, "{}", again.stdout);
    assert_eq!(report["summary"]["unchanged"], 3);
}

#[test]
fn bad_object_config_is_one_line() {
    let b = Buckets::new(Faults::default());
    let out = b.lifeboat(&["backup", "objects", "--name", "nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line()
            .contains("object backup `nope` is not configured"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("url = \"s3://media\"", "url = \"/srv/media\"");
    std::fs::write(&b.config, text).unwrap();
    let out = b.lifeboat(&["backup", "objects"]);
    assert_eq!(out.code, 1);
    let line = out.error_line();
    assert!(
        line.contains("bucket url `/srv/media` must be `s3://BUCKET`") && line.contains("line"),
        "{line}"
    );
}

#[test]
fn a_copy_within_one_account_is_made_by_the_server() {
    let b = Buckets::new(Faults::default());
    b.source.create_bucket("media-copy");
    let text = std::fs::read_to_string(&b.config).unwrap();
    let (head, _) = text.split_once("[objects.media.destination]").unwrap();
    let same = format!(
        "{head}[objects.media.destination]\nurl = \"s3://media-copy/backup\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"source-key\"\nsecret_access_key = \"${{LB_SRC_SECRET}}\"\n",
        b.source.endpoint
    );
    std::fs::write(&b.config, same).unwrap();
    b.source.put(
        "media",
        "dir/with space+plus.txt",
        b"copied by the server".to_vec(),
        Some("text/plain"),
        &[("origin", "upload")],
    );
    let before = b.source.requests();
    let report = b.json(&["backup", "objects"]);
    assert_eq!(report["summary"]["copied"], 1);
    let run = report["run"].as_str().unwrap();
    let copy = b
        .source
        .get(
            "media-copy",
            &format!("backup/v/{run}/dir/with space+plus.txt"),
        )
        .unwrap();
    assert_eq!(copy.data, b"copied by the server");
    assert_eq!(copy.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        copy.metadata.get("origin").map(String::as_str),
        Some("upload")
    );
    // The bytes never came through lifeboat: one server-side copy, no GET of the object.
    assert_eq!(report["summary"]["requests"]["copy"], 1, "{report}");
    assert_eq!(report["summary"]["requests"]["get"], 0, "{report}");
    assert!(b.source.requests() > before);
    let restored = b.json(&["restore", "objects", "--to", "s3://restored"]);
    assert_eq!(restored["restored"], 1);
    assert_eq!(
        b.source
            .get("restored", "dir/with space+plus.txt")
            .unwrap()
            .data,
        b"copied by the server"
    );
}
