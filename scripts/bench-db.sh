#!/usr/bin/env bash
# Benchmark of logical backup and restore, all measured in one run on this machine:
#   (a) the guide's pipeline: pg_dump --format=custom --compress=9 to a file, then `aws s3 cp`
#   (b) lifeboat backup db (streamed: zstd, multipart upload, row counts from the stream)
#   (c) pg_dump --format=custom --compress=0 | zstd -3 -T0 > /dev/null: the floor
#   (b') the same backup into a repository folder, no store sharing the cores
# (b), (b') and (c) take turns BACKUP_ROUNDS times (default 3), and count by their medians, with
# the CPU time of each client and of the S3 server;
# and for restore: (d) `aws s3 cp` down then pg_restore --jobs 4, against
#   (e) lifeboat restore db --jobs 4 (streamed into one transaction, parallel index builds) and
#   (f) lifeboat restore db --create --jobs 4 (pipelined into a staging database renamed
#   when whole: pre-data as soon as the table of contents arrives, each table's COPY data
#   loaded by 4 sessions from the spool as it arrives, then the rest by pg_restore --jobs 4;
#   the spool holds a window of the archive, whose peak on disk is printed);
#   (d2) is (d)'s pg_restore alone, the server's share; (d3) pg_restore --single-transaction of
#   the same local file with (e)'s session settings, the floor of a one-transaction restore.
# Against a real S3 server on loopback (lifeboat-s3-server, s3s-fs), on two databases: pgbench's
# (whose filler compresses to almost nothing) and scripts/realistic.sql's (text that compresses
# like user content, about 2.5x with gzip -9).
#
# Loopback costs nothing per byte or per request, unlike the link to a real store (Cloudflare
# R2 from a server): with LINK_MBIT set, the S3 server serves both lifeboat and awscli as
# through a link of that many megabits per second each way, LINK_MS (default 20) milliseconds
# before each request.
#
# Usage: scripts/bench-db.sh [SCALE] [ROWS]   (pgbench scale, default 100: about 1.5 GB; realistic
# rows, default 1000000: about 0.5 GB; needs PostgreSQL, zstd and awscli)
#        LINK_MBIT=400 scripts/bench-db.sh ...
set -euo pipefail
SCALE=${1:-${SCALE:-100}}
ROWS=${2:-${ROWS:-1000000}}
cd "$(dirname "$0")/.."
command -v aws >/dev/null || { echo "error: awscli is needed for the guide's pipeline: pip install awscli" >&2; exit 1; }
command -v zstd >/dev/null || { echo "error: zstd is needed for the floor: apt-get install zstd" >&2; exit 1; }

cargo build --profile bench-release -q -p lifeboat -p lifeboat-testkit
LIFEBOAT=$PWD/target/bench-release/lifeboat

# shellcheck source=scripts/cluster.sh
. scripts/cluster.sh
S3PORT=$((PORT + 1))
cluster_cleanup() { [ -n "${S3PID:-}" ] && kill "$S3PID" 2>/dev/null || true; }
start_cluster "max_wal_size = 4GB"
"$BIN/createdb" bench
echo "building a pgbench database at scale $SCALE..." >&2
"$BIN/pgbench" -i -q -s "$SCALE" bench 2>/dev/null
"$BIN/createdb" real
echo "building a realistic database of $ROWS comments..." >&2
"$BIN/psql" -Xq -v rows="$ROWS" -f scripts/realistic.sql real >/dev/null

mkdir -p "$WORK/s3/bench"
if [ -n "${LINK_MBIT:-}" ]; then
  export S3_LINK_MBIT=$LINK_MBIT S3_LINK_MS=${LINK_MS:-20}
  echo "S3 behind a link of $S3_LINK_MBIT Mbit/s each way, $S3_LINK_MS ms per request"
else
  echo "S3 on loopback"
