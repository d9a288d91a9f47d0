//! The archive reader against archives built byte by byte.
use super::rows::TEE_BATCH;
use super::*;
use std::io::Write;

/// A custom-format archive (version 1.14, as pg_dump 15 writes it) with the given TOC
/// entries `(dump id, desc, schema, tag)` and data blocks `(dump id, chunks)`.
fn archive(entries: &[(i64, &str, &str, &str)], blocks: &[(i64, Vec<&[u8]>)]) -> Vec<u8> {
    let mut out = b"PGDMP".to_vec();
    let int = |out: &mut Vec<u8>, v: i64| {
        out.push(u8::from(v < 0));
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    };
    let string = |out: &mut Vec<u8>, s: Option<&str>| match s {
        None => int(out, -1),
        Some(s) => {
            int(out, s.len() as i64);
            out.extend_from_slice(s.as_bytes());
        }
    };
    out.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
    int(&mut out, 0); // compression level
    for _ in 0..7 {
        int(&mut out, 1);
    }
    for s in ["yomira", "15.0", "15.0"] {
        string(&mut out, Some(s));
    }
    int(&mut out, entries.len() as i64);
    for (id, desc, schema, tag) in entries {
        int(&mut out, *id);
        int(&mut out, 1);
        string(&mut out, Some("0"));
        string(&mut out, Some("0"));
        string(&mut out, Some(tag));
        string(&mut out, Some(desc));
        int(&mut out, 2);
        for s in ["", "", ""] {
            string(&mut out, Some(s));
        }
        string(&mut out, Some(schema));
        string(&mut out, Some(""));
        string(&mut out, Some("heap"));
        string(&mut out, Some("lifeboat"));
        string(&mut out, Some("false"));
        string(&mut out, None); // no dependencies
        out.push(OFFSET_NOT_SET);
        out.extend_from_slice(&[0; 8]);
    }
    for (id, chunks) in blocks {
        out.push(BLK_DATA);
        int(&mut out, *id);
        for chunk in chunks {
            int(&mut out, chunk.len() as i64);
            out.extend_from_slice(chunk);
        }
        int(&mut out, 0);
    }
    out
}

#[test]
fn a_spooled_archive_gets_its_data_offsets() {
    let bytes = archive(
        &[
            (20, "TABLE DATA", "core", "comic"),
            (21, "TABLE DATA", "core", "chapter"),
        ],
        &[(20, vec![b"1\n", b"\\.\n\n\n"]), (21, vec![b"2\n"])],
    );
    // As the spool leaves it: written, its position at the end.
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&bytes).unwrap();
    assert_eq!(index_data_offsets(&file).unwrap(), 2);
    let mut indexed = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut indexed).unwrap();
    assert_eq!(indexed.len(), bytes.len());
    let mut cur = Cursor {
        inner: io::Cursor::new(indexed.clone()),
        pos: 0,
        int_size: 4,
        off_size: 8,
        scratch: Vec::new(),
    };
    let toc = cur.header_and_toc().unwrap().unwrap();
    for entry in &toc.entries {
        assert!(entry.offset_set);
        let at = entry.offset_field as usize + 1;
        let offset = u64::from_le_bytes(indexed[at..at + 8].try_into().unwrap()) as usize;
        // The block there is the entry's: its type, then its dump id.
        assert_eq!(indexed[offset], BLK_DATA);
        assert_eq!(indexed[offset + 2] as i64, entry.dump_id);
    }
    // Offsets known beforehand (a pipelined restore's reader saw each block go by) are
    // written as they are, for the entries given and lacking one, without a read of the data.
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&bytes).unwrap();
    let second = toc.entries[1].offset_field as usize + 1;
    let known = u64::from_le_bytes(indexed[second..second + 8].try_into().unwrap());
    assert_eq!(set_data_offsets(&file, &[(21, known), (99, 7)]).unwrap(), 1);
    let mut written = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut written).unwrap();
    let first = toc.entries[0].offset_field as usize;
    assert_eq!(
        written[first], bytes[first],
        "an entry not given was changed"
    );
    assert_eq!(
        written[second - 1..second + 8],
        indexed[second - 1..second + 8]
    );
    assert_eq!(written.len(), bytes.len());
}

