#!/usr/bin/env bash
# Benchmark of `lifeboat wal find`: how fast it reads archived WAL (segments per second), against
# `pg_waldump` alone over the same segments already on local disk (the floor: decoding), in one
# run, with lifeboat's peak memory. The WAL is pgbench's plus generated text that compresses like
# user content (about 2.5x), archived through `lifeboat wal-push` (zstd level 3) into a local
# repository. Usage: scripts/bench-find.sh [SEGMENTS] (default 64, 1 GiB of WAL).
set -euo pipefail
SEGMENTS=${1:-64}
cd "$(dirname "$0")/.."
source scripts/cluster.sh
cargo build --profile bench-release -q -p lifeboat
LIFEBOAT=$PWD/target/bench-release/lifeboat
mkdir -p "$WORK/repo" "$WORK/spool" "$WORK/plain"
cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "$WORK/repo"
[compression]
level = 3
[wal]
spool_dir = "$WORK/spool"
[postgres.bench]
url = "postgresql:///bench?host=$WORK&port=$PORT&user=bench"
pitr = true
TOML
chmod 644 "$WORK/lifeboat.toml"
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"
"$LIFEBOAT" --config "$WORK/lifeboat.toml" -q init >/dev/null
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"
start_cluster "wal_level = replica" "archive_mode = on" "max_wal_size = 8GB" \
  "archive_command = '$LIFEBOAT --config $WORK/lifeboat.toml -q wal-push %p && cp %p $WORK/plain/%f'"
"$BIN/createdb" bench
export PGDATABASE=bench
q() { "$BIN/psql" -XqAtc "$1"; }
"$BIN/pgbench" -i -q -s 10 2>/dev/null
q "CREATE TABLE notes (id bigint PRIMARY KEY, body text)"
"$LIFEBOAT" --config "$WORK/lifeboat.toml" -q backup base >/dev/null
SINCE=$(q "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
START=$(q "SELECT pg_current_wal_lsn()")
echo "writing $SEGMENTS segments of WAL (pgbench and text)..." >&2
"$BIN/pgbench" -n -c 4 -T 3600 >/dev/null 2>&1 &
LOAD=$!
i=0
while [ "$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$START') > $SEGMENTS * 16777216.0")" != t ]; do
  # Text that compresses about 2.5x: words drawn at random.
  q "INSERT INTO notes SELECT $i * 20000 + g, (SELECT string_agg(substr('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi', 1 + (random() * 150)::int, 3 + (random() * 7)::int) || md5(random()::text), ' ') FROM generate_series(1, 8)) FROM generate_series(1, 20000) g" >/dev/null
  q "DELETE FROM notes WHERE id % 7 = 0 AND id < $i * 20000" >/dev/null
  i=$((i + 1))
done
kill $LOAD 2>/dev/null; wait $LOAD 2>/dev/null || true
SEG=$(q "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(q "SELECT coalesce(last_archived_wal, '') >= '$SEG' FROM pg_stat_archiver")" = t ]; do sleep 0.2; done
UNTIL=$(date -u +%Y-%m-%dT%H:%M:%SZ)

now() { date +%s.%N; }
FIRST=$(ls "$WORK/plain" | grep -E '^[0-9A-F]{24}$' | sort | head -n 1)
LAST=$(ls "$WORK/plain" | grep -E '^[0-9A-F]{24}$' | sort | tail -n 1)
t0=$(now); "$BIN/pg_waldump" -p "$WORK/plain" "$FIRST" "$LAST" 2>/dev/null | grep -c 'Transaction' >/dev/null; t1=$(now)
DUMP_SECS=$(echo "$t1 - $t0" | bc)
/usr/bin/time -v -o "$WORK/time.txt" "$LIFEBOAT" --config "$WORK/lifeboat.toml" -q --json wal find \
  --table public.notes --table public.pgbench_accounts --since "$SINCE" --until "$UNTIL" \
  --limit 1000000 >"$WORK/find.json"
LB_SECS=$(grep -o '"seconds": *[0-9.]*' "$WORK/find.json" | grep -o '[0-9.]*$')
LB_SEGS=$(grep -o '"segments": *[0-9]*' "$WORK/find.json" | grep -o '[0-9]*$')
RSS_KB=$(grep 'Maximum resident' "$WORK/time.txt" | grep -o '[0-9]*$')
TX=$(grep -o '"xid"' "$WORK/find.json" | wc -l)
# The default limit: what an operator runs, its memory bounded however busy the tables.
/usr/bin/time -v -o "$WORK/time2.txt" "$LIFEBOAT" --config "$WORK/lifeboat.toml" -q --json wal find \
  --table public.notes --table public.pgbench_accounts --since "$SINCE" --until "$UNTIL" >/dev/null
RSS2_KB=$(grep 'Maximum resident' "$WORK/time2.txt" | grep -o '[0-9]*$')
# BENCH_FIND_ENV=MALLOC_MMAP_THRESHOLD_=99999999 (over glibc's maximum, so ignored: its default,
# rising threshold) measures what `wal find` would hold without the fixed one, for comparison.
if [ -n "${BENCH_FIND_ENV:-}" ]; then
  env $BENCH_FIND_ENV /usr/bin/time -v -o "$WORK/time3.txt" "$LIFEBOAT" --config "$WORK/lifeboat.toml" -q --json wal find \
    --table public.notes --table public.pgbench_accounts --since "$SINCE" --until "$UNTIL" >/dev/null
  echo "with $BENCH_FIND_ENV: peak RSS $(( $(grep 'Maximum resident' "$WORK/time3.txt" | grep -o '[0-9]*$') / 1024 )) MiB"
fi
PLAIN=$(ls "$WORK/plain" | grep -cE '^[0-9A-F]{24}$')
echo "wal find: $LB_SEGS segments in $LB_SECS s ($(echo "scale=1; $LB_SEGS / $LB_SECS" | bc) segments/s), $TX transactions listed, peak RSS $((RSS_KB / 1024)) MiB"
echo "wal find with the default --limit 1000: peak RSS $((RSS2_KB / 1024)) MiB"
echo "pg_waldump alone, $PLAIN plain segments on local disk: $DUMP_SECS s ($(echo "scale=1; $PLAIN / $DUMP_SECS" | bc) segments/s)"
echo "ratio (wal find / pg_waldump alone), time per segment: $(echo "scale=6; r = ($LB_SECS / $LB_SEGS) / ($DUMP_SECS / $PLAIN); scale=2; r / 1" | bc)"