fi
S3_ACCESS_KEY=bench S3_SECRET_KEY=bench-secret-key target/bench-release/lifeboat-s3-server "$WORK/s3" "$S3PORT" >/dev/null &
S3PID=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1
ENDPOINT=http://127.0.0.1:$S3PORT
for _ in $(seq 50); do curl -s -o /dev/null "$ENDPOINT" && break; sleep 0.1; done

DATABASES="[postgres.bench]
url = \"postgresql:///bench?host=$WORK&port=$PORT&user=bench\"
[postgres.real]
url = \"postgresql:///real?host=$WORK&port=$PORT&user=bench\""
cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "s3://bench/lifeboat"
endpoint = "$ENDPOINT"
region = "us-east-1"
access_key_id = "bench"
secret_access_key = "\${AWS_SECRET_ACCESS_KEY}"
$DATABASES
TOML
export LIFEBOAT_CONFIG=$WORK/lifeboat.toml
"$LIFEBOAT" -q init >/dev/null
# (b'): the same backup into a repository folder, no store sharing the two cores.
printf '[repository]\nurl = "%s"\n%s\n' "$WORK/repo" "$DATABASES" >"$WORK/local.toml"
LIFEBOAT_CONFIG=$WORK/local.toml "$LIFEBOAT" -q init >/dev/null

now() { date +%s.%N; }
BACKUP_ROUNDS=${BACKUP_ROUNDS:-3}
s3_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$S3PID/stat"; }
# One round of the floor, (c): "floor WALL CPU" in $WORK/rounds.
floor_once() {
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%U %S" -o "$WORK/cpu" sh -c '"$1/pg_dump" --format=custom --compress=0 "$2" | zstd -q -3 -T0 >/dev/null' sh "$BIN" "$1"
  t1=$(now)
  echo "floor $(secs "$t0" "$t1") $(awk '{ print $1 + $2 }' "$WORK/cpu")" >>"$WORK/rounds"
}
# One round of lifeboat's backup, (b): "lifeboat WALL CPU RSS S3CPU" in $WORK/rounds, its id in
# $WORK/id; then (b') into a repository folder: "local WALL CPU RSS 0".
backup_once() {
  local t0 t1 c0 c1
  c0=$(s3_cpu); t0=$(now)
  /usr/bin/time -f "%U %S %M" -o "$WORK/cpu" "$LIFEBOAT" -q backup db --db "$1" >"$WORK/id"
  t1=$(now); c1=$(s3_cpu)
  echo "lifeboat $(secs "$t0" "$t1") $(awk '{ print $1 + $2, $3 }' "$WORK/cpu") $(secs "$c0" "$c1")" >>"$WORK/rounds"
  t0=$(now)
  LIFEBOAT_CONFIG=$WORK/local.toml /usr/bin/time -f "%U %S %M" -o "$WORK/cpu" "$LIFEBOAT" -q backup db --db "$1" >/dev/null
  t1=$(now)
  echo "local $(secs "$t0" "$t1") $(awk '{ print $1 + $2, $3 }' "$WORK/cpu") 0" >>"$WORK/rounds"
}
secs() { echo "$2 - $1" | bc; }
# Before each timed restore: the previous one's data written out (a checkpoint, then the page
# cache), so that no contestant pays for the writes of the one before (about 15% here).
settle() { "$BIN/psql" -Xqc CHECKPOINT postgres; sync; }

