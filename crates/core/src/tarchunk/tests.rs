//! The chunked layout end to end: cut, compressed, unpacked, and read as plain zstd.

use std::path::Path;

use super::format::{padding, write_chunk, BLOCK};
use super::*;
use crate::progress::Task;

/// A ustar archive as `pg_basebackup` writes one.
fn archive(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let (mode, kind, size) = match data {
            Some(d) => (0o600, b'0', d.len()),
            None => (0o700, b'5', 0),
        };
        h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        if let Some(d) = data {
            out.extend_from_slice(d);
            out.resize(out.len() + padding(d.len() as u64) as usize, 0);
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sample() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let files = vec![
        ("base/1/1259", pseudo_random(40_000, 1)),
        ("base/1/16384", pseudo_random(3 * 4096 + 17, 2)),
        ("global/pg_control", pseudo_random(8192, 3)),
        ("PG_VERSION", b"15\n".to_vec()),
        ("empty", Vec::new()),
    ];
    let mut entries: Vec<(&str, Option<&[u8]>)> =
        vec![("base", None), ("base/1", None), ("global", None)];
    entries.extend(files.iter().map(|(n, d)| (*n, Some(d.as_slice()))));
    (archive(&entries), files)
}

#[test]
fn cuts_fall_on_blocks_and_rebuild_the_stream() {
    let (tar, _) = sample();
    for target in [512, 1024, 4096, 10_000, 1 << 20] {
        let mut cutter = Cutter::new(target);
        let mut chunks = Vec::new();
        // Fed in odd pieces, as a pipe delivers.
        for piece in tar.chunks(777) {
            cutter
                .feed(piece, &mut |c| {
                    chunks.push(c);
                    Ok(())
                })
                .unwrap();
        }
        chunks.extend(cutter.finish().unwrap());
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
        assert_eq!(joined, tar, "target {target}");
        let mut offset = 0;
        for c in &chunks {
            assert_eq!(offset % BLOCK, 0, "target {target}: cut off a block");
            offset += c.bytes.len();
        }
        if target <= 4096 {
            assert!(
                chunks.iter().any(|c| c.resume.is_some()),
                "target {target}: no cut inside a file"
            );
        }
    }
}

#[test]
fn a_cut_short_archive_is_refused() {
    let (tar, _) = sample();
    let mut cutter = Cutter::new(4096);
    cutter
        .feed(&tar[..tar.len() - 2 * BLOCK - 1000], &mut |_| Ok(()))
        .unwrap();
    assert!(cutter.finish().is_err());
}

fn check_tree(dest: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let got = std::fs::read(dest.join(name)).unwrap();
        assert_eq!(&got, data, "{name}");
    }
}

#[test]
fn chunked_stream_unpacks_in_parallel_and_reads_as_plain_zstd() {
    let (tar, files) = sample();
    // Small chunks through the same code as real ones: cut, compress, write.
    let mut cutter = Cutter::new(4096);
    let mut stored = Vec::new();
    let mut chunks = Vec::new();
    cutter
        .feed(&tar, &mut |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
    chunks.extend(cutter.finish().unwrap());
    for c in &chunks {
        let frame = zstd::bulk::compress(&c.bytes, 3).unwrap();
        let meta = ChunkMeta {
            stored: frame.len() as u64,
            raw: c.bytes.len() as u64,
            resume: c.resume.clone(),
        };
        write_chunk(&mut stored, &frame, &meta).unwrap();
    }
    // Any zstd decoder skips the descriptions: the stored stream is the tar.
    assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), tar);
    for threads in [1, 3] {
        let dest = tempfile::tempdir().unwrap();
        let got = unpack(&stored[..], dest.path(), threads, &Task::silent()).unwrap();
        assert_eq!(got.chunks, chunks.len() as u64);
        assert_eq!(got.raw_size, tar.len() as u64);
        check_tree(dest.path(), &files);
    }
    // A chunk lost from the middle is noticed.
    let mut missing = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        if i == chunks.len() - 1 {
            continue;
        }
        let frame = zstd::bulk::compress(&c.bytes, 3).unwrap();
        let meta = ChunkMeta {
            stored: frame.len() as u64,
            raw: c.bytes.len() as u64,
            resume: c.resume.clone(),
        };
        write_chunk(&mut missing, &frame, &meta).unwrap();
    }
    let dest = tempfile::tempdir().unwrap();
    assert!(unpack(&missing[..], dest.path(), 2, &Task::silent()).is_err());
}

