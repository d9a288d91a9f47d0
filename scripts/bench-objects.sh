#!/usr/bin/env bash
# Benchmark of object backup against the guide's `rclone sync --transfers=16 --checkers=16`,
# between the same two S3 servers on loopback (different credentials, so both stream), in
# one run: the first copy, a re-run with nothing changed, a re-run with 1% of objects changed.
# Reports wall time (lifeboat / rclone) and the requests each sent (from the servers' logs).
#
# Usage: scripts/bench-objects.sh [OBJECTS]   (default 10000, sizes 1 KB to 8 MB, about 2 GB;
# needs rclone: apt-get install rclone)
set -euo pipefail
N=${1:-10000}
cd "$(dirname "$0")/.."
command -v rclone >/dev/null || { echo "error: rclone is needed: apt-get install rclone" >&2; exit 1; }
cargo build --profile bench-release -q -p lifeboat -p lifeboat-testkit
LIFEBOAT=$PWD/target/bench-release/lifeboat
SERVER=$PWD/target/bench-release/lifeboat-s3-server

WORK=$(mktemp -d /tmp/lifeboat-bench-objects.XXXXXX)
cleanup() {
  kill "${SRC_PID:-}" "${DST_PID:-}" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
SRC_PORT=$((20000 + RANDOM % 20000)); DST_PORT=$((SRC_PORT + 1))
mkdir -p "$WORK/gen" "$WORK/src/media" "$WORK/dst/rclone-copy" "$WORK/dst/lifeboat-copy"

echo "writing $N objects..." >&2
python3 - "$WORK/gen" "$N" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
total = 0
for i in range(n):
    r = rng.random()
    # 80% small (1-32 KB), 18% medium (32 KB-1 MB), 2% large (1-8 MB).
    if r < 0.80: size = rng.randint(1_000, 32_000)
    elif r < 0.98: size = rng.randint(32_000, 1_000_000)
    else: size = rng.randint(1_000_000, 8_000_000)
    path = os.path.join(root, f"comics/{i % 100:02d}/page-{i:06d}.jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))
    total += size
print(f"{n} objects, {total / 1e9:.2f} GB", file=sys.stderr)
PY

S3_ACCESS_KEY=src S3_SECRET_KEY=src-secret S3_REQUEST_LOG=$WORK/src.log "$SERVER" "$WORK/src" "$SRC_PORT" >/dev/null &
SRC_PID=$!
S3_ACCESS_KEY=dst S3_SECRET_KEY=dst-secret S3_REQUEST_LOG=$WORK/dst.log "$SERVER" "$WORK/dst" "$DST_PORT" >/dev/null &
DST_PID=$!
for port in "$SRC_PORT" "$DST_PORT"; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port" && break; sleep 0.1; done
done

export RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Other RCLONE_CONFIG_SRC_ENDPOINT=http://127.0.0.1:$SRC_PORT
export RCLONE_CONFIG_SRC_ACCESS_KEY_ID=src RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY=src-secret RCLONE_CONFIG_SRC_REGION=us-east-1
export RCLONE_CONFIG_DST_TYPE=s3 RCLONE_CONFIG_DST_PROVIDER=Other RCLONE_CONFIG_DST_ENDPOINT=http://127.0.0.1:$DST_PORT
export RCLONE_CONFIG_DST_ACCESS_KEY_ID=dst RCLONE_CONFIG_DST_SECRET_ACCESS_KEY=dst-secret RCLONE_CONFIG_DST_REGION=us-east-1
export SRC_SECRET=src-secret DST_SECRET=dst-secret
unset AWS_CA_BUNDLE  # rclone refuses a CA bundle with its own transport; loopback is plain HTTP

cat >"$WORK/lifeboat.toml" <<TOML
[repository]
url = "file://$WORK/repo"

[objects.media]
transfers = 16
checkers = 16
[objects.media.source]
url = "s3://media"
endpoint = "http://127.0.0.1:$SRC_PORT"
region = "us-east-1"
access_key_id = "src"
secret_access_key = "\${SRC_SECRET}"
[objects.media.destination]
url = "s3://lifeboat-copy"
endpoint = "http://127.0.0.1:$DST_PORT"
region = "us-east-1"
access_key_id = "dst"
secret_access_key = "\${DST_SECRET}"
TOML

# Uploaded through S3 (not written into the server's folder) so that the server knows each
# object's ETag and content type, as a real one does.
echo "uploading them to the source bucket..." >&2
rclone copy "$WORK/gen" src:media --transfers=16 --s3-no-check-bucket -q
rm -rf "$WORK/gen"

requests() { cat "$WORK/src.log" "$WORK/dst.log" 2>/dev/null | wc -l; }
# Runs a command, prints "seconds requests"; its CPU time and peak memory go to cpu.log.
measure() {
  local before after start end
  before=$(requests); start=$(date +%s.%N)
  /usr/bin/time -f "%U+%S s cpu, %M KB max rss: $1" -a -o "$WORK/cpu.log" "$@" >/dev/null 2>"$WORK/last.err" \
    || { cat "$WORK/last.err" >&2; exit 1; }
  end=$(date +%s.%N); after=$(requests)
  echo "$(echo "$end - $start" | bc) $((after - before))"
}
RCLONE=(rclone sync src:media dst:rclone-copy --transfers=16 --checkers=16 --s3-no-check-bucket -q)
LB=("$LIFEBOAT" --config "$WORK/lifeboat.toml" -q backup objects)

change_one_percent() {
  mkdir -p "$WORK/changed"
  python3 - "$WORK/src/media" "$WORK/changed" "$N" <<'PY'
import os, random, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(7)
for i in rng.sample(range(n), max(1, n // 100)):
    key = f"comics/{i % 100:02d}/page-{i:06d}.jpg"
    size = os.path.getsize(os.path.join(src, key))
    os.makedirs(os.path.dirname(os.path.join(out, key)), exist_ok=True)
    with open(os.path.join(out, key), "wb") as f:
        f.write(rng.randbytes(size if i % 2 else size + 1))
PY
  rclone copy "$WORK/changed" src:media --transfers=16 --s3-no-check-bucket -q
}

printf "%-24s %10s %10s %8s %10s %10s\n" phase rclone_s lifeboat_s ratio rclone_req lifeboat_req
row() {
  local name=$1 r=$2 l=$3
  printf "%-24s %10.2f %10.2f %8.2f %10d %10d\n" "$name" "${r% *}" "${l% *}" \
    "$(echo "${l% *} / ${r% *}" | bc -l)" "${r#* }" "${l#* }"
}
R=$(measure "${RCLONE[@]}"); L=$(measure "${LB[@]}"); row "first copy" "$R" "$L"
R=$(measure "${RCLONE[@]}"); L=$(measure "${LB[@]}"); row "re-run, no change" "$R" "$L"
change_one_percent
sleep 1
R=$(measure "${RCLONE[@]}"); L=$(measure "${LB[@]}"); row "re-run, 1% changed" "$R" "$L"
echo "client CPU time and peak memory, in the order run:"
cat "$WORK/cpu.log"
