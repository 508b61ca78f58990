#!/usr/bin/env bash
# `make bench`: end-to-end throughput and latency of regate against a direct
# PostgreSQL connection and against pgbouncer, with pgbench's select-only
# script (-S), in one run:
#
#   paths    direct       pgbench -> PostgreSQL
#            regate       pgbench -> regate dev (OIDC token as the password,
#                         every statement parsed, decided by the embedded
#                         default policy library and recorded in the SQLite
#                         hash chain, with regate dev's default store
#                         settings, before it is forwarded) -> PostgreSQL
#            pgbouncer    pgbench -> pgbouncer, pool_mode=session (a
#                         pass-through proxy like regate; transaction pooling
#                         would multiplex and compare unlike things) -> PostgreSQL
#            relay        pgbench -> test/bench/relay, a plain Go byte relay
#                         (two io.Copy goroutines per connection: no parsing,
#                         no policy, no record) -> PostgreSQL; the floor any Go
#                         proxy in the data path starts from on this machine
#   modes    -M simple, -M extended
#   clients  -c 1 -j 1, -c 8 -j 2
#
# Everything runs on loopback in a temp dir and is torn down on exit. Not part
# of `make test`.
#
# Environment:
#   BENCH_SECONDS=15     duration of each pgbench run (-T)
#   BENCH_REPEAT=1       runs of each configuration: the paths run back to back,
#                        round after round, and the report shows each number's
#                        median over the rounds (3 or more steadies the ratios on
#                        a shared machine, where direct TPS alone varies by ~10%)
#   BENCH_WARMUP=5       seconds of direct pgbench -S before measuring (0: none)
#   BENCH_SCALE=10       pgbench -i scale factor
#   BENCH_STRICT=1       exit 1 when a target FAILs (default: exit 0 regardless)
#   BENCH_PGBOUNCER=0    skip the pgbouncer column
#   BENCH_NO_INSTALL=1   never apt-get install pgbouncer (skip the column instead)
#   BENCH_KEEP=1         keep the temp dir (pgbench logs, regate.db, server logs)
#   BENCH_PROFILE=1      sample regate's CPU with `perf record -g` (Go keeps frame
#                        pointers, so perf sees Go stacks; for pprof, run with
#                        REGATE_PPROF=1, which serves /debug/pprof/ on regate's
#                        admin listener) during the 8-client simple run (its
#                        first round); perf.data and a
#                        top-symbols report go to BENCH_PROFILE_DIR (default: a new
#                        /tmp/regate-bench-profile-* dir, kept after the run)
#   BENCH_MODES="simple extended", BENCH_CLIENTS="1 8", BENCH_PATHS="direct regate
#   pgbouncer relay"     run a subset (targets whose runs are missing FAIL)
#   BENCH_GRACE=120      seconds a pgbench run may overrun -T before it is killed
#                        and counted as a stall
#   BENCH_DUMP_DIR=DIR   where a regate goroutine dump goes when a run through
#                        regate stalls (default: a new /tmp/regate-bench-stall-*)
#   REGATE_BIN=PATH      benchmark this regate binary instead of building one
#                        (same as the first argument)
#   REGATE_PG_BIN=DIR    PostgreSQL server binaries (default: newest
#                        /usr/lib/postgresql/*/bin)
#
# Targets (printed PASS/FAIL): regate >= 0.45x direct TPS at 8 clients in both
# modes; added median latency (regate - direct, from pgbench's per-transaction
# log) < 150 us at 1 client in both modes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

