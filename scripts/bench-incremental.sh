#!/usr/bin/env bash
# Incremental base backups, measured (PostgreSQL 17 or later: PG_BIN=<its bin folder>).
# pgbench at SCALE (default 100, about 1.5 GB) beside scripts/realistic.sql's tables (ROWS,
# default 1000000, about 0.5 GB of text that compresses like user content: pgbench's filler
# compresses to almost nothing and would flatter every size), a full base backup, then ROUNDS (default 6)
# "days": in each, pgbench updates rows of a hot 1% of pgbench_accounts (a window of
# SCALE * 1000 rows, moved each day) TX times (default 200 000, so the WAL grows as a day's
# would while the rows changed stay 1%), then an incremental base backup. Reported: each
# backup's stored size and time against the full's; then the recovery to the latest moment
# (a) from the full backup and its incrementals (lifeboat's one pass into the data folder),
# (b) from the full backup and all the WAL since, (c) as Barman does it: every backup of the
# chain unpacked into a staging folder, `pg_combinebackup` into another, then the server started
# on it with lifeboat's restore_command; time of each and the peak disk each used.
# Against an S3 server on loopback (the staging in (c) reads the stored objects from its folder,
# so (c) pays no transfer at all: a floor for it).
# Usage: PG_BIN=... scripts/bench-incremental.sh
set -euo pipefail
SCALE=${SCALE:-100}
ROUNDS=${ROUNDS:-6}
TX=${TX:-200000}
ROWS=${ROWS:-1000000}
cd "$(dirname "$0")/.."
cargo build --profile bench-release -q -p lifeboat -p lifeboat-testkit
LIFEBOAT=$PWD/target/bench-release/lifeboat
# shellcheck source=scripts/cluster.sh
. scripts/cluster.sh
S3PORT=$((PORT + 1))
NEWPORT=$((PORT + 2))
PIDS=()
cluster_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in recovered-chain recovered-wal combined; do
    "${AS[@]}" "$BIN/pg_ctl" -D "$WORK/$d" -m immediate stop >/dev/null 2>&1 || true
  done
}
mkdir -p "$WORK/s3/bench"
S3_ACCESS_KEY=bench S3_SECRET_KEY=bench-secret-key target/bench-release/lifeboat-s3-server "$WORK/s3" "$S3PORT" >/dev/null &
PIDS+=($!)
export AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_EC2_METADATA_DISABLED=true
ENDPOINT=http://127.0.0.1:$S3PORT
for _ in $(seq 50); do curl -s -o /dev/null "$ENDPOINT" && break; sleep 0.1; done
cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "s3://bench/lifeboat"
endpoint = "$ENDPOINT"
region = "us-east-1"
access_key_id = "bench"
secret_access_key = "bench-secret-key"
[postgres.bench]
url = "postgresql:///bench?host=$WORK&port=$PORT&user=bench"
pitr = true
pg_bin_dir = "$BIN"
TOML
chmod 644 "$WORK/lifeboat.toml"
export LIFEBOAT_CONFIG=$WORK/lifeboat.toml
"$LIFEBOAT" -q init >/dev/null
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"
start_cluster "wal_level = replica" "archive_mode = on" "max_wal_size = 4GB" "summarize_wal = on" \
  "archive_command = 'AWS_EC2_METADATA_DISABLED=true $LIFEBOAT --config $WORK/lifeboat.toml -q wal-push %p'"
"$BIN/createdb" bench
export PGDATABASE=bench
q() { "$BIN/psql" -XqAtc "$1"; }
VERSION=$("$BIN/postgres" --version | grep -o "[0-9][0-9.]*" | head -n 1)
echo "PostgreSQL $VERSION, pgbench scale $SCALE ($("$BIN/pgbench" -i -q -s "$SCALE" 2>&1 | tail -n 1))"
[ "$ROWS" -gt 0 ] && "$BIN/psql" -Xq -v rows="$ROWS" -f scripts/realistic.sql >/dev/null
q "VACUUM (FREEZE, ANALYZE)"
echo "database: $(q "SELECT pg_size_pretty(pg_database_size('bench'))")"
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc | awk '{printf "%.1f", $1}'; }
# A backup: prints `id stored_bytes seconds`.
backup() {
  local t0 t1 out
  t0=$(now)
  out=$("$LIFEBOAT" -q backup base --json "$@")
  t1=$(now)
  echo "$(echo "$out" | jq -r .id) $(echo "$out" | jq -r .stored_size) $(secs "$t0" "$t1")"
}
read -r FULL FULL_SIZE FULL_SECS < <(backup)
echo "full: $FULL, $((FULL_SIZE >> 20)) MiB stored in $FULL_SECS s"
IDS=("$FULL")
ACCOUNTS=$((SCALE * 100000))
HOT=$((ACCOUNTS / 100))
cat >"$WORK/hot.sql" <<'SQL'
\set aid random(:lo, :hi)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL
WAL_START=$(q "SELECT pg_current_wal_lsn()")
for day in $(seq 1 "$ROUNDS"); do
  LO=$(( (day * 7919 * HOT) % (ACCOUNTS - HOT) + 1 ))
  "$BIN/pgbench" -n -c 4 -j 2 -t $((TX / 4)) -f "$WORK/hot.sql" -D lo="$LO" -D hi=$((LO + HOT - 1)) >/dev/null 2>&1
  read -r ID SIZE SECS < <(backup --incremental)
  IDS+=("$ID")
  echo "day $day: incremental $ID, $((SIZE >> 20)) MiB stored ($(echo "scale=2; 100 * $SIZE / $FULL_SIZE" | bc)% of the full) in $SECS s ($(echo "scale=2; 100 * $SECS / $FULL_SECS" | bc)% of the full's time)"
