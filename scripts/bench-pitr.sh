#!/usr/bin/env bash
# Benchmark of WAL archiving, base backup and point-in-time recovery: lifeboat against
# pgBackRest (Debian package `pgbackrest`) on the same cluster and local storage, in one run.
#   1. WAL archived per second: a backlog of about 150 ready segments (2.4 GB) drained by the
#      archive command while pgbench writes, for lifeboat wal-push and pgbackrest archive-push
#      (asynchronous, process-max 4, its fastest mode).
#   2. A full base backup: time and stored size.
#   3. Restore and recover to the same target time, until the server is promoted.
# Both use zstd level 3. Usage: scripts/bench-pitr.sh [SCALE] (default 50, about 750 MiB).
set -euo pipefail
SCALE=${1:-50}
cd "$(dirname "$0")/.."
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
command -v pgbackrest >/dev/null || { echo "error: pgbackrest is needed: apt-get install pgbackrest" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (the cluster runs as postgres)" >&2; exit 1; }
cargo build --profile bench-release -q -p lifeboat
LIFEBOAT=$PWD/target/bench-release/lifeboat

WORK=$(mktemp -d /tmp/lifeboat-pitr-bench.XXXXXX)
chmod 755 "$WORK"
AS=(runuser -u postgres --)
PORT=$((20000 + RANDOM % 20000))
export PGHOST=$WORK PGPORT=$PORT PGUSER=bench PGDATABASE=bench
stop() { "${AS[@]}" "$BIN/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true; }
cleanup() { stop "$WORK/data"; stop "$WORK/r-lifeboat"; stop "$WORK/r-pgbackrest"; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"/{repo,pgbr-repo,pgbr-log,pgbr-lock,pgbr-spool,lb-spool}
chown -R postgres "$WORK"

cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "$WORK/repo"
[compression]
level = 3
[wal]
spool_dir = "$WORK/lb-spool"
[postgres.bench]
url = "postgresql:///bench?host=$WORK&port=$PORT&user=bench"
TOML
cat >"$WORK/pgbackrest.conf" <<CONF
[global]
repo1-path=$WORK/pgbr-repo
log-path=$WORK/pgbr-log
lock-path=$WORK/pgbr-lock
spool-path=$WORK/pgbr-spool
compress-type=zst
compress-level=3
archive-async=y
process-max=4
start-fast=y
log-level-console=warn
log-level-file=off
[bench]
pg1-path=$WORK/data
pg1-port=$PORT
pg1-socket-path=$WORK
pg1-user=bench
CONF
chmod 644 "$WORK/lifeboat.toml" "$WORK/pgbackrest.conf"
LB_PUSH="$LIFEBOAT --config $WORK/lifeboat.toml -q wal-push %p"
BR_PUSH="pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench archive-push %p"

"${AS[@]}" "$BIN/initdb" -D "$WORK/data" -U bench --auth=trust --no-sync >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '$WORK'
listen_addresses = ''
shared_buffers = 256MB
max_wal_size = 8GB
wal_level = replica
archive_mode = on
archive_command = '$LB_PUSH && $BR_PUSH'
CONF
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
"$BIN/createdb" bench
"${AS[@]}" pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
"${AS[@]}" "$LIFEBOAT" --config "$WORK/lifeboat.toml" -q init >/dev/null
echo "building a pgbench database at scale $SCALE..." >&2
"$BIN/pgbench" -i -q -s "$SCALE" bench 2>/dev/null
# 1.4 GB more, so that the cluster is 2.2 GB.
"$BIN/psql" -XqAtc "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 30) AS body FROM generate_series(1, 1400000) g"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
q() { "$BIN/psql" -XAtc "$1"; }
set_archive() { q "ALTER SYSTEM SET archive_command = '$1'" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null; }
wait_archived() {  # until the archiver has everything up to the current segment
  local seg; seg=$(q "SELECT pg_walfile_name(pg_switch_wal())")
  until [ "$(q "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver")" = t ]; do sleep 0.2; done
}
wait_archived

# 1. WAL throughput: build a backlog with archiving paused, then drain it under pgbench load.
drain() {  # $1: archive command; prints segments and seconds
  set_archive "false"
  local start_lsn end_lsn t0 t1
  start_lsn=$(q "SELECT pg_current_wal_lsn()")
  q "CREATE TABLE walgen AS SELECT g AS id, repeat(md5(g::text), 30) AS body FROM generate_series(1, 2400000) g" >/dev/null
  end_lsn=$(q "SELECT pg_current_wal_lsn()")
  local segments; segments=$(q "SELECT ceil(pg_wal_lsn_diff('$end_lsn', '$start_lsn') / 16777216)::int")
  "$BIN/pgbench" -c 2 -T 600 bench >/dev/null 2>&1 &
  local load=$!
  t0=$(now); set_archive "$1"; wait_archived; t1=$(now)
  kill $load 2>/dev/null; wait $load 2>/dev/null || true
  q "DROP TABLE walgen" >/dev/null
  echo "$segments $(secs "$t0" "$t1")"
}
read -r LB_SEGS LB_WAL_SECS < <(drain "$LB_PUSH")
read -r BR_SEGS BR_WAL_SECS < <(drain "$BR_PUSH")
set_archive "$LB_PUSH && $BR_PUSH"

# 2. Base backups, each after a checkpoint and a flush of dirty pages, so that neither pays
# for what the other (or the load before) left to write.
settle() { q "CHECKPOINT" >/dev/null 2>&1 || true; sync; }
settle
t0=$(now); "$LIFEBOAT" --config "$WORK/lifeboat.toml" -q backup base >/dev/null; t1=$(now)
LB_BASE_SECS=$(secs "$t0" "$t1")
LB_BASE_SIZE=$(du -sb "$WORK/repo/data/base" | cut -f1)
settle
t0=$(now); "${AS[@]}" pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=full backup >/dev/null; t1=$(now)
BR_BASE_SECS=$(secs "$t0" "$t1")

BR_BASE_SIZE=$(du -sb "$WORK/pgbr-repo/backup" | cut -f1)

# 3. WAL after the backups, a target in the middle, then restore and recover with each.
"$BIN/pgbench" -c 2 -T 10 bench >/dev/null 2>&1
sleep 1; TARGET=$(q "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"); sleep 1
"$BIN/pgbench" -c 2 -T 10 bench >/dev/null 2>&1
wait_archived
stop "$WORK/data"

P2=$((PORT + 1)); P3=$((PORT + 2))
sync
t0=$(now)
"$LIFEBOAT" --config "$WORK/lifeboat.toml" -q restore pitr --pgdata "$WORK/r-lifeboat" --target-time "$TARGET" \
  --start --port "$P2" --socket-dir "$WORK" --no-archive --json >"$WORK/pitr.json"
t1=$(now)
LB_PITR_SECS=$(secs "$t0" "$t1")

mkdir -m 700 "$WORK/r-pgbackrest"; chown postgres "$WORK/r-pgbackrest"
BR_TARGET=$(date -u -d "${TARGET%Z}" '+%Y-%m-%d %H:%M:%S.%6N+00')
sync
t0=$(now)
"${AS[@]}" pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/r-pgbackrest" \
  --type=time --target="$BR_TARGET" --target-action=promote restore >/dev/null
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/r-pgbackrest" -l "$WORK/r-pgbackrest.log" -w -t 600 \
  -o "-p $P3 -k $WORK -c archive_mode=off" start >/dev/null
until [ "$("$BIN/psql" -XAt -p "$P3" -c "SELECT NOT pg_is_in_recovery()" 2>/dev/null)" = t ]; do sleep 0.2; done
t1=$(now)
BR_PITR_SECS=$(secs "$t0" "$t1")
LB_ROWS=$("$BIN/psql" -XAt -p "$P2" -c "SELECT count(*) FROM pgbench_history")
BR_ROWS=$("$BIN/psql" -XAt -p "$P3" -c "SELECT count(*) FROM pgbench_history")

python3 - "$SCALE" "$LB_SEGS" "$LB_WAL_SECS" "$BR_SEGS" "$BR_WAL_SECS" "$LB_BASE_SECS" "$LB_BASE_SIZE" \
  "$BR_BASE_SECS" "$BR_BASE_SIZE" "$LB_PITR_SECS" "$BR_PITR_SECS" "$LB_ROWS" "$BR_ROWS" <<'PY'
import sys
a = sys.argv[1:]
scale = a[0]
lbs, lbw, brs, brw = int(a[1]), float(a[2]), int(a[3]), float(a[4])
lbb, lbsize, brb, brsize = float(a[5]), int(a[6]), float(a[7]), int(a[8])
lbp, brp, lbrows, brrows = float(a[9]), float(a[10]), a[11], a[12]
print(f"pgbench scale {scale}; lifeboat against pgBackRest (zstd 3, local storage)")
print("| | lifeboat | pgBackRest | lifeboat / pgBackRest |")
print("|---|---|---|---|")
print(f"| WAL archived under pgbench load | {lbs/lbw:.1f} segments/s ({lbs} in {lbw:.1f} s) | {brs/brw:.1f} segments/s ({brs} in {brw:.1f} s) | {(lbs/lbw)/(brs/brw):.2f} (higher is better) |")
print(f"| full base backup | {lbb:.1f} s, {lbsize/2**20:.0f} MiB | {brb:.1f} s, {brsize/2**20:.0f} MiB | {lbb/brb:.2f} time, {lbsize/brsize:.2f} size |")
print(f"| restore + recover to the same time | {lbp:.1f} s | {brp:.1f} s | {lbp/brp:.2f} |")
print(f"rows recovered (pgbench_history): lifeboat {lbrows}, pgBackRest {brrows}")
PY
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("lifeboat phases: base backup unpacked in %.1f s, WAL replayed to the target in %.1f s" % (r["restore_seconds"], r["recovery_seconds"]))' "$WORK/pitr.json"