SECS=${BENCH_SECONDS:-15}
REPEAT=${BENCH_REPEAT:-1}
WARMUP=${BENCH_WARMUP:-5}
SCALE=${BENCH_SCALE:-10}
STRICT=${BENCH_STRICT:-0}
GRACE=${BENCH_GRACE:-120} # seconds a pgbench run may overrun -T before it counts as a stall
REGATE_BIN=${1:-${REGATE_BIN:-}}
REGATE_REV="binary $REGATE_BIN"
PGBIN=${REGATE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

TPS_TARGET=0.45 # regate/direct TPS at 8 clients
MED_TARGET=150  # added median latency at 1 client, microseconds

read -r -a MODES <<<"${BENCH_MODES:-simple extended}"
read -r -a CLIENTS <<<"${BENCH_CLIENTS:-1 8}"
read -r -a WANT_PATHS <<<"${BENCH_PATHS:-direct regate pgbouncer relay}"
declare -A JOBS=([1]=1 [8]=2)
for m in "${MODES[@]}"; do [[ $m == simple || $m == extended ]] || { echo "bench: BENCH_MODES: $m is not simple or extended" >&2; exit 2; }; done
for c in "${CLIENTS[@]}"; do [[ $c == 1 || $c == 8 ]] || { echo "bench: BENCH_CLIENTS: $c is not 1 or 8" >&2; exit 2; }; done
for p in "${WANT_PATHS[@]}"; do [[ $p == direct || $p == regate || $p == pgbouncer || $p == relay ]] || { echo "bench: BENCH_PATHS: $p is not direct, regate, pgbouncer or relay" >&2; exit 2; }; done
want() { [[ " ${WANT_PATHS[*]} " == *" $1 "* ]]; }

for v in SECS WARMUP SCALE GRACE REPEAT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v=${!v} is not a whole number" >&2; exit 2; }
done
[ "$SECS" -ge 1 ] && [ "$SECS" -le 3600 ] || { echo "bench: BENCH_SECONDS must be 1..3600" >&2; exit 2; }
[ "$REPEAT" -ge 1 ] && [ "$REPEAT" -le 20 ] || { echo "bench: BENCH_REPEAT must be 1..20" >&2; exit 2; }
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || { echo "bench: PostgreSQL server binaries not found; run: make test-deps" >&2; exit 1; }
for c in pgbench psql awk sort timeout; do
  command -v "$c" >/dev/null 2>&1 || { echo "bench: $c not found (pgbench and psql: apt-get install postgresql-client)" >&2; exit 1; }
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- temp dir, cleanup
WORK=$(mktemp -d /tmp/regate-bench-XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
  # initdb, postgres and pgbouncer refuse to run as root.
  AS=(runuser -u postgres --)
  chown postgres "$WORK"
fi
mkdir -p "$WORK/logs" "$WORK/tmp" "$WORK/regate-data" "$WORK/pgbouncer"
[ ${#AS[@]} -eq 0 ] || chown postgres "$WORK/pgbouncer"

REGATE_PID=""
BOUNCER_PID=""
RELAY_PID=""
PERF_PID=""
PG_STARTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$PERF_PID" ] || kill "$PERF_PID" 2>/dev/null || true
  [ -z "$RELAY_PID" ] || kill "$RELAY_PID" 2>/dev/null || true
  if [ -n "$REGATE_PID" ] && kill -0 "$REGATE_PID" 2>/dev/null; then
    kill "$REGATE_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$REGATE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$REGATE_PID" 2>/dev/null || true
  fi
  if [ -n "$BOUNCER_PID" ]; then
    local bpid
    bpid=$(cat "$WORK/pgbouncer/pgbouncer.pid" 2>/dev/null || true)
    [ -z "$bpid" ] || kill "$bpid" 2>/dev/null || true
    kill "$BOUNCER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BOUNCER_PID" 2>/dev/null || break; sleep 0.1; done
    [ -z "$bpid" ] || kill -9 "$bpid" 2>/dev/null || true
    kill -9 "$BOUNCER_PID" 2>/dev/null || true
  fi
  if [ "$PG_STARTED" = 1 ]; then
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Distinct free loopback ports, below the kernel's ephemeral range (so no
# outgoing connection or :0 listener, like regate dev's issuer, takes one
# between the check and the bind), from a random start so concurrent runs
# rarely collide.
EPH_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[[ $EPH_LOW =~ ^[0-9]+$ ]] && [ "$EPH_LOW" -gt 12000 ] || EPH_LOW=32768
USED_PORTS=" "
free_port() {
  local base=$((10000 + RANDOM % (EPH_LOW - 10000 - 200))) p i
  for i in $(seq 0 199); do
    p=$((base + i))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  echo "bench: no free port near $base" >&2
  return 1
}

# wait_port PORT PID SECONDS: until something listens on PORT (PID must stay alive).
wait_port() {
  local port=$1 pid=$2 n=$(($3 * 10)) i
  for i in $(seq 1 "$n"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  awk '{print $12 + $13}' <<<"$s"
}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

PROFILE=${BENCH_PROFILE:-0}
PROF_DIR=""
PROF_NOTE=""
if [ "$PROFILE" = 1 ]; then
  if command -v perf >/dev/null 2>&1; then
    PROF_DIR=${BENCH_PROFILE_DIR:-$(mktemp -d /tmp/regate-bench-profile-XXXXXX)}
    mkdir -p "$PROF_DIR"
  else
    PROF_NOTE="BENCH_PROFILE=1 needs perf (apt-get install linux-perf): no profile taken"
  fi
fi

# ---------------------------------------------------------------- regate binary
if [ -z "$REGATE_BIN" ]; then
  log "building regate from $ROOT ..."
  (cd "$ROOT" && go build -o "$WORK/regate" ./cmd/regate) || { echo "bench: go build failed" >&2; exit 1; }
  REGATE_BIN=$WORK/regate
  REGATE_REV="built from $ROOT at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
fi
[ -x "$REGATE_BIN" ] || { echo "bench: $REGATE_BIN is not an executable" >&2; exit 1; }
REGATE_BIN=$(cd "$(dirname "$REGATE_BIN")" && pwd)/$(basename "$REGATE_BIN")

# ---------------------------------------------------------------- reference relay binary
RELAY_NOTE=""
RELAY_BIN=""
if want relay; then
  if (cd "$ROOT" && go build -o "$WORK/relay" ./test/bench/relay) >"$WORK/relay-build.log" 2>&1; then
    RELAY_BIN=$WORK/relay
  else
    RELAY_NOTE="the reference relay did not build ($(tail -1 "$WORK/relay-build.log")): its runs skipped"
  fi
fi

# ---------------------------------------------------------------- pgbouncer binary
BOUNCER=""
BOUNCER_NOTE=""
if [ "${BENCH_PGBOUNCER:-1}" = 0 ] || ! want pgbouncer; then
  BOUNCER_NOTE="pgbouncer skipped (BENCH_PGBOUNCER=0 or BENCH_PATHS)"
else
  BOUNCER=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null || true)
  if [ -z "$BOUNCER" ] && [ "$(id -u)" = 0 ] && [ "${BENCH_NO_INSTALL:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing pgbouncer (apt-get) ..."
    if (export DEBIAN_FRONTEND=noninteractive; timeout 600 apt-get update -qq && timeout 600 apt-get install -y -qq pgbouncer) >"$WORK/apt.log" 2>&1; then
      BOUNCER=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null || true)
    else
      tail -5 "$WORK/apt.log" >&2 || true
    fi
  fi
  [ -n "$BOUNCER" ] || BOUNCER_NOTE="pgbouncer not installed (apt-get install -y pgbouncer, or run as root to let this script install it): column skipped"
fi

# ---------------------------------------------------------------- PostgreSQL
PGPORT=$(free_port)
PGPASS=bench-$RANDOM$RANDOM$RANDOM
printf '%s\n' "$PGPASS" >"$WORK/pw"
chmod 644 "$WORK/pw"
log "initdb + PostgreSQL on 127.0.0.1:$PGPORT ..."
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pw" --no-sync -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 ||
  { cat "$WORK/initdb.log" >&2; exit 1; }
rm -f "$WORK/pw"
PG_STARTED=1
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -w -t 60 -l "$WORK/pg.log" \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK -c fsync=off -c max_connections=100 -c shared_buffers=256MB" \
  start >/dev/null || { tail -20 "$WORK/pg.log" >&2; exit 1; }

export PGCONNECT_TIMEOUT=10 PGSSLMODE=disable PGDATABASE=postgres
direct_env=(env PGHOST=127.0.0.1 PGPORT="$PGPORT" PGUSER=postgres PGPASSWORD="$PGPASS")

log "pgbench -i -s $SCALE ..."
"${direct_env[@]}" timeout 1200 pgbench -i -q -s "$SCALE" >"$WORK/pgbench-init.log" 2>&1 ||
  { tail -20 "$WORK/pgbench-init.log" >&2; exit 1; }
"${direct_env[@]}" psql -X -q -v ON_ERROR_STOP=1 -c 'VACUUM ANALYZE' >/dev/null

# ---------------------------------------------------------------- regate dev
RPORT=$(free_port)
REGATE_STARTS=0
start_regate() {
  REGATE_STARTS=$((REGATE_STARTS + 1))
  log "regate dev on 127.0.0.1:$RPORT ($REGATE_BIN) ..."
  # TMPDIR: regate dev writes its state file (issuer URL) under os.TempDir(),
  # and `regate token` reads it there; a private one keeps other `regate dev`s out.
  local state
  state=$WORK/tmp/regate-dev-$(id -u)/state.json
  rm -f "$state"
  TMPDIR="$WORK/tmp" REGATE_DEV_UPSTREAM_PASSWORD="$PGPASS" "$REGATE_BIN" dev \
    --listen "127.0.0.1:$RPORT" --upstream "127.0.0.1:$PGPORT" --upstream-user postgres \
    --data "$WORK/regate-data" >"$WORK/regate.log" 2>&1 &
  REGATE_PID=$!
  for _ in $(seq 1 300); do
    [ -s "$state" ] && break
    kill -0 "$REGATE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$state" ] || ! wait_port "$RPORT" "$REGATE_PID" 30; then
    echo "bench: regate dev did not start:" >&2; tail -30 "$WORK/regate.log" >&2; return 1
  fi
  # A new dev issuer has new keys: a new token.
  TOKEN=$(TMPDIR="$WORK/tmp" timeout 30 "$REGATE_BIN" token --sub bench --groups bench --ttl 2h) ||
    { echo "bench: regate token failed" >&2; return 1; }
  regate_env=(env PGHOST=127.0.0.1 PGPORT="$RPORT" PGUSER=bench PGPASSWORD="$TOKEN")
  "${regate_env[@]}" timeout 60 psql -X -q -At -v ON_ERROR_STOP=1 -c 'SELECT count(*) FROM pgbench_branches' >/dev/null ||
    { echo "bench: a query through regate failed:" >&2; tail -30 "$WORK/regate.log" >&2; return 1; }
  STORE_SYNC=$(grep -o -m1 'synchronous=[A-Za-z]*' "$WORK/regate.log" || true)
}
STORE_SYNC=""

# stop_regate [TERM|QUIT]: QUIT makes Go print every goroutine's stack to
# stderr (regate.log) and exit.
stop_regate() {
  local sig=${1:-TERM}
  [ -n "$REGATE_PID" ] || return 0
  kill -CONT "$REGATE_PID" 2>/dev/null || true
  kill "-$sig" "$REGATE_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$REGATE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$REGATE_PID" 2>/dev/null || true
  wait "$REGATE_PID" 2>/dev/null || true
  REGATE_PID=""
}

# A run through regate that outlives pgbench's -T by far has stalled: keep a
# goroutine dump for the regate developers and restart regate so the other
# runs still happen.
DUMP_NOTES=()
regate_stalled() { # key, stem of the run's log files
  local d=${BENCH_DUMP_DIR:-} f
  [ -n "$d" ] || d=$(mktemp -d /tmp/regate-bench-stall-XXXXXX)
  BENCH_DUMP_DIR=$d
  mkdir -p "$d"
  f=$d/regate-goroutines-${1//,/-}.log
  log "  regate stalled in $1: SIGQUIT for a goroutine dump -> $f; restarting regate"
  stop_regate QUIT
  cp "$WORK/regate.log" "$f" 2>/dev/null || true
  cp "$2".* "$d/" 2>/dev/null || true
  DUMP_NOTES+=("regate stalled in $1 (pgbench killed after -T + $GRACE s); goroutine dump: $f")
  start_regate || log "  regate did not restart"
}

PATHS=(direct)
regate_env=()
if want regate; then
  start_regate || exit 1
  PATHS+=(regate)
fi

# ---------------------------------------------------------------- pgbouncer
if [ -n "$BOUNCER" ]; then
  BPORT=$(free_port)
  B=$WORK/pgbouncer
  printf '"postgres" "%s"\n' "$PGPASS" >"$B/userlist.txt"
  cat >"$B/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $B/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = $B/pgbouncer.log
pidfile = $B/pgbouncer.pid
EOF
  if [ ${#AS[@]} -gt 0 ]; then chown -R postgres "$B"; fi
  chmod 600 "$B/userlist.txt"
  log "pgbouncer (session pooling) on 127.0.0.1:$BPORT ..."
  "${AS[@]}" "$BOUNCER" "$B/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
  BOUNCER_PID=$!
  if wait_port "$BPORT" "$BOUNCER_PID" 30; then
    bouncer_env=(env PGHOST=127.0.0.1 PGPORT="$BPORT" PGUSER=postgres PGPASSWORD="$PGPASS")
    if "${bouncer_env[@]}" psql -X -q -At -v ON_ERROR_STOP=1 -c 'SELECT 1' >/dev/null 2>"$WORK/pgbouncer.check"; then
      PATHS+=(pgbouncer)
    else
      BOUNCER_NOTE="pgbouncer refused a test query ($(head -1 "$WORK/pgbouncer.check")): column skipped"
    fi
  else
    BOUNCER_NOTE="pgbouncer did not start ($(tail -1 "$WORK/pgbouncer.out" "$B/pgbouncer.log" 2>/dev/null | tail -1)): column skipped"
  fi
fi

# ---------------------------------------------------------------- reference relay
if [ -n "$RELAY_BIN" ]; then
  LPORT=$(free_port)
  log "reference relay on 127.0.0.1:$LPORT ..."
  "$RELAY_BIN" -listen "127.0.0.1:$LPORT" -upstream "127.0.0.1:$PGPORT" >"$WORK/relay.log" 2>&1 &
  RELAY_PID=$!
  relay_env=(env PGHOST=127.0.0.1 PGPORT="$LPORT" PGUSER=postgres PGPASSWORD="$PGPASS")
  if wait_port "$LPORT" "$RELAY_PID" 30 && "${relay_env[@]}" psql -X -q -At -v ON_ERROR_STOP=1 -c 'SELECT 1' >/dev/null 2>"$WORK/relay.check"; then
    PATHS+=(relay)
  else
    RELAY_NOTE="the reference relay did not start or refused a test query ($(tail -1 "$WORK/relay.log" "$WORK/relay.check" 2>/dev/null | tail -1)): its runs skipped"
  fi
fi
proxy_pid() { # the process whose CPU time a path's proxy uses
  case $1 in
    regate) echo "$REGATE_PID" ;;
    relay) echo "$RELAY_PID" ;;
    pgbouncer) cat "$WORK/pgbouncer/pgbouncer.pid" 2>/dev/null || echo "" ;;
    *) echo "" ;;
  esac
}

# ---------------------------------------------------------------- runs
declare -A TPS LAT MED P99 CPU ERR
# percentile FILES... -> "median p99" of the per-transaction latencies (us).
# Log line: client_id transaction_no time_us script_no epoch epoch_us; failed
# or skipped transactions have a word in place of time_us and are left out.
percentiles() {
  awk '$3 ~ /^[0-9]+$/ {print $3}' "$@" | sort -n | awk '
    {v[NR] = $1}
    END {
      if (NR == 0) { print "NA NA"; exit }
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      i = int(NR * 0.99 + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR
      printf "%.0f %d\n", med, v[i]
    }'
}

run_one() { # path mode clients round (values go to the arrays under "path,mode,clients,round")
  local path=$1 mode=$2 c=$3 j=${JOBS[$3]} key="$1,$2,$3,$4" out envv pid t0 t1
  out=$WORK/logs/$path-$mode-c$c
  [ "$REPEAT" = 1 ] || out=$out-r$4
  case $path in
    direct) envv=("${direct_env[@]}") ;;
    regate) envv=("${regate_env[@]}") ;;
    pgbouncer) envv=("${bouncer_env[@]}") ;;
    relay) envv=("${relay_env[@]}") ;;
  esac
  local extra=()
  if [ "$c" = 1 ]; then extra=(-l "--log-prefix=$out.txlog"); fi
  pid=$(proxy_pid "$path")
  [ -z "$pid" ] || t0=$(cpu_ticks "$pid")
  local perf_pid=""
  if [ -n "$PROF_DIR" ] && [ "$path" = regate ] && [ "$mode" = simple ] && [ "$c" = 8 ] && [ "$4" = 1 ]; then
    # Sample only the measured window: skip pgbench's connection setup.
    (sleep 1; exec timeout -k 5 $((SECS + 30)) perf record -e cpu-clock -F 499 -g -p "$pid" \
      -o "$PROF_DIR/regate-perf.data" -- sleep $((SECS > 2 ? SECS - 2 : 1))) >"$PROF_DIR/perf-record.log" 2>&1 &
    perf_pid=$!
    PERF_PID=$perf_pid
  fi
  log "pgbench -S -M $mode -c $c -j $j -T $SECS  via $path$([ "$REPEAT" = 1 ] || echo " (round $4 of $REPEAT)")"
  if (cd "$WORK/logs" && "${envv[@]}" timeout -k 5 $((SECS + GRACE)) \
      pgbench -n -S -M "$mode" -c "$c" -j "$j" -T "$SECS" "${extra[@]}") >"$out.out" 2>&1; then
    TPS[$key]=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$out.out")
    LAT[$key]=$(awk '/^latency average = / {print $4; exit}' "$out.out")
    local failed
    failed=$(awk '/^number of failed transactions:/ {print $5; exit}' "$out.out")
    if [ -z "${TPS[$key]}" ]; then
      ERR[$key]="no tps in output"
    elif [ -n "$failed" ] && [ "$failed" != 0 ]; then
      ERR[$key]="$failed failed transactions"
    fi
  else
    local rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      ERR[$key]="pgbench killed after $((SECS + GRACE))s (stall; -T $SECS)"
      [ "$path" != regate ] || regate_stalled "$1,$2,$3" "$out"
      pid=""
    else
      ERR[$key]="pgbench exit $rc: $(grep -m1 -iE 'error|abort|fatal|could not|failed' "$out.out" || tail -1 "$out.out")"
    fi
  fi
  if [ -n "$pid" ] && [ -n "${TPS[$key]:-}" ]; then
    t1=$(cpu_ticks "$pid")
    local n
    n=$(awk '/^number of transactions actually processed:/ {print $6; exit}' "$out.out")
    [ -z "$n" ] || [ "$n" = 0 ] || CPU[$key]=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
  fi
  if [ "$c" = 1 ] && [ -z "${ERR[$key]:-}" ]; then
    local files=("$out".txlog.*)
    if [ -e "${files[0]}" ]; then
      read -r MED[$key] P99[$key] < <(percentiles "${files[@]}")
    fi
  fi
  [ -z "${ERR[$key]:-}" ] || log "  $path $mode c=$c: ${ERR[$key]}"
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    PERF_PID=""
    profile_report
  fi
}