#[test]
fn compress_then_unpack_round_trips() {
    let (tar, files) = sample();
    let mut stored = Vec::new();
    let raw = compress(&tar[..], 3, 2, &mut stored, &Task::silent()).unwrap();
    assert_eq!(raw, tar.len() as u64);
    assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), tar);
    let dest = tempfile::tempdir().unwrap();
    unpack(&stored[..], dest.path(), 2, &Task::silent()).unwrap();
    check_tree(dest.path(), &files);
    // An older backup: the tar as one zstd frame.
    let single = zstd::bulk::compress(&tar, 3).unwrap();
    let dest = tempfile::tempdir().unwrap();
    assert_eq!(
        unpack(&single[..], dest.path(), 2, &Task::silent())
            .unwrap()
            .chunks,
        1
    );
    check_tree(dest.path(), &files);
}

#[test]
fn paths_leaving_the_folder_are_refused() {
    let tar = archive(&[("../escape", Some(b"x"))]);
    let dest = tempfile::tempdir().unwrap();
    let single = zstd::bulk::compress(&tar, 3).unwrap();
    let err = unpack(&single[..], dest.path(), 1, &Task::silent()).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    assert!(!dest.path().parent().unwrap().join("escape").exists());
}

#[test]
fn a_damaged_header_is_refused() {
    let (mut tar, _) = sample();
    tar[10] ^= 1;
    let mut cutter = Cutter::new(4096);
    let err = cutter.feed(&tar, &mut |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

mod incrementals {
    use std::io::Read;

    use super::{archive, pseudo_random};
    use crate::progress::Task;
    use crate::tarchunk::incremental::{
        apply_incremental, finish_chain, read_incremental_head, ManifestTap, BLCKSZ,
        INCREMENTAL_MAGIC,
    };

    /// An `INCREMENTAL.` file as PostgreSQL 17 writes one: the head, padded to a block when
    /// blocks follow, then the blocks.
    fn incremental(truncation: u32, blocks: &[(u32, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [INCREMENTAL_MAGIC, blocks.len() as u32, truncation] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for (b, _) in blocks {
            out.extend_from_slice(&b.to_le_bytes());
        }
        if !blocks.is_empty() {
            out.resize(out.len().div_ceil(BLCKSZ as usize) * BLCKSZ as usize, 0);
        }
        for (_, fill) in blocks {
            out.extend(std::iter::repeat_n(*fill, BLCKSZ as usize));
        }
        out
    }

    fn block(fill: u8) -> Vec<u8> {
        vec![fill; BLCKSZ as usize]
    }

    #[test]
    fn the_head_of_an_incremental_file_is_read_and_a_wrong_one_refused() {
        let file = incremental(5, &[(1, 0xaa), (7, 0xbb)]);
        let head = read_incremental_head(&mut file.as_slice(), file.len() as u64, "x").unwrap();
        assert_eq!(
            (head.truncation_blocks, head.blocks.clone(), head.header_len),
            (5, vec![1, 7], BLCKSZ)
        );
        let empty = incremental(3, &[]);
        let head = read_incremental_head(&mut empty.as_slice(), 12, "x").unwrap();
        assert_eq!(
            (head.truncation_blocks, head.blocks.len(), head.header_len),
            (3, 0, 12)
        );
        let mut bad = file.clone();
        bad[0] ^= 1;
        let err = read_incremental_head(
            &mut bad.as_slice(),
            file.len() as u64,
            "base/5/INCREMENTAL.16384",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`base/5/INCREMENTAL.16384`: magic number"),
            "{err}"
        );
        // Blocks of another size than the server's 8 kB.
        let err =
            read_incremental_head(&mut file.as_slice(), file.len() as u64 - 4096, "x").unwrap_err();
        assert!(err.to_string().contains("block size"), "{err}");
    }

    #[test]
    fn an_incremental_cuts_writes_replaces_and_removes() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir_all(d.join("base/1")).unwrap();
        std::fs::create_dir_all(d.join("base/2")).unwrap();
        let parent: Vec<u8> = [block(1), block(2), block(3)].concat();
        std::fs::write(d.join("base/1/100"), &parent).unwrap();
        std::fs::write(d.join("base/1/200"), block(9)).unwrap();
        std::fs::write(d.join("base/2/300"), block(9)).unwrap();
        std::fs::write(d.join("PG_VERSION"), b"16\n").unwrap();
        // Relation 100 cut to 2 blocks, block 1 and block 3 written (block 2 reads as zeros);
        // relation 200 and folder base/2 are gone; PG_VERSION is sent whole.
        let inc = incremental(2, &[(1, 0x11), (3, 0x33)]);
        // A relation that changed throughout: larger than a worker's job, applied as it streams.
        let big: Vec<(u32, u8)> = (0..1100).map(|b| (b, (b % 251) as u8)).collect();
        let large = incremental(1100, &big);
        let tar = archive(&[
            ("base", None),
            ("base/1", None),
            ("base/1/INCREMENTAL.100", Some(&inc)),
            ("base/1/INCREMENTAL.400", Some(&large)),
            ("PG_VERSION", Some(b"17\n")),
        ]);
        let applied = apply_incremental(tar.as_slice(), d, 3, &Task::silent()).unwrap();
        let counts = (
            applied.incremental_files,
            applied.blocks,
            applied.whole_files,
        );
        assert_eq!(counts, (2, 1102, 1));
        let rebuilt: Vec<u8> = big.iter().flat_map(|(_, fill)| block(*fill)).collect();
        assert!(std::fs::read(d.join("base/1/400")).unwrap() == rebuilt);
        assert_eq!(applied.removed, 2, "{applied:?}");
        let expected: Vec<u8> = [block(1), block(0x11), block(0), block(0x33)].concat();
        assert!(std::fs::read(d.join("base/1/100")).unwrap() == expected);
        assert!(!d.join("base/1/200").exists() && !d.join("base/2").exists());
        assert!(!d.join("base/1/INCREMENTAL.100").exists());
        assert_eq!(std::fs::read(d.join("PG_VERSION")).unwrap(), b"17\n");
        // An archive cut short is refused.
        let err = apply_incremental(&tar[..tar.len() - 2048], d, 1, &Task::silent()).unwrap_err();
        assert!(err.to_string().contains("ends"), "{err}");
    }

    #[test]
    fn the_tap_passes_the_tar_unchanged_and_keeps_the_backup_manifest() {
        let manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 2 }"#.to_vec();
        let big = pseudo_random(70_000, 4);
        let tar = archive(&[
            ("base", None),
            ("base/1/1259", Some(&big)),
            ("backup_manifest", Some(&manifest)),
        ]);
        let (mut tap, caught) = ManifestTap::new(tar.as_slice());
        let mut passed = Vec::new();
        // In odd-sized reads, so that headers and data split across them.
        let mut buf = [0u8; 777];
        loop {
            let n = tap.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            passed.extend_from_slice(&buf[..n]);
        }
        assert!(passed == tar);
        assert_eq!(caught.lock().unwrap().as_deref(), Some(manifest.as_slice()));
    }

    #[test]
    fn a_finished_chain_has_a_plain_label_and_a_manifest_of_its_files() {
        use sha2::Digest;
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir_all(d.join("base/5")).unwrap();
        std::fs::write(d.join("base/5/16384"), block(1).repeat(3)).unwrap();
        std::fs::write(d.join("PG_VERSION"), b"17\n").unwrap();
        std::fs::write(
            d.join("backup_label"),
            "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nLABEL: x\nINCREMENTAL FROM LSN: 0/3000028\nINCREMENTAL FROM TLI: 1\n",
        )
        .unwrap();
        let manifest = "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7,\n\"Files\": [\n\
            { \"Path\": \"backup_label\", \"Size\": 140, \"Last-Modified\": \"2026-12-07 20:36:10 GMT\" },\n\
            { \"Path\": \"base/5/INCREMENTAL.16384\", \"Size\": 12, \"Last-Modified\": \"2026-12-07 20:36:10 GMT\" },\n\
            { \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-12-07 20:36:10 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"abcd\" }\n\
            ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/5000028\", \"End-LSN\": \"0/5010FD8\" }\n],\n\
            \"Manifest-Checksum\": \"00\"}\n";
        std::fs::write(d.join("backup_manifest"), manifest).unwrap();
        finish_chain(d).unwrap();
        let label = std::fs::read_to_string(d.join("backup_label")).unwrap();
        assert!(
            !label.contains("INCREMENTAL") && label.contains("LABEL: x\n"),
            "{label}"
        );
        let text = std::fs::read_to_string(d.join("backup_manifest")).unwrap();
        assert!(
            text.contains(&format!(
                "{{ \"Path\": \"backup_label\", \"Size\": {},",
                label.len()
            )),
            "{text}"
        );
        assert!(
            text.contains("{ \"Path\": \"base/5/16384\", \"Size\": 24576, \"Last-Modified\""),
            "{text}"
        );
        assert!(
            text.contains("\"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"abcd\" }\n],"),
            "{text}"
        );
        let (body, sum) = text.split_once("\"Manifest-Checksum\": \"").unwrap();
        assert_eq!(
            &sum[..64],
            hex::encode(sha2::Sha256::digest(body.as_bytes()))
        );
        assert!(text.ends_with("\"}\n"));
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
}
