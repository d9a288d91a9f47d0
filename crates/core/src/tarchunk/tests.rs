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