perf_tidy() { # drop comments, blank lines and the empty IPC columns
  grep -v -e '^#' -e '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'
}

profile_report() {
  local d=$PROF_DIR/regate-perf.data r=$PROF_DIR/regate-profile.txt
  if [ ! -s "$d" ]; then
    PROF_NOTE="perf record failed: $(tail -1 "$PROF_DIR/perf-record.log" 2>/dev/null)"
    return 0
  fi
  {
    echo "regate CPU profile: perf record -e cpu-clock -F 499 -g, pgbench -S -M simple -c 8 -j 2 via regate"
    echo
    echo "== self time, top symbols =="
    timeout 300 perf report -i "$d" --stdio --no-children --sort symbol -g none --percent-limit 0.5 2>/dev/null | perf_tidy | head -40
    echo
    echo "== inclusive time (children), top symbols =="
    echo "(children = the symbol and everything it calls; key frames: policies.(*Engine).Decide, policies.inputValue,"
    echo " recorder.(*sqliteStore).commitBatch, parse/sql.(*Parser).Parse, encoding/json, runtime.gcBgMarkWorker)"
    timeout 300 perf report -i "$d" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null | perf_tidy | head -120
  } >"$r" 2>&1 || true
  PROF_NOTE="regate CPU profile (8-client simple run): $r (perf report -i $d)"
}

