#!/usr/bin/env bash
# `make demo`: a throwaway PostgreSQL with a small table, and `regate dev` in
# front of it (development OIDC issuer, SQLite in a temp dir, the embedded
# default policy library). Ctrl-C stops both.
set -euo pipefail
BIN=${1:-bin/regate}
shift || true   # the rest are extra `regate dev` flags (--bundle DIR, --labels env=prod, …)
PGBIN=${REGATE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found; run: make test-deps" >&2; exit 1; }
LISTEN=${REGATE_DEMO_LISTEN:-127.0.0.1:6432}

free_port() {
  local p
  for p in $(seq 55432 55532); do
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
  echo "no free port" >&2; exit 1
}
PORT=$(free_port)
WORK=$(mktemp -d /tmp/regate-demo-XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); chown postgres "$WORK"; fi
PASS=demo-$RANDOM$RANDOM
echo "$PASS" > "$WORK/pw"; chmod 644 "$WORK/pw"

cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting a throwaway PostgreSQL on 127.0.0.1:$PORT ..."
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pw" --no-sync -E UTF8 --locale=C >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -w -l "$WORK/pg.log" \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c fsync=off" start >/dev/null
psql -X -q -h "$WORK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Cy', 'cy@example.com');
SQL
echo "regate dev in front of it on $LISTEN (Ctrl-C to stop) ..."
REGATE_DEV_UPSTREAM_PASSWORD="$PASS" "$BIN" dev --listen "$LISTEN" --upstream "127.0.0.1:$PORT" --upstream-user postgres "$@"
