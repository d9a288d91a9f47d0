#!/usr/bin/env bash
# A/B of the pipelined restore (`restore db --create --jobs 4 --spool`, from a local repository)
# between two lifeboat binaries, taking turns to go first, with `pg_restore --jobs 4` of an uncompressed local
# dump (d2: the server's own share) as the yardstick measured in the same rounds. Databases:
# pgbench's (scale 30), scripts/realistic.sql's (400,000 comments: one table holds most of the
# data) and `multi` (six tables of about 20 MiB of that text, each with a primary key and three
# indexes).
#
# Usage: scripts/bench-restore-ab.sh OLD_LIFEBOAT NEW_LIFEBOAT [ROUNDS]   (DBS="multi real" to
# choose; a binary of an earlier commit: git stash or git worktree, then cargo build --release)
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-5}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cluster.sh
. scripts/cluster.sh
start_cluster "max_wal_size = 4GB"
DBS=${DBS:-bench real multi}
"$BIN/createdb" bench
"$BIN/pgbench" -i -q -s 30 bench 2>/dev/null
"$BIN/createdb" real
"$BIN/psql" -Xq -v rows=400000 -f scripts/realistic.sql real >/dev/null
"$BIN/createdb" multi
for t in a b c d e f; do
  "$BIN/psql" -Xq real -c "COPY (SELECT id, comic_id, account_id, body, created_at FROM comment WHERE id % 6 = ascii('$t') % 6) TO STDOUT" |
    "$BIN/psql" -Xq multi -c "CREATE TABLE t_$t (id bigint, comic_id bigint, account_id bigint, body text, created_at timestamptz); COPY t_$t FROM STDIN; ALTER TABLE t_$t ADD PRIMARY KEY (id); CREATE INDEX ON t_$t (comic_id, created_at); CREATE INDEX ON t_$t (account_id); CREATE INDEX ON t_$t (created_at)"
done
mkdir "$WORK/repo"
{
  echo "[repository]"
  echo "url = \"file://$WORK/repo\""
  for db in bench real multi; do
    echo "[postgres.$db]"
    echo "url = \"postgresql:///$db?host=$WORK&port=$PORT&user=bench\""
  done
} >"$WORK/lifeboat.toml"
export LIFEBOAT_CONFIG=$WORK/lifeboat.toml
"$NEW" -q init >/dev/null

now() { date +%s.%N; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
restore() { # BINARY DB TARGET
  local t0 t1
  t0=$(now)
  "$1" -q restore db "$2" --into "postgresql:///$3?host=$WORK&port=$PORT&user=bench" \
    --create --jobs 4 --spool --spool-dir "$WORK" >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc
}
for db in $DBS; do
  id=$("$NEW" -q backup db --db "$db" | tail -n 1)
  "$BIN/pg_dump" -Fc -Z0 -f "$WORK/$db.dump" "$db"
  for r in $(seq "$ROUNDS"); do
    "$BIN/createdb" "${db}_d2"
    t0=$(now); "$BIN/pg_restore" --jobs=4 --dbname="${db}_d2" "$WORK/$db.dump"; t1=$(now)
    d2=$(echo "$t1 - $t0" | bc)
    # Alternating which goes first: a restore runs slower right after another (the server
    # still writes out the first one's data), by about 15% here.
    if [ $((r % 2)) = 1 ]; then
      old=$(restore "$OLD" "$id" "${db}_old")
      new=$(restore "$NEW" "$id" "${db}_new")
    else
      new=$(restore "$NEW" "$id" "${db}_new")
      old=$(restore "$OLD" "$id" "${db}_old")
    fi
    echo "$db round $r: d2 ${d2} s, old ${old} s, new ${new} s; new / old $(ratio "$new" "$old"), old / d2 $(ratio "$old" "$d2"), new / d2 $(ratio "$new" "$d2")"
    for x in d2 old new; do "$BIN/dropdb" "${db}_$x"; done
  done
done