if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: ${WARMUP}s of pgbench -S direct ..."
  "${direct_env[@]}" timeout -k 5 $((WARMUP + 60)) pgbench -n -S -c 2 -j 2 -T "$WARMUP" >/dev/null 2>&1 || true
fi

# Paths back to back per configuration, so a burst of load on the shared
# machine hits one configuration's columns rather than one column.
START=$(date +%s)
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    for round in $(seq 1 "$REPEAT"); do
      for path in "${PATHS[@]}"; do
        run_one "$path" "$mode" "$c" "$round"
      done
    done
  done
done
ELAPSED=$(($(date +%s) - START))

# Each number of a configuration is the median of its rounds (the lower
# middle value for an even count); a configuration fails when a round did.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'; }
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    for path in "${PATHS[@]}"; do
      k="$path,$mode,$c"
      for arr in TPS LAT MED P99 CPU; do
        declare -n A=$arr
        vals=()
        for round in $(seq 1 "$REPEAT"); do
          [ -z "${A[$k,$round]:-}" ] || vals+=("${A[$k,$round]}")
        done
        [ ${#vals[@]} -eq 0 ] || A[$k]=$(median "${vals[@]}")
        unset -n A
      done
      for round in $(seq 1 "$REPEAT"); do
        if [ -n "${ERR[$k,$round]:-}" ]; then
          ERR[$k]="${ERR[$k]:+${ERR[$k]}; }${ERR[$k,$round]}$([ "$REPEAT" = 1 ] || echo " (round $round)")"
        fi
      done
    done
  done
done

# Ratios and added latencies are taken within each round (its paths ran back
# to back, so a slow spell of the machine affects both sides) and the median
# of the rounds is reported.
declare -A RATIO ADDED_US
ratio_of() { # a b -> a/b with 4 decimals, or nothing
  if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.4f", a / b}'; fi
}
ok_val() { # array key -> the value of a run that did not fail, or nothing
  local -n A=$1
  [ -n "${ERR[$2]:-}" ] || echo "${A[$2]:-}"
}
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    for pair in regate/direct regate/pgbouncer pgbouncer/direct relay/direct regate/relay; do
      a=${pair%/*} b=${pair#*/} vals=()
      for round in $(seq 1 "$REPEAT"); do
        r=$(ratio_of "$(ok_val TPS "$a,$mode,$c,$round")" "$(ok_val TPS "$b,$mode,$c,$round")")
        [ -z "$r" ] || vals+=("$r")
      done
      [ ${#vals[@]} -eq 0 ] || RATIO[$pair,$mode,$c]=$(median "${vals[@]}")
    done
    [ "$c" = 1 ] || continue
    for p in regate pgbouncer relay; do
      vals=()
      for round in $(seq 1 "$REPEAT"); do
        dm=$(ok_val MED "direct,$mode,1,$round") pm=$(ok_val MED "$p,$mode,1,$round")
        if [[ $dm =~ ^[0-9]+$ && $pm =~ ^[0-9]+$ ]]; then vals+=($((pm - dm))); fi
      done
      [ ${#vals[@]} -eq 0 ] || ADDED_US[$p,$mode]=$(median "${vals[@]}")
    done
  done
done

# ---------------------------------------------------------------- record check
# Stop regate first so every session is closed, then verify the chain.
REC_LINE=""
stop_regate TERM
STORE="sqlite://$WORK/regate-data/regate.db"
if ! want regate; then
  :
elif v=$(timeout 600 "$REGATE_BIN" verify --store "$STORE" 2>&1); then
  REC_LINE="regate verify: $v"
else
  REC_LINE="regate verify FAILED: $v"
fi
if want regate && cmds=$(timeout 300 "$REGATE_BIN" sessions --store "$STORE" 2>/dev/null |
  awk 'NR > 1 {c += $(NF-2); a += $(NF-1); b += $NF; s++} END {printf "%d sessions, %d commands recorded (%d allowed, %d blocked)", s, c, a, b}'); then
  REC_LINE="$REC_LINE"$'\n'"regate sessions: $cmds"
fi
[ "$REGATE_STARTS" -le 1 ] || REC_LINE="$REC_LINE (regate was restarted $((REGATE_STARTS - 1)) time(s) after a stall)"

# ---------------------------------------------------------------- report
fmt_ratio() { # pair mode clients -> the median ratio with 2 decimals, or "-"
  local r=${RATIO[$1,$2,$3]:-}
  if [ -n "$r" ]; then awk -v r="$r" 'BEGIN {printf "%.2fx", r}'; else echo "-"; fi
}
val() { # key array-name -> value or ERR/-
  local k=$1 arr=$2
  local -n A=$arr
  if [ -n "${ERR[$k]:-}" ]; then echo ERR; elif [ -n "${A[$k]:-}" ]; then echo "${A[$k]}"; else echo "-"; fi
}
has_bouncer=0
[[ " ${PATHS[*]} " == *" pgbouncer "* ]] && has_bouncer=1

echo
echo "regate end-to-end benchmark: pgbench -S (select-only), -T $SECS per run, scale $SCALE, $(nproc) CPUs (client, database and proxies share them)"
echo "  PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), fsync=off; regate dev: default policy library and store settings${STORE_SYNC:+ ($STORE_SYNC)}; $(
  [ "$has_bouncer" = 1 ] && "$BOUNCER" --version 2>/dev/null | head -1 | tr -d '\n' && echo ": pool_mode=session, default_pool_size=20" || echo "no pgbouncer")"
echo "  regate: $REGATE_REV"
echo "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); measured runs took ${ELAPSED}s"
echo
printf '%-9s %3s | %10s %8s | %10s %8s | %10s %8s | %8s %8s %8s\n' \
  mode c "direct" "lat ms" "regate" "lat ms" "pgbouncer" "lat ms" "rg/dir" "rg/pgb" "pgb/dir"
printf '%s\n' "------------------------------------------------------------------------------------------------------"
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    d="direct,$mode,$c" r="regate,$mode,$c" b="pgbouncer,$mode,$c"
    printf '%-9s %3s | %10s %8s | %10s %8s | %10s %8s | %8s %8s %8s\n' "$mode" "$c" \
      "$(val "$d" TPS)" "$(val "$d" LAT)" "$(val "$r" TPS)" "$(val "$r" LAT)" \
      "$([ $has_bouncer = 1 ] && val "$b" TPS || echo n/a)" "$([ $has_bouncer = 1 ] && val "$b" LAT || echo n/a)" \
      "$(fmt_ratio regate/direct "$mode" "$c")" "$(fmt_ratio regate/pgbouncer "$mode" "$c")" "$(fmt_ratio pgbouncer/direct "$mode" "$c")"
  done
done
echo "(TPS excludes connection time; lat = pgbench's average latency)"

if [[ " ${CLIENTS[*]} " == *" 1 "* ]]; then
echo
echo "1 client, per-transaction latency from pgbench -l (us):"
printf '%-9s | %8s %8s | %8s %8s %9s | %8s %8s %9s\n' mode "direct" "p99" "regate" "p99" "added" "pgbouncer" "p99" "added"
for mode in "${MODES[@]}"; do
  d="direct,$mode,1" r="regate,$mode,1" b="pgbouncer,$mode,1"
  ar=${ADDED_US[regate,$mode]:--} ab=${ADDED_US[pgbouncer,$mode]:--}
  printf '%-9s | %8s %8s | %8s %8s %9s | %8s %8s %9s\n' "$mode" \
    "$(val "$d" MED)" "$(val "$d" P99)" "$(val "$r" MED)" "$(val "$r" P99)" "$ar" \
    "$([ $has_bouncer = 1 ] && val "$b" MED || echo n/a)" "$([ $has_bouncer = 1 ] && val "$b" P99 || echo n/a)" "$ab"
done
echo "(median and p99 of each transaction's time; added = proxy median - direct median$([ "$REPEAT" = 1 ] || echo ", per round"))"
fi

echo
echo "proxy CPU per transaction (us of user+system CPU of the proxy process / transactions; ${HZ} Hz ticks):"
printf '%-9s %3s | %8s | %9s\n' mode c regate pgbouncer
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    printf '%-9s %3s | %8s | %9s\n' "$mode" "$c" "${CPU[regate,$mode,$c]:--}" \
      "$([ $has_bouncer = 1 ] && echo "${CPU[pgbouncer,$mode,$c]:--}" || echo n/a)"
  done
done

if [[ " ${PATHS[*]} " == *" relay "* ]]; then
echo
echo "reference: a plain Go byte relay (test/bench/relay: two io.Copy goroutines per connection, nothing decided or recorded):"
printf '%-9s %3s | %10s %8s | %9s %9s | %9s | %8s\n' mode c relay "lat ms" relay/dir rg/relay "added us" "CPU us"
for mode in "${MODES[@]}"; do
  for c in "${CLIENTS[@]}"; do
    l="relay,$mode,$c"
    printf '%-9s %3s | %10s %8s | %9s %9s | %9s | %8s\n' "$mode" "$c" "$(val "$l" TPS)" "$(val "$l" LAT)" \
      "$(fmt_ratio relay/direct "$mode" "$c")" "$(fmt_ratio regate/relay "$mode" "$c")" \
      "$([ "$c" = 1 ] && echo "${ADDED_US[relay,$mode]:--}" || echo -)" "${CPU[relay,$mode,$c]:--}"
  done
done
echo "(added us: relay median - direct median at 1 client; CPU us: the relay's CPU per transaction)"
fi

echo
echo "$REC_LINE"
[ -z "$RELAY_NOTE" ] || echo "note: $RELAY_NOTE"
[ -z "$BOUNCER_NOTE" ] || echo "note: $BOUNCER_NOTE"
[ -z "$PROF_NOTE" ] || echo "note: $PROF_NOTE"
for n in "${DUMP_NOTES[@]}"; do echo "stall: $n"; done
for k in "${!ERR[@]}"; do
  IFS=, read -r kp km kc <<<"$k"
  echo "error: $k: ${ERR[$k]} (pgbench output: logs/$kp-$km-c$kc$([ "$REPEAT" = 1 ] || echo "-rN").out; BENCH_KEEP=1 keeps the logs)"
done

echo
echo "targets:"
FAILS=0
for mode in "${MODES[@]}"; do
  res=FAIL ratio="-"
  if [ -n "${RATIO[regate/direct,$mode,8]:-}" ]; then
    ratio=$(fmt_ratio regate/direct "$mode" 8)
    awk -v r="${ratio%x}" -v t="$TPS_TARGET" 'BEGIN {exit !(r >= t)}' && res=PASS
  fi
  [ "$res" = PASS ] || FAILS=$((FAILS + 1))
  printf '  %-4s regate >= %sx direct TPS at 8 clients, %-8s: %s\n' "$res" "$TPS_TARGET" "$mode" "$ratio"
done
for mode in "${MODES[@]}"; do
  a=${ADDED_US[regate,$mode]:-}
  res=FAIL
  if [ -n "$a" ] && [ "$a" -lt "$MED_TARGET" ]; then res=PASS; fi
  [ "$res" = PASS ] || FAILS=$((FAILS + 1))
  printf '  %-4s added median latency < %s us at 1 client, %-8s: %s us\n' "$res" "$MED_TARGET" "$mode" "${a:--}"
done
if [ "$REPEAT" = 1 ]; then
  echo "(the machine is shared: numbers are noisy; each configuration ran once; BENCH_REPEAT=3 takes medians)"
else
  echo "(each configuration ran $REPEAT times, its paths back to back; every number above is the median of its runs)"
fi

if [ "$FAILS" -gt 0 ] && [ "$STRICT" = 1 ]; then
  echo "BENCH_STRICT=1: $FAILS target(s) failed" >&2
  exit 1
fi
exit 0