done
# The latest moment: a row after the last backup, in an archived segment.
q "CREATE TABLE after_last (at timestamptz); INSERT INTO after_last VALUES (now())"
q "SELECT pg_switch_wal()" >/dev/null
sleep 3
echo "WAL since the full backup: $(q "SELECT pg_size_pretty(pg_current_wal_lsn() - '$WAL_START'::pg_lsn)")"
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"

# (a) the chain, one pass; (b) the full backup and the WAL.
for way in chain wal; do
  extra=()
  [ "$way" = wal ] && extra=(--base "$FULL")
  t0=$(now)
  "$LIFEBOAT" -q restore pitr --pgdata "$WORK/recovered-$way" --latest "${extra[@]}" --start \
    --port "$NEWPORT" --socket-dir "$WORK" --json >"$WORK/$way.json" 2>"$WORK/$way.log" || { cat "$WORK/$way.log"; exit 1; }
  t1=$(now)
  [ "$(PGPORT=$NEWPORT q "SELECT count(*) FROM after_last")" = 1 ] || { echo "($way) did not reach the latest moment"; exit 1; }
  DISK=$(du -sm "$WORK/recovered-$way" | cut -f1)
  "${AS[@]}" "$BIN/pg_ctl" -D "$WORK/recovered-$way" -m immediate stop >/dev/null
  eval "T_$way=$(secs "$t0" "$t1")"
  echo "($way) recovery to the latest moment: $(secs "$t0" "$t1") s (restore $(jq -r .restore_seconds "$WORK/$way.json") s, replay $(jq -r .recovery_seconds "$WORK/$way.json") s), peak disk $DISK MiB"
  rm -rf "$WORK/recovered-$way"
done
echo "full + WAL / chain: $(echo "scale=2; $T_wal / $T_chain" | bc)x"

# (c) staged: every backup unpacked, pg_combinebackup, then recovery with the same WAL.
t0=$(now)
PEAK=0
STAGED=()
for id in "${IDS[@]}"; do
  mkdir -p "$WORK/staged/$id"
  zstd -dcq "$WORK/s3/bench/lifeboat/data/base/$id.tar.zst" | tar -x -C "$WORK/staged/$id"
  STAGED+=("$WORK/staged/$id")
done
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"
"${AS[@]}" "$BIN/pg_combinebackup" "${STAGED[@]}" -o "$WORK/combined"
PEAK=$(du -smc "$WORK/staged" "$WORK/combined" | tail -n 1 | cut -f1)
rm -rf "$WORK/staged"
{
  echo "restore_command = 'AWS_EC2_METADATA_DISABLED=true $LIFEBOAT --config $WORK/lifeboat.toml -q wal-fetch --db bench %f %p'"
  echo "archive_mode = off"
  echo "port = $NEWPORT"
} >>"$WORK/combined/postgresql.auto.conf"
touch "$WORK/combined/recovery.signal"
chmod 700 "$WORK/combined"
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK/combined"
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/combined" -l "$WORK/combined.log" -w -t 3600 start >/dev/null
until [ "$(PGPORT=$NEWPORT q "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; do sleep 0.2; done
t1=$(now)
[ "$(PGPORT=$NEWPORT q "SELECT count(*) FROM after_last")" = 1 ] || { echo "(staged) did not reach the latest moment"; exit 1; }
echo "(staged) pg_combinebackup into a staging folder, then recovery: $(secs "$t0" "$t1") s, peak disk $PEAK MiB; against the chain: $(echo "scale=2; $(secs "$t0" "$t1") / $T_chain" | bc)x the time"