#[test]
fn blocks_are_found_as_the_archive_arrives_and_their_copy_data_passed_on() {
    let bytes = archive(
        &[
            (10, "TABLE", "core", "comic"),
            (20, "TABLE DATA", "core", "comic"),
            (21, "TABLE DATA", "core", "chapter"),
        ],
        &[
            (20, vec![b"1\ta\n", b"2\tb\n", b"\\.\n\n\n"]),
            (21, vec![b"\\.\n\n\n"]),
        ],
    );
    let mut blocks = Blocks::open(io::Cursor::new(bytes.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(blocks.entries.len(), 3);
    assert_eq!(blocks.entries[1].desc, "TABLE DATA");
    assert_eq!(bytes[blocks.data_start as usize], BLK_DATA);
    let mut heads = Vec::new();
    while let Some(head) = blocks.next_head().unwrap() {
        blocks.skip(&head).unwrap();
        heads.push(head);
    }
    assert_eq!(
        heads.iter().map(|h| h.dump_id).collect::<Vec<_>>(),
        [20, 21]
    );
    assert!(heads.iter().all(|h| h.copy_data));
    // From where a block's chunks start: its COPY text, the end marker included, and
    // nothing of the next block.
    let mut copied = Vec::new();
    let from = &bytes[heads[0].chunks_at as usize..];
    copy_chunks(from, 4, None, &mut copied).unwrap();
    assert_eq!(copied, b"1\ta\n2\tb\n\\.\n\n\n");
    // A block cut short is an error, not a short table.
    let cut = &bytes[heads[0].chunks_at as usize..heads[0].chunks_at as usize + 8];
    assert!(copy_chunks(cut, 4, None, &mut Vec::new()).is_err());
    // Data compressed by pg_dump is not passed on this way.
    let mut compressed = bytes;
    compressed[12] = 6;
    assert!(Blocks::open(io::Cursor::new(compressed)).unwrap().is_none());
}

#[test]
fn a_table_is_cut_into_pieces_of_whole_rows_that_load_on_their_own() {
    // Rows of 10 bytes, one a chunk, as pg_dump writes them; one row spread over two chunks
    // (a writer that splits a row); the end marker as a chunk of its own.
    let rows: Vec<Vec<u8>> = (0..8).map(|i| format!("{i:08}\t\n").into_bytes()).collect();
    let mut chunks: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    chunks.insert(4, b"split ro");
    chunks.insert(5, b"w\n");
    chunks.push(b"\\.\n\n\n");
    let bytes = archive(
        &[
            (20, "TABLE DATA", "core", "page"),
            (21, "TABLE DATA", "core", "empty"),
        ],
        &[(20, chunks), (21, vec![b"\\.\n\n\n"])],
    );
    let mut blocks = Blocks::open(io::Cursor::new(bytes.clone()))
        .unwrap()
        .unwrap();
    let mut pieces = Vec::new();
    let mut heads = Vec::new();
    while let Some(head) = blocks.next_head().unwrap() {
        heads.push(head);
        let mut of_block = Vec::new();
        // 25 bytes: a piece ends after the row that reaches 25 bytes of chunks and their
        // lengths (three rows of 15 bytes each, chunk length included).
        blocks
            .cut(&head, 25, |p| {
                of_block.push(p);
                Ok(())
            })
            .unwrap();
        pieces.push(of_block);
    }
    let text = |p: &Piece| {
        let mut out = Vec::new();
        copy_chunks(&bytes[p.at as usize..], 4, p.len, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let page: Vec<String> = pieces[0].iter().map(text).collect();
    // Every piece is whole rows and ends with an end marker; the last keeps pg_dump's (a
    // piece reaches 25 bytes with it, but is not cut after it); a split row stays whole.
    assert_eq!(
        page,
        [
            "00000000\t\n00000001\t\n\\.\n",
            "00000002\t\n00000003\t\n\\.\n",
            "split row\n00000004\t\n\\.\n",
            "00000005\t\n00000006\t\n\\.\n",
            "00000007\t\n\\.\n\n\n",
        ]
    );
    assert!(pieces[0].last().unwrap().len.is_none());
    // A block starts where the one before ends (its data offset), and its pieces cover it
    // from its chunks to its end, each byte once: nothing else is left to read there.
    assert_eq!(heads[0].at, blocks.data_start);
    assert_eq!(heads[0].chunks_at, heads[0].at + 1 + 5);
    for (of_block, end) in pieces.iter().zip([heads[1].at, bytes.len() as u64]) {
        let mut at = of_block[0].at;
        for p in of_block {
            assert_eq!(p.at, at, "{of_block:?}");
            assert_eq!(p.len.unwrap_or(p.span), p.span);
            at += p.span;
        }
        assert_eq!(at, end, "{of_block:?}");
    }
    assert_eq!(pieces[1][0].at, heads[1].chunks_at);
    // Together, the table's rows as one piece gives them.
    let whole = text(&Piece {
        at: pieces[0][0].at,
        len: None,
        span: 0,
    });
    let joined: String = page
        .iter()
        .map(|p| p.trim_end_matches("\\.\n\n\n").trim_end_matches("\\.\n"))
        .collect();
    assert_eq!(format!("{joined}\\.\n\n\n"), whole);
    // An empty table is one piece: its end marker.
    assert_eq!(pieces[1].len(), 1);
    assert_eq!(text(&pieces[1][0]), "\\.\n\n\n");
    // A piece never larger than the data: one piece when the size is the whole block.
    let mut blocks = Blocks::open(io::Cursor::new(bytes.clone()))
        .unwrap()
        .unwrap();
    let head = blocks.next_head().unwrap().unwrap();
    let mut one = Vec::new();
    blocks
        .cut(&head, 1 << 20, |p| {
            one.push(p);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        one,
        [Piece {
            at: head.chunks_at,
            len: None,
            span: pieces[0].iter().map(|p| p.span).sum(),
        }]
    );
    // A piece that runs past its block (an archive other than the one cut) is an error.
    let past = Piece {
        at: pieces[0][4].at,
        len: Some(1000),
        span: 1000,
    };
    assert!(copy_chunks(&bytes[past.at as usize..], 4, past.len, &mut Vec::new()).is_err());
    // A block without pg_dump's end marker still ends its COPY.
    let bare = archive(&[(20, "TABLE DATA", "core", "page")], &[(20, vec![b"1\n"])]);
    let mut blocks = Blocks::open(io::Cursor::new(bare.clone()))
        .unwrap()
        .unwrap();
    let head = blocks.next_head().unwrap().unwrap();
    let mut out = Vec::new();
    copy_chunks(&bare[head.chunks_at as usize..], 4, None, &mut out).unwrap();
    assert_eq!(out, b"1\n\\.\n");
}

#[test]
fn rows_are_counted_as_the_archive_streams_by() {
    let long = format!("1\t{}\n", "x".repeat(100_000));
    // More than one of the tee's batches, and not a multiple of it.
    let many: String = (0..100_001).map(|i| format!("{i}\n")).collect();
    let bytes = archive(
        &[
            (10, "TABLE", "core", "comic"),
            (20, "TABLE DATA", "core", "comic"),
            (21, "TABLE DATA", "core", "Odd Name"),
            (22, "SEQUENCE SET", "core", "comic_id_seq"),
            (23, "TABLE DATA", "public", "empty"),
            (24, "TABLE DATA", "public", "many"),
        ],
        &[
            (
                20,
                vec![long.as_bytes(), b"2\tb\n", b"3\tc\\nd\n", b"\\.\n\n\n"],
            ),
            (21, vec![b"\\\\.\n", b"\\.\n\n\n"]),
            (23, vec![b"\\.\n\n\n"]),
            (24, vec![many.as_bytes(), b"\\.\n\n\n"]),
        ],
    );
    assert!(bytes.len() > 2 * TEE_BATCH);
    // Through the tee, read in small pieces as a pipe would give them.
    let (mut tee, counting) = count_alongside(io::Cursor::new(bytes.clone()));
    let mut passed = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = tee.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        passed.extend_from_slice(&buf[..n]);
    }
    drop(tee);
    assert_eq!(passed, bytes, "the tee changes nothing");
    let counts = counting.join().unwrap().unwrap().unwrap();
    let rows =
        |schema: &str, name: &str| counts.get(&(schema.to_string(), name.to_string())).copied();
    assert_eq!(rows("core", "comic"), Some(3));
    assert_eq!(
        rows("core", "Odd Name"),
        Some(1),
        "a row holding a backslash and a dot"
    );
    assert_eq!(rows("public", "empty"), Some(0));
    assert_eq!(rows("public", "many"), Some(100_001));
    assert_eq!(counts.len(), 4);
    // Data compressed by pg_dump cannot be counted this way.
    let mut compressed = bytes.clone();
    compressed[12] = 6; // the compression level, after the sign byte
    assert!(count_rows(io::Cursor::new(compressed)).unwrap().is_none());
}

#[test]
fn a_row_counter_fed_in_pieces_counts_as_the_reader_does() {
    let bytes = archive(
        &[(20, "TABLE DATA", "core", "comic")],
        &[(20, vec![b"1\ta\n2\tb\n", b"3\tc\n", b"\\.\n\n\n"])],
    );
    let mut counter = RowCounter::start();
    for piece in bytes.chunks(5) {
        counter.feed(piece);
    }
    let counts = counter.finish().unwrap().unwrap();
    assert_eq!(counts.get(&("core".into(), "comic".into())), Some(&3));
    // Not an archive: the counter gives up, and feeding it more neither blocks nor fails.
    let mut counter = RowCounter::start();
    for _ in 0..1000 {
        counter.feed(b"not an archive at all");
    }
    assert!(counter.finish().is_err());
}

#[test]
fn rows_are_counted_alike_whatever_pieces_the_archive_comes_in() {
    // Rows whose chunk lengths hold a newline byte (10 = `\n`, 266 = 0x010a; a row's own
    // newlines are escaped by COPY), rows of one byte, an end marker, a table's block after a
    // block of large objects, whose bytes are newlines too, and a block of data no table of the
    // contents owns.
    let ten = "123456789\n";
    let long = format!("{}\n", "y".repeat(265));
    assert_eq!((ten.len(), long.len()), (10, 266));
    let rows_a = [ten.as_bytes(), long.as_bytes(), b"\n", b"a\tb\n"];
    let mut bytes = archive(
        &[
            (20, "TABLE DATA", "core", "a"),
            (21, "TABLE DATA", "core", "b"),
        ],
        &[(20, [&rows_a[..], &[b"\\.\n\n\n"]].concat())],
    );
    let int = |out: &mut Vec<u8>, v: i64| {
        out.push(u8::from(v < 0));
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    };
    bytes.push(BLK_BLOBS);
    int(&mut bytes, 30);
    for oid in [10, 16_394] {
        int(&mut bytes, oid);
        int(&mut bytes, 10);
        bytes.extend_from_slice(b"\n\n\n\n\n\n\n\n\n\n");
        int(&mut bytes, 0);
    }
    int(&mut bytes, 0);
    for (id, chunk) in [(99, &b"x\ny\n"[..]), (21, b"1\n2\n3\n")] {
        bytes.push(BLK_DATA);
        int(&mut bytes, id);
        int(&mut bytes, chunk.len() as i64);
        bytes.extend_from_slice(chunk);
        int(&mut bytes, 0);
    }
    for piece in [1, 2, 3, 5, 7, 11, 16, 17, 64, 300, bytes.len()] {
        let input = io::BufReader::with_capacity(piece, io::Cursor::new(bytes.clone()));
        let counts = rows::count_buffered(input).unwrap().unwrap();
        let rows = |name: &str| counts.get(&("core".to_string(), name.to_string())).copied();
        assert_eq!(rows("a"), Some(4), "in pieces of {piece}");
        assert_eq!(rows("b"), Some(3), "in pieces of {piece}");
        assert_eq!(counts.len(), 2, "in pieces of {piece}");
    }
    // Cut short inside a block: an error, not a count.
    let short = &bytes[..bytes.len() - 3];
    let err = count_rows(io::Cursor::new(short)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}
