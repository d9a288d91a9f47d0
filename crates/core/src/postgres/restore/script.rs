//! The transaction of a restore that `psql` runs: opened by lifeboat, committed only by
//! lifeboat.
//!
//! `psql --single-transaction` commits when its input ends, whatever ended it: lifeboat
//! killed (with its watchdog, or without one) in the middle of the script, even of a `COPY`,
//! which psql then ends as if complete. So psql runs without it, and the script it reads opens
//! its transaction with [`begin`] and commits with [`COMMIT`], which lifeboat writes last, once
//! it has checked everything; an input that just ends commits nothing (the server rolls back
//! as psql disconnects). `pg_restore --single-transaction` writes its own `BEGIN` and `COMMIT`
//! around its script (without it, one around the large objects: a commit in the middle), so
//! [`feed`] passes its script on with the first replaced by lifeboat's and the last left out.

use std::io::{self, Read, Write};

/// What lifeboat writes last, once the restore may commit.
pub(crate) const COMMIT: &[u8] = b"COMMIT;\n";

/// The start of a script run in one transaction: `BEGIN`, then `prelude`.
pub(crate) fn begin(prelude: &str) -> String {
    format!("BEGIN;\n{prelude}\n")
}

/// How much of the script's end is held back to find its `COMMIT`: after it, pg_restore
/// writes only a closing comment and `\unrestrict`.
const TAIL: usize = 64 << 10;

/// How far into the script its `BEGIN` must be: after a few comments and `\restrict`.
const HEAD: usize = 64 << 10;

/// Passes the script `pg_restore --single-transaction --file=-` writes on `script` to `psql`:
/// its `BEGIN` line replaced by [`begin`]`(prelude)`, its last `COMMIT` line left out. A script
/// without either (pg_restore stopped early) is an error.
pub(crate) fn feed(mut script: impl Read, prelude: &str, psql: &mut impl Write) -> io::Result<()> {
    let mut held = Vec::with_capacity(HEAD + TAIL);
    let mut buf = vec![0u8; 1 << 16];
    // The head, up to the end of its `BEGIN` line.
    let begun = loop {
        if let Some(at) = find_first(&held, b"BEGIN;") {
            break at;
        }
        if held.len() > HEAD {
            return Err(not_a_transaction("no `BEGIN` at its start"));
        }
        match read(&mut script, &mut buf)? {
            0 => return Err(not_a_transaction("no `BEGIN` at its start")),
            n => held.extend_from_slice(&buf[..n]),
        }
    };
    psql.write_all(&held[..begun.0])?;
    psql.write_all(begin(prelude).as_bytes())?;
    held.drain(..begun.1);
    // The rest, all but its last `TAIL` bytes (or more, to a line's end), in constant memory
    // however long its lines.
    let mut at_line_start = true;
    loop {
        let n = read(&mut script, &mut buf)?;
        if n == 0 {
            break;
        }
        held.extend_from_slice(&buf[..n]);
        if held.len() > 2 * TAIL {
            let keep = held.len() - TAIL;
            let pass = memchr::memrchr(b'\n', &held[..keep]).map_or(keep, |i| i + 1);
            at_line_start = held[pass - 1] == b'\n';
            psql.write_all(&held[..pass])?;
            held.drain(..pass);
        }
    }
    let (start, end) = find_line(&held, b"COMMIT;", at_line_start)
        .filter(|&(_, end)| is_trailer(&held[end..]))
        .ok_or_else(|| not_a_transaction("no `COMMIT` at its end"))?;
    psql.write_all(&held[..start])?;
    psql.write_all(&held[end..])
}

fn read(script: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match script.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

/// Where the first line that reads exactly `line` is in the start of a script: from its start
/// to after its newline.
fn find_first(text: &[u8], line: &[u8]) -> Option<(usize, usize)> {
    line_starts(text, true)
        .find(|&start| is_line(text, start, line))
        .map(|start| (start, start + line.len() + 1))
}

/// Where the last line that reads exactly `line` is in the end of a script, which starts a
/// line if `at_line_start`.
fn find_line(text: &[u8], line: &[u8], at_line_start: bool) -> Option<(usize, usize)> {
    line_starts(text, at_line_start)
        .filter(|&start| is_line(text, start, line))
        .last()
        .map(|start| (start, start + line.len() + 1))
}

/// Whether `text` is what pg_restore writes after its `COMMIT`: blank lines, comments and
/// `\unrestrict` (not, say, the rest of a `COPY` in which a row read `COMMIT;`).
fn is_trailer(text: &[u8]) -> bool {
    text.split(|b| *b == b'\n').all(|line| {
        line.is_empty() || line.starts_with(b"--") || line.starts_with(b"\\unrestrict ")
    })
}

fn line_starts(text: &[u8], at_line_start: bool) -> impl Iterator<Item = usize> + '_ {
    at_line_start
        .then_some(0)
        .into_iter()
        .chain(memchr::memchr_iter(b'\n', text).map(|i| i + 1))
}

fn is_line(text: &[u8], start: usize, line: &[u8]) -> bool {
    text[start..].starts_with(line) && text.get(start + line.len()) == Some(&b'\n')
}

fn not_a_transaction(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("pg_restore's script is not one transaction: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_in_lifeboats_transaction_and_commits_only_when_lifeboat_says() {
        let head =
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict KEY\n\nBEGIN;\n\nSET x = 1;\n";
        // Rows that read like the statements, in COPY data: not the script's own lines.
        let copy = "COPY t (a) FROM stdin;\nBEGIN;\nCOMMIT;\n\\.\n";
        let body = "x".repeat(200_000) + "\n";
        let tail =
            "\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict KEY\n\n";
        let script = format!("{head}{copy}{body}{copy}{tail}");
        let mut out = Vec::new();
        // Read a few bytes at a time, as a pipe may give them.
        let trickle = io::BufReader::with_capacity(7, script.as_bytes());
        feed(trickle, "DROP SCHEMA s CASCADE;", &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!(
                "--\n-- PostgreSQL database dump\n--\n\n\\restrict KEY\n\n\
                 BEGIN;\nDROP SCHEMA s CASCADE;\n\nSET x = 1;\n{copy}{body}{copy}\n\
                 \n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict KEY\n\n"
            )
        );
        assert_eq!(out.matches("\nCOMMIT;\n").count(), 2, "the rows only");
        // A script cut short (pg_restore stopped) has no COMMIT: an error, never a commit.
        let cut = &script[..script.len() - tail.len()];
        let e = feed(cut.as_bytes(), "", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no `COMMIT`"), "{e}");
        // Nor one without its BEGIN (pg_restore without --single-transaction).
        let e = feed("SET x = 1;\nCOMMIT;\n".as_bytes(), "", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no `BEGIN`"), "{e}");
        assert_eq!(
            find_line(b"a\nCOMMIT;\nb\nCOMMIT;\n", b"COMMIT;", true),
            Some((12, 20))
        );
        // Not a line's start: a line's end only.
        assert_eq!(find_line(b"COMMIT;\n", b"COMMIT;", false), None);
        assert_eq!(find_first(b"BEGIN;\n", b"BEGIN;"), Some((0, 7)));
        assert_eq!(find_first(b"BEGIN; x\n", b"BEGIN;"), None);
    }
}
