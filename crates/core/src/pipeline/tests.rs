//! The pipeline end to end on memory storage.

use std::io;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::error::Error;
use crate::storage::Storage;

#[test]
fn sealed_bytes_round_trip() {
    let raw: Vec<u8> = (0..100_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let plain = SealOptions {
        level: 3,
        threads: 1,
        recipients: vec![],
        framing: None,
    };
    let stored = seal_bytes(&raw, &plain).unwrap();
    assert!(stored.len() < raw.len());
    assert_eq!(open_bytes(&stored, None, "x").unwrap(), raw);
    let mut bad = stored.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    assert!(open_bytes(&bad, None, "x").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_downloads_as_it_was_and_a_damaged_byte_is_caught() {
    let storage = Storage::memory("p", &crate::storage::Env::default());
    let raw: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let seal = SealOptions {
        level: 3,
        threads: 1,
        recipients: vec![],
        framing: None,
    };
    let target = UploadTarget {
        path: "data/db/x.dump.zst",
        storage_class: None,
        part_size: 1 << 20,
        concurrency: 2,
    };
    let cancel = CancellationToken::new();
    let stats = upload(
        &storage,
        target,
        std::io::Cursor::new(raw.clone()),
        || {},
        seal,
        crate::progress::Task::silent(),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(stats.raw_size, raw.len() as u64);
    let expected = Expected {
        backup_id: "x".into(),
        sha256: stats.sha256.clone(),
        stored_size: stats.stored_size,
        encrypted: false,
    };
    let got = download(
        &storage,
        "data/db/x.dump.zst",
        &expected,
        None,
        Vec::new(),
        &cancel,
    )
    .await
    .unwrap();
    match got {
        Delivered::Complete(bytes) => assert!(bytes == raw),
        Delivered::ConsumerClosed(_) => panic!("the consumer closed"),
    }
    let mut stored = storage
        .read_opt("data/db/x.dump.zst")
        .await
        .unwrap()
        .unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 1;
    storage.write("data/db/x.dump.zst", stored).await.unwrap();
    let err = download(
        &storage,
        "data/db/x.dump.zst",
        &expected,
        None,
        Vec::new(),
        &cancel,
    )
    .await
    .err()
    .expect("a damaged object is refused");
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

#[test]
fn io_error_round_trips_engine_error() {
    let wrapped = io::Error::other(Error::Interrupted("x".into()));
    assert!(matches!(from_io(wrapped, "c"), Error::Interrupted(_)));
    assert!(matches!(
        from_io(io::Error::other("plain"), "c"),
        Error::Io { .. }
    ));
}
