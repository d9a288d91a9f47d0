#!/usr/bin/env bash
# Benchmark of `lifeboat wal-stream` against an S3 server on loopback (lifeboat-s3-server),
# under `pgbench -c 8` (fsync and synchronous_commit on), in one run:
#   (a) pgbench alone: the baseline latency of a commit (p50, p99, from pgbench's per-transaction
#       log);
#   (b) asynchronous stream (`[wal] stream_flush_ms`, default 1000): the time from WAL flushed on
#       the server to the same WAL stored in the repository (every 0.1 s the server's flush
#       position and the stream's are sampled; for each sample, the time until the stream's
#       reached the server's: p50, p99, to within 0.1 s; not `flush_lag`, which times the newest
#       WAL confirmed, not the oldest waiting), and the commit latency beside (a);
#   (c) synchronous stream (`stream_sync = true`, the slot in synchronous_standby_names): the
#       commit latency, whose difference from (a) is what a commit pays for RPO 0.
# Usage: scripts/bench-stream.sh [SECONDS per phase] (default 60; the issue's figure is 300).
set -euo pipefail
SECS=${1:-60}
FLUSH_MS=${FLUSH_MS:-1000}
cd "$(dirname "$0")/.."
cargo build --profile bench-release -q -p lifeboat -p lifeboat-testkit
LIFEBOAT=$PWD/target/bench-release/lifeboat
# shellcheck source=scripts/cluster.sh
. scripts/cluster.sh
S3PORT=$((PORT + 1))
STREAM=
cluster_cleanup() {
  [ -n "$STREAM" ] && kill "$STREAM" 2>/dev/null || true
  [ -n "${S3PID:-}" ] && kill "$S3PID" 2>/dev/null || true
}
start_cluster "wal_level = replica" "max_wal_size = 4GB" "fsync = on" "synchronous_commit = on"
"$BIN/createdb" bench
export PGDATABASE=bench
q() { "$BIN/psql" -XqAtc "$1"; }
"$BIN/pgbench" -i -q -s 10 2>/dev/null
mkdir -p "$WORK/s3/bench"
S3_ACCESS_KEY=bench S3_SECRET_KEY=bench-secret-key target/bench-release/lifeboat-s3-server "$WORK/s3" "$S3PORT" >/dev/null &
S3PID=$!
export AWS_SECRET_ACCESS_KEY=bench-secret-key
ENDPOINT=http://127.0.0.1:$S3PORT
for _ in $(seq 50); do curl -s -o /dev/null "$ENDPOINT" && break; sleep 0.1; done
config() {
  cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "s3://bench/lifeboat"
endpoint = "$ENDPOINT"
region = "us-east-1"
access_key_id = "bench"
secret_access_key = "\${AWS_SECRET_ACCESS_KEY}"
[wal]
stream_flush_ms = $FLUSH_MS
stream_sync = $1
[postgres.bench]
url = "postgresql:///bench?host=$WORK&port=$PORT&user=bench"
pitr = true
TOML
}
config false
export LIFEBOAT_CONFIG=$WORK/lifeboat.toml
"$LIFEBOAT" -q init >/dev/null

# pN of the numbers on stdin.
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int(NR * p / 100); if (i < 1) i = 1; print a[i] }'; }
# One pgbench phase in folder $1: "p50 p99" of its commit latencies, in ms.
bench() {
  mkdir -p "$WORK/$1"
  (cd "$WORK/$1" && "$BIN/pgbench" -n -c 8 -j 2 -T "$SECS" -l >/dev/null 2>&1)
  cat "$WORK/$1"/pgbench_log.* | awk '{ print $3 / 1000 }' >"$WORK/$1.lat"
  echo "$(pct 50 <"$WORK/$1.lat") $(pct 99 <"$WORK/$1.lat")"
}
stream_up() {
  "$LIFEBOAT" -q wal-stream 2>"$WORK/stream.log" &
  STREAM=$!
  until [ "$(q "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat' AND state = 'streaming'")" = 1 ]; do sleep 0.2; done
}

echo "(a) pgbench alone, $SECS s..." >&2
read -r A50 A99 < <(bench alone)
echo "(b) asynchronous stream, a piece every $FLUSH_MS ms, $SECS s..." >&2
stream_up
( while :; do
    q "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_flush_lsn() - '0/0', coalesce((SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'lifeboat'), '0/0') - '0/0'"
    sleep 0.1
  done ) >"$WORK/positions" 2>/dev/null &
SAMPLER=$!
read -r B50 B99 < <(bench async)
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
# For each sample: how long until the stream's position reached the server's at that moment.
awk -F'|' 'NF == 3 { t[n] = $1; w[n] = $2; f[n] = $3; n++ }
  END { j = 0; for (i = 0; i < n; i++) { if (j < i) j = i; while (j < n && f[j] < w[i]) j++; if (j < n) print t[j] - t[i] } }' \
  "$WORK/positions" >"$WORK/delays"
L50=$(pct 50 <"$WORK/delays")
L99=$(pct 99 <"$WORK/delays")
RATE=$(q "SELECT round(pg_current_wal_lsn() - '0/0')")
kill "$STREAM"; wait "$STREAM" 2>/dev/null || true; STREAM=
echo "(c) synchronous stream, $SECS s..." >&2
config true
q "ALTER SYSTEM SET synchronous_standby_names = 'lifeboat'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
stream_up
read -r C50 C99 < <(bench sync)
q "ALTER SYSTEM RESET synchronous_standby_names" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
PIECES=$(find "$WORK/s3/bench" -path '*stream*' -type f | wc -l)
SEGS=$(find "$WORK/s3/bench/lifeboat/wal" -maxdepth 1 -name '0*.zst' | wc -l)
echo "WAL written in all: $((RATE / 1048576)) MiB; $SEGS whole segments stored; $PIECES pieces left"
echo "commit latency, pgbench alone:        p50 $A50 ms, p99 $A99 ms"
echo "asynchronous stream: WAL flushed to stored p50 $L50 s, p99 $L99 s ($(wc -l <"$WORK/delays") samples); commit latency p50 $B50 ms, p99 $B99 ms"
echo "synchronous stream:  commit latency   p50 $C50 ms, p99 $C99 ms"
echo "ratio (synchronous / alone): p50 $(echo "scale=2; $C50 / $A50" | bc), p99 $(echo "scale=2; $C99 / $A99" | bc)"
