# Sourced by the benchmarks: a PostgreSQL cluster of their own in a temporary folder ($WORK), on
# a port and socket of its own (PGHOST, PGPORT and PGUSER=bench exported), run as postgres when
# the script runs as root; stopped and removed on exit, with whatever `cluster_cleanup` (a
# function the script may define) also does.
#   start_cluster [SETTING...]   initdb, the settings after the common ones, start
# PG_BIN: another version's programs (e.g. a wheel's `pginstall/bin`); default: Debian's newest.
BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
WORK=$(mktemp -d /tmp/lifeboat-bench.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; AS=(runuser -u postgres --); fi
PORT=$((20000 + RANDOM % 20000))
export PGHOST=$WORK PGPORT=$PORT PGUSER=bench
cleanup() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  if declare -F cluster_cleanup >/dev/null; then cluster_cleanup; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster() {
  "${AS[@]}" "$BIN/initdb" -D "$WORK/data" -U bench --auth=trust --no-sync >/dev/null
  {
    echo "port = $PORT"
    echo "unix_socket_directories = '$WORK'"
    echo "listen_addresses = ''"
    echo "shared_buffers = 256MB"
    printf '%s\n' "$@"
  } >>"$WORK/data/postgresql.conf"
  "${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
}