measure() { # DB LABEL
  local db=$1 label=$2 t0 t1
  local dbsize; dbsize=$("$BIN/psql" -XAtc "select pg_database_size('$db')" "$db")
  # Warm the cache once so that no contestant pays for the first read.
  "$BIN/pg_dump" --format=custom --compress=0 "$db" >/dev/null


  t0=$(now)
  "$BIN/pg_dump" --format=custom --compress=9 --file="$WORK/guide.dump" "$db"
  aws --endpoint-url "$ENDPOINT" s3 cp --quiet "$WORK/guide.dump" "s3://bench/guide/$db.dump"
  t1=$(now)
  local guide; guide=$(secs "$t0" "$t1")
  local guide_size; guide_size=$(stat -c %s "$WORK/guide.dump")
  rm -f "$WORK/guide.dump"

  # The floor and lifeboat's backup take turns, BACKUP_ROUNDS times; the medians count. Besides
  # wall time, the CPU time of each client (pg_dump and zstd; lifeboat with its pg_dump), which
  # this host's noise moves far less, and the S3 server's CPU time during each backup: on this
  # machine the store shares the client's two cores, which a real one does not.
  : >"$WORK/rounds"
  local r
  for r in $(seq "$BACKUP_ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then floor_once "$db"; backup_once "$db"; else backup_once "$db"; floor_once "$db"; fi
  done
  local floor lb rss s3cpu fcpu lcpu local_lb local_cpu
  read -r floor lb rss fcpu lcpu s3cpu local_lb local_cpu < <(python3 - "$WORK/rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = lambda kind, i: statistics.median(float(r[i]) for r in rows if r[0] == kind)
rss = max(int(r[3]) for r in rows if r[0] == "lifeboat")
print(med("floor", 1), med("lifeboat", 1), rss, med("floor", 2), med("lifeboat", 2), med("lifeboat", 4), med("local", 1), med("local", 2))
PY
)
  local id; id=$(tail -n 1 "$WORK/id")
  local lb_size; lb_size=$("$LIFEBOAT" show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_size"])')
  local raw_size; raw_size=$("$LIFEBOAT" show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["raw_size"])')

  "$BIN/createdb" "${db}_guide"; "$BIN/createdb" "${db}_lifeboat"
  local tm
  settle
  t0=$(now)
  aws --endpoint-url "$ENDPOINT" s3 cp --quiet "s3://bench/guide/$db.dump" "$WORK/restore.dump"
  tm=$(now)
  "$BIN/pg_restore" --jobs=4 --dbname="${db}_guide" "$WORK/restore.dump"
  t1=$(now)
  local grest; grest=$(secs "$t0" "$t1")
  # The server's part alone: what no restore from this server can go below, however it
  # overlaps the download.
  local gload; gload=$(secs "$tm" "$t1")

  settle
  t0=$(now)
  /usr/bin/time -f "%M" -o "$WORK/rss2" "$LIFEBOAT" -q restore db "$id" \
    --into "postgresql:///${db}_lifeboat?host=$WORK&port=$PORT&user=bench" --jobs 4 --json >"$WORK/e.json"
  t1=$(now)
  local lrest; lrest=$(secs "$t0" "$t1")
  local rss2; rss2=$(cat "$WORK/rss2")

  # Parallel and still all or nothing: a database created under a staging name, renamed
  # when whole.
  settle
  t0=$(now)
  /usr/bin/time -f "%M" -o "$WORK/rss3" "$LIFEBOAT" -q restore db "$id" \
    --into "postgresql:///${db}_spooled?host=$WORK&port=$PORT&user=bench" \
    --create --jobs 4 --spool-dir "$WORK" --json >"$WORK/f.json"
  t1=$(now)
  local srest; srest=$(secs "$t0" "$t1")
  local rss3; rss3=$(cat "$WORK/rss3")

  # The floor of (e), which restores in one transaction: pg_restore --single-transaction of
  # the local file with the session settings (e) reported, no download at all. Last, so that
  # (d), (e) and (f) run as they did before it was measured.
  local options
  options=$(python3 -c 'import json,sys; print(" ".join(f"-c {k}={v}" for k, v in json.load(open(sys.argv[1]))["settings"].items()))' "$WORK/e.json")
  "$BIN/createdb" "${db}_single"
  settle
  t0=$(now)
  PGOPTIONS="$options" "$BIN/pg_restore" --single-transaction --dbname="${db}_single" "$WORK/restore.dump"
  t1=$(now)
  local sload; sload=$(secs "$t0" "$t1")
  rm -f "$WORK/restore.dump"

  python3 - "$label" "$dbsize" "$floor" "$guide" "$guide_size" "$lb" "$lb_size" "$rss" "$grest" "$lrest" "$rss2" "$srest" "$gload" "$rss3" "$sload" "$raw_size" "$WORK/f.json" "$fcpu" "$lcpu" "$s3cpu" "$BACKUP_ROUNDS" "$local_lb" "$local_cpu" <<'PY'
import json, sys
label, dbsize, floor, guide, gsize, lb, lsize, rss, grest, lrest, rss2, srest, gload, rss3, sload, raw, fjson, fcpu, lcpu, s3cpu, rounds, llb, lcpu_local = sys.argv[1:]
fcpu, lcpu, s3cpu, llb, lcpu_local = map(float, (fcpu, lcpu, s3cpu, llb, lcpu_local))
raw, spool = int(raw), json.load(open(fjson))["spool_peak_bytes"]
dbsize, gsize, lsize, rss, rss2, rss3 = int(dbsize), int(gsize), int(lsize), int(rss), int(rss2), int(rss3)
floor, guide, lb, grest, lrest, srest, gload, sload = map(float, (floor, guide, lb, grest, lrest, srest, gload, sload))
print(f"{label}, database {dbsize/2**20:.0f} MiB")
print(f"| backup | wall time | stored size |")
print(f"|---|---|---|")
print(f"| (c) pg_dump -Fc -Z0 \\| zstd -3 -T0 > /dev/null (floor) | {floor:.1f} s | - |")
print(f"| (a) guide: pg_dump -Fc -Z9 + aws s3 cp | {guide:.1f} s | {gsize/2**20:.1f} MiB |")
print(f"| (b) lifeboat backup db | {lb:.1f} s | {lsize/2**20:.1f} MiB |")
print(f"| (b') lifeboat backup db into a repository folder | {llb:.1f} s | - |")
print(f"(b), (b') and (c): medians of {rounds} rounds, taking turns")
print(f"lifeboat / guide time = {lb/guide:.2f} (target <= 0.33); lifeboat / floor = {lb/floor:.2f} (target <= 1.15)")
print(f"into a folder: lifeboat / floor = {llb/floor:.2f}")
print(f"client CPU time: lifeboat with its pg_dump {lcpu:.2f} s (into a folder {lcpu_local:.2f} s), pg_dump and zstd {fcpu:.2f} s: {lcpu/fcpu:.2f} ({lcpu_local/fcpu:.2f}); the S3 server's during (b) {s3cpu:.2f} s")
print(f"lifeboat / guide size = {lsize/gsize:.2f} (target <= 1.00); lifeboat peak RSS {rss/1024:.0f} MiB")
print(f"| restore | wall time |")
print(f"|---|---|")
print(f"| (d) aws s3 cp + pg_restore --jobs 4 | {grest:.1f} s |")
print(f"| (e) lifeboat restore db --jobs 4 | {lrest:.1f} s |")
print(f"| (f) lifeboat restore db --create --jobs 4 (pipelined) | {srest:.1f} s |")
print(f"| (d2) of (d), pg_restore --jobs 4 of the local file alone | {gload:.1f} s |")
print(f"lifeboat / guide restore time = {lrest/grest:.2f} (target <= 0.8), with --create {srest/grest:.2f}; lifeboat peak RSS {rss2/1024:.0f} MiB, with --create {rss3/1024:.0f} MiB")
print(f"(f)'s spool took {spool/2**20:.0f} MiB of disk at most, for an archive of {raw/2**20:.0f} MiB ({spool/raw:.2f})")
print(f"| (d3) pg_restore --single-transaction of the local file, (e)'s settings | {sload:.1f} s |")
print(f"the server's share of the guide's restore (d2 / d) = {gload/grest:.2f}: no restore overlapping the download goes below it")
print(f"the one-transaction floor of (e) (d3 / d) = {sload/grest:.2f}; (e) / (d3) = {lrest/sload:.2f}")
print()
PY
}

measure bench "pgbench scale $SCALE"
measure real "realistic, $ROWS comments"
