//! A benchmark of the row counter a backup runs beside its dump: counts the rows of each table
//! in an uncompressed custom-format archive (`pg_dump -Fc -Z0 DB > FILE`) as the backup does,
//! through the tee and its counting thread, against `memchr`'s newline count of the same bytes
//! read the same way: the counter's cost per byte beyond finding the newlines.
//!
//! `cargo run --release -p lifeboat-core --example count-rows FILE [ROUNDS]`
use std::io::Read;
use std::time::Instant;

use lifeboat_core::postgres::archive::count_alongside;

/// This process's CPU time so far (user and system), in seconds.
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: count-rows FILE [ROUNDS]");
    let rounds: usize = args
        .next()
        .map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    let bytes = std::fs::read(&path).expect("reading the archive");
    let mut counter = Vec::new();
    let mut counter_cpu = Vec::new();
    let mut newlines = Vec::new();
    for _ in 0..rounds {
        // Read 64 KiB at a time, as a pipe from pg_dump is.
        let (t, c0) = (Instant::now(), cpu());
        let (mut tee, counting) = count_alongside(&bytes[..]);
        let mut buf = vec![0u8; 64 << 10];
        while tee.read(&mut buf).expect("reading") > 0 {}
        drop(tee);
        let counts = counting
            .join()
            .expect("thread")
            .expect("counting")
            .expect("countable");
        counter.push(t.elapsed().as_secs_f64());
        counter_cpu.push(cpu() - c0);
        let rows: u64 = counts.values().sum();

        let t = Instant::now();
        let mut source = &bytes[..];
        let mut lines = 0u64;
        loop {
            let n = source.read(&mut buf).expect("reading");
            if n == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
        newlines.push(t.elapsed().as_secs_f64());
        assert!(lines >= rows, "{lines} newlines, {rows} rows");
        eprintln!("{rows} rows in {} tables", counts.len());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, n, cc) = (
        median(&mut counter),
        median(&mut newlines),
        median(&mut counter_cpu),
    );
    let mib = bytes.len() as f64 / (1 << 20) as f64;
    println!(
        "{mib:.0} MiB: counter {c:.3} s ({:.0} MiB/s, CPU {cc:.2} s), newline count {n:.3} s; counter / newlines = {:.2}",
        mib / c,
        c / n
    );
}
