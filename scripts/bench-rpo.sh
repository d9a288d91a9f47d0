#!/usr/bin/env bash
# The recovery point, measured: a server under `pgbench -c 8` with one client committing a
# stamped row every few milliseconds (and recording each commit acknowledged to it) is destroyed
# at a random moment (`pg_ctl stop -m immediate`, its data folder deleted, lifeboat killed with
# it), then `restore pitr --latest` recovers onto a new folder; what was acknowledged and is not
# recovered is lost. Three trials in one run, the same settings but the stream (archive_command
# through lifeboat and archive_timeout = 60 in all): (1) archive_command only, (2) an
# asynchronous stream (`[wal] stream_flush_ms`, default 1000), (3) a synchronous stream.
# Against an S3 server on loopback. Usage: scripts/bench-rpo.sh [MIN_SECONDS MAX_SECONDS] (the
# moment of destruction, default between 30 and 60 s after the load starts); RATE=TPS limits
# pgbench (`-R`) and the stamps to 20 a second: a quiet server fills a segment in minutes, and
# then archive_command's recovery point is archive_timeout's. PG_BIN: another version's programs.
set -euo pipefail
MIN=${1:-30}
MAX=${2:-60}
cd "$(dirname "$0")/.."
cargo build --profile bench-release -q -p lifeboat -p lifeboat-testkit
for mode in archive async sync; do
  scripts/bench-rpo.sh.trial "$mode" "$MIN" "$MAX"
done
