#!/usr/bin/env bash
# test/pgxsuite/run.sh: run pgx's own test suite once directly against a
# throwaway PostgreSQL and once through `regate dev` (allow-all policy), and
# report every test that passes directly but not through regate.
#
#   test/pgxsuite/run.sh                      # everything (~30-60 min on 2 cores)
#   PGX_RUN='^TestConnCopyFrom' test/pgxsuite/run.sh    # only matching tests
#   PGX_PKGS='./pgconn' test/pgxsuite/run.sh            # only some packages
#
# Environment (all optional):
#   PGX_VERSION       pgx module version                (v5.12.0)
#   PGX_PKGS          packages inside the pgx module    (". ./pgconn ./pgtype ./pgxpool ./stdlib")
#   PGX_RUN           go test -run regexp               (all tests)
#   PGX_TEST_TIMEOUT  go test -timeout of each run      (20m)
#   PGX_GO_P          go test -p (packages at once)     (1: the packages share one database)
#   PGX_CONFIRM       re-run each regressed top-level test alone, once direct and once
#                     through regate, to tell real regressions from flaky tests (1; 0 = off)
#   PGX_CONFIRM_MAX   confirm at most this many top-level tests  (10)
#   PGBIN             PostgreSQL binaries                (/usr/lib/postgresql/15/bin)
#   REGATE_BIN        use this regate binary instead of building ./cmd/regate
#   REGATE_REV        build this committed revision (e.g. HEAD) instead of the working tree
#   REGATE_RACE       1 = build regate with -race; data races are counted from its log
#   KEEP_WORK         1 = keep the whole work dir (database, pgx copy), not only logs
#
# Exit status: 0 no regression, 1 at least one regression, 2 the harness failed.
# Logs (go test -json of both runs, regate's and PostgreSQL's logs, the
# regressions with their output) stay in the work dir printed at the end.
set -euo pipefail
{ # parsed as a whole before it runs, so editing this file mid-run is harmless

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PGX_VERSION=${PGX_VERSION:-v5.12.0}
PGX_PKGS=${PGX_PKGS:-". ./pgconn ./pgtype ./pgxpool ./stdlib"}
PGX_RUN=${PGX_RUN:-}
PGX_TEST_TIMEOUT=${PGX_TEST_TIMEOUT:-20m}
PGX_GO_P=${PGX_GO_P:-1}
PGX_CONFIRM=${PGX_CONFIRM:-1}
PGX_CONFIRM_MAX=${PGX_CONFIRM_MAX:-10}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PASSWORD="pgx-suite-$$-$RANDOM"

WORK=$(mktemp -d /tmp/pgxsuite.XXXXXX)
chmod 755 "$WORK"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
PGBASE="$WORK/pg"            # owned by postgres
PGDATA="$PGBASE/data"
REGATE_TMP="$WORK/regate-tmp" # TMPDIR of regate: its dev state file stays ours
REGATE_PID=""
PG_STARTED=0

say() { printf '[pgxsuite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 2; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n "$REGATE_PID" ]] && kill -0 "$REGATE_PID" 2>/dev/null; then
		kill "$REGATE_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$REGATE_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$REGATE_PID" 2>/dev/null || true
	fi
	if [[ $PG_STARTED == 1 ]]; then
		runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	if [[ "${KEEP_WORK:-0}" != 1 ]]; then
		rm -rf "$PGBASE" "$WORK/pgx" "$REGATE_TMP" "$WORK/regate-src" "$WORK/regate" 2>/dev/null || true
	fi
	say "logs: $LOGS"
	exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 2' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# duration "20m" -> seconds (s, m, h suffixes)
seconds() {
	local v=$1
	case $v in
	*h) echo $(( ${v%h} * 3600 )) ;;
	*m) echo $(( ${v%m} * 60 )) ;;
	*s) echo "${v%s}" ;;
	*) echo "$v" ;;
	esac
}

for c in go python3 runuser timeout; do command -v "$c" >/dev/null || die "$c is required"; done
[[ -x "$PGBIN/initdb" ]] || die "PostgreSQL binaries not found in $PGBIN (set PGBIN)"
[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL runs as user postgres via runuser)"

# ---------------------------------------------------------------- regate ----
if [[ -n "${REGATE_BIN:-}" ]]; then
	REGATE=$REGATE_BIN
else
	REGATE=/tmp/regate-pgx/regate
	mkdir -p /tmp/regate-pgx
	SRC=$ROOT
	if [[ -n "${REGATE_REV:-}" ]]; then
		# Build a committed revision (e.g. HEAD) instead of the working tree.
		SRC="$WORK/regate-src"
		mkdir -p "$SRC"
		git -C "$ROOT" archive "$REGATE_REV" | tar -x -C "$SRC" || die "cannot export regate revision $REGATE_REV"
	fi
	BUILD_FLAGS=()
	[[ "${REGATE_RACE:-0}" == 1 ]] && BUILD_FLAGS=(-race)
	for attempt in 1 2 3 4 5; do
		if (cd "$SRC" && go build "${BUILD_FLAGS[@]}" -o "$REGATE" ./cmd/regate) >"$LOGS/build.log" 2>&1; then
			break
		fi
		[[ $attempt == 5 ]] && { cat "$LOGS/build.log" >&2; die "cannot build regate (engine mid-edit?)"; }
		say "regate does not build (attempt $attempt/5, see below); retrying in 60s"
		tail -5 "$LOGS/build.log" >&2
		sleep 60
	done
	# Run a private copy: a rebuild by someone else must not change the binary under test.
	cp "$REGATE" "$WORK/regate"
	REGATE="$WORK/regate"
fi
if [[ -n "${REGATE_REV:-}" ]]; then
	git -C "$ROOT" rev-parse --short "$REGATE_REV" >"$LOGS/regate-revision.txt" 2>/dev/null || echo "$REGATE_REV" >"$LOGS/regate-revision.txt"
else
	(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null; git -C "$ROOT" status --short -- proxy 2>/dev/null) >"$LOGS/regate-revision.txt" || true
	git -C "$ROOT" diff HEAD -- proxy >"$LOGS/regate-proxy.diff" 2>/dev/null || true
fi
say "regate: $REGATE ($(head -1 "$LOGS/regate-revision.txt" 2>/dev/null), $(($(wc -l <"$LOGS/regate-revision.txt") - 1)) locally changed files under proxy/)"

# ------------------------------------------------------------- pgx source ---
PGX_DIR=$(go mod download -json "github.com/jackc/pgx/v5@$PGX_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
	|| die "go mod download github.com/jackc/pgx/v5@$PGX_VERSION failed"
cp -r "$PGX_DIR" "$WORK/pgx"
chmod -R u+w "$WORK/pgx"
say "pgx $PGX_VERSION copied to $WORK/pgx; compiling its tests"
# shellcheck disable=SC2086
(cd "$WORK/pgx" && timeout 900 go test -count=1 -run '^$' $PGX_PKGS) >"$LOGS/compile.log" 2>&1 \
	|| { cat "$LOGS/compile.log" >&2; die "pgx tests do not compile"; }

# ------------------------------------------------------------- PostgreSQL ---
mkdir -p "$PGBASE"
chown postgres: "$PGBASE"
printf '%s\n' "$PG_PASSWORD" >"$PGBASE/pw"
chown postgres: "$PGBASE/pw"
PGPORT=$(free_port)
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
	--pwfile="$PGBASE/pw" --no-sync -E UTF8 --locale=C >"$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
rm -f "$PGBASE/pw"
touch "$LOGS/postgres.log"
chown postgres: "$LOGS/postgres.log"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 60 -l "$LOGS/postgres.log" \
	-o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGBASE -c fsync=off -c max_connections=300 -c max_prepared_transactions=10" \
	start >"$LOGS/pg_ctl.log" 2>&1 || { cat "$LOGS/pg_ctl.log" "$LOGS/postgres.log" >&2; die "PostgreSQL did not start"; }
PG_STARTED=1
say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"

psql_su() { runuser -u postgres -- "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGBASE" -p "$PGPORT" -U postgres "$@"; }

# pgx's CONTRIBUTING.md, "Using an existing PostgreSQL cluster", plus the role
# of testsetup/postgresql_setup.sql that the aclitem test needs.
EXT_MISSING=""
for e in hstore ltree; do
	[[ -f /usr/share/postgresql/15/extension/$e.control ]] || EXT_MISSING="$EXT_MISSING $e"
done
[[ -z "$EXT_MISSING" ]] || say "WARNING: extension(s)$EXT_MISSING missing (apt-get install postgresql-contrib); tests using them fail in both runs"
psql_su -d postgres -c "create user \" tricky, ' } \"\" \\\\ test user \" superuser password 'secret'" >>"$LOGS/setup.log" 2>&1 \
	|| say "WARNING: cannot create the tricky test user (see $LOGS/setup.log)"
fresh_db() {
	psql_su -d postgres -c 'drop database if exists pgx_test with (force)' -c 'create database pgx_test' >>"$LOGS/setup.log" 2>&1 \
		|| die "cannot create database pgx_test (see $LOGS/setup.log)"
	for e in hstore ltree; do
		psql_su -d pgx_test -c "create extension if not exists $e" >>"$LOGS/setup.log" 2>&1 || true
	done
	psql_su -d pgx_test -c 'create domain uint64 as numeric(20,0)' >>"$LOGS/setup.log" 2>&1 || die "cannot create domain uint64"
}

# -------------------------------------------------------------- go test -----
TIMEOUT_S=$(seconds "$PGX_TEST_TIMEOUT")
# run_suite NAME CONNSTRING [go test args...]: go test -json into $LOGS/NAME.json
run_suite() {
	local name=$1 conn=$2
	shift 2
	local -a args=(-count=1 -json -p "$PGX_GO_P" -timeout "$PGX_TEST_TIMEOUT")
	[[ -n "$PGX_RUN" ]] && args+=(-run "$PGX_RUN")
	local start=$SECONDS rc=0
	# shellcheck disable=SC2086
	(
		cd "$WORK/pgx"
		# Only the connection strings below: no PG* variable of the caller leaks in.
		for v in $(env | grep -oE '^PG[A-Z_]*' || true); do unset "$v"; done
		export PGX_TEST_DATABASE="$conn" PGX_TEST_TCP_CONN_STRING="$conn"
		exec timeout -k 30 $((TIMEOUT_S + 300)) go test "${args[@]}" "$@"
	) >"$LOGS/$name.json" 2>"$LOGS/$name.stderr" || rc=$?
	say "$name: go test exited $rc after $((SECONDS - start))s"
	echo "$name $((SECONDS - start))" >>"$LOGS/durations.txt"
}

DIRECT_CONN="host=127.0.0.1 port=$PGPORT user=postgres dbname=pgx_test password=$PG_PASSWORD sslmode=disable"

fresh_db
say "run 1/2: direct (127.0.0.1:$PGPORT), packages: $PGX_PKGS"
# shellcheck disable=SC2086
run_suite direct "$DIRECT_CONN" $PGX_PKGS

# --------------------------------------------------------- regate dev -------
fresh_db
RPORT=$(free_port)
mkdir -p "$REGATE_TMP" "$WORK/regate-data"
TMPDIR="$REGATE_TMP" REGATE_DEV_UPSTREAM_PASSWORD="$PG_PASSWORD" \
	"$REGATE" dev --listen "127.0.0.1:$RPORT" --upstream "127.0.0.1:$PGPORT" --upstream-user postgres \
	--bundle "$HERE/allow-all" --data "$WORK/regate-data" >"$LOGS/regate.stdout" 2>"$LOGS/regate.log" &
REGATE_PID=$!
for _ in $(seq 300); do
	if [[ -f "$REGATE_TMP/regate-dev-$(id -u)/state.json" ]] && grep -q 'regate dev is ready' "$LOGS/regate.log"; then break; fi
	kill -0 "$REGATE_PID" 2>/dev/null || { cat "$LOGS/regate.log" >&2; die "regate dev exited"; }
	sleep 0.2
done
grep -q 'regate dev is ready' "$LOGS/regate.log" || { cat "$LOGS/regate.log" >&2; die "regate dev not ready after 60s"; }
TOKEN=$(TMPDIR="$REGATE_TMP" "$REGATE" token --sub pgx-suite --ttl 24h) || die "regate token failed"
REGATE_CONN="host=127.0.0.1 port=$RPORT user=postgres dbname=pgx_test password=$TOKEN sslmode=disable"
say "regate dev (pid $REGATE_PID) on 127.0.0.1:$RPORT -> 127.0.0.1:$PGPORT"

say "run 2/2: through regate, packages: $PGX_PKGS"
# shellcheck disable=SC2086
run_suite regate "$REGATE_CONN" $PGX_PKGS
kill -0 "$REGATE_PID" 2>/dev/null || say "WARNING: regate dev is no longer running (see $LOGS/regate.log)"

# ---------------------------------------------------------------- report ----
# compare.py prints the report and writes regressions.tsv (package<TAB>top-level test).
cat >"$LOGS/compare.py" <<'PY'
import json, sys, os, re, collections

logs = sys.argv[1]

def load(name):
    res, out = {}, collections.defaultdict(list)
    path = os.path.join(logs, name + ".json")
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            t = ev.get("Test")
            if not t:
                continue
            # t.TempDir() paths in subtest names differ between runs.
            t = re.sub(r"(Test\w*?)\d+(/\d{3})", r"\1*\2", t)
            key = (ev.get("Package", ""), t)
            a = ev.get("Action")
            if a in ("pass", "fail", "skip"):
                res[key] = a
            elif a == "run":
                res.setdefault(key, "none")
            elif a == "output":
                out[key].append(ev.get("Output", ""))
    return res, out

direct, _ = load("direct")
via, via_out = load("regate")

def totals(r):
    c = collections.Counter(r.values())
    return c["pass"], c["fail"], c["skip"], c["none"]

regs = sorted(k for k, v in direct.items() if v == "pass" and via.get(k, "none") != "pass")
fixed = sorted(k for k, v in via.items() if v == "pass" and direct.get(k) not in ("pass", None))
# A parent fails when a subtest fails: report the leaves, count parents separately.
leaf = [k for k in regs if not any(o[0] == k[0] and o[1].startswith(k[1] + "/") for o in regs)]

short = lambda p: p.replace("github.com/jackc/pgx/v5", "pgx") or "pgx"
dp, df, ds, dn = totals(direct)
vp, vf, vs, vn = totals(via)
print()
print("=" * 78)
print(f"direct:     {dp} pass, {df} fail, {ds} skip, {dn} no result   (tests incl. subtests)")
print(f"via regate: {vp} pass, {vf} fail, {vs} skip, {vn} no result")
print(f"regressions (pass directly, not via regate): {len(regs)} ({len(leaf)} leaf tests)")
if fixed:
    print(f"pass via regate only (direct fail/skip): {len(fixed)}: " + ", ".join(short(p) + " " + t for p, t in fixed[:10]))
print("=" * 78)

def reason(k):
    lines = via_out.get(k, [])
    keep = []
    for l in lines:
        s = l.rstrip("\n")
        if re.match(r"^\s*=== (RUN|PAUSE|CONT)", s) or re.match(r"^\s*--- (PASS|SKIP)", s):
            continue
        if s.strip():
            keep.append(s)
    return keep

with open(os.path.join(logs, "regressions.txt"), "w") as f:
    for k in leaf:
        st = via.get(k, "none")
        f.write(f"##### {short(k[0])} {k[1]}  [via regate: {st}]\n")
        f.write("\n".join(reason(k)) + "\n\n")

for k in leaf:
    st = via.get(k, "none")
    msg, lines = "", [l.strip() for l in reason(k)]
    for i, l in enumerate(lines):
        if l.startswith("Error:"):
            msg = l[6:].strip()
            if i + 1 < len(lines) and not re.match(r"^(Test|Messages|Error Trace):", lines[i + 1]):
                msg += " " + lines[i + 1]
            break
    if not msg:
        for l in lines:
            if l.startswith("--- FAIL") or l.startswith("Error Trace"):
                continue
            if re.search(r"error|panic|timed out|unexpected|expected|fail", l, re.I):
                msg = l
                break
    print(f"REGRESSION {short(k[0]):15s} {k[1]}  [{st}]  {msg[:240]}")

tops = sorted({(p, t.split("/")[0]) for p, t in leaf})
with open(os.path.join(logs, "regressions.tsv"), "w") as f:
    for p, t in tops:
        f.write(f"{p}\t{t}\n")
sys.exit(1 if regs else 0)
PY
REG_RC=0
python3 "$LOGS/compare.py" "$LOGS" | tee "$LOGS/report.txt" || REG_RC=$?
[[ $REG_RC -le 1 ]] || die "cannot compare the runs (compare.py exited $REG_RC)"

# Confirm each regressed top-level test alone, each time on a fresh database:
# directly (to spot flaky tests) and through regate.
if [[ $REG_RC == 1 && "$PGX_CONFIRM" == 1 ]]; then
	say "confirming $(head -n "$PGX_CONFIRM_MAX" "$LOGS/regressions.tsv" | wc -l) regressed top-level test(s) one by one (PGX_CONFIRM=0 skips this)"
	mkdir -p "$LOGS/confirm"
	: >"$LOGS/confirm.txt"
	while IFS=$'\t' read -r pkg test <&3; do
		rel=".${pkg#github.com/jackc/pgx/v5}"
		line="  $rel $test:"
		for side in direct regate; do
			conn=$REGATE_CONN
			[[ $side == direct ]] && conn=$DIRECT_CONN
			fresh_db </dev/null
			f="$LOGS/confirm/$side-${rel//[^A-Za-z0-9]/_}-$test.txt"
			(
				cd "$WORK/pgx"
				for v in $(env | grep -oE '^PG[A-Z_]*' || true); do unset "$v"; done
				export PGX_TEST_DATABASE="$conn" PGX_TEST_TCP_CONN_STRING="$conn"
				timeout -k 10 400 go test -count=1 -timeout 360s -v -run "^${test}\$" "$rel"
			) >"$f" 2>&1 </dev/null && r=pass || r=FAIL
			line="$line $side=$r"
		done
		echo "$line" >>"$LOGS/confirm.txt"
	done 3< <(head -n "$PGX_CONFIRM_MAX" "$LOGS/regressions.tsv")
	echo
	echo "Each regressed top-level test re-run alone on a fresh database (output in $LOGS/confirm/):"
	cat "$LOGS/confirm.txt"
fi

echo
echo "wall time of go test: $(tr '\n' ' ' <"$LOGS/durations.txt")(seconds)"
if grep -qE '^(panic:|fatal error:)' "$LOGS/regate.log"; then
	echo "regate CRASHED:"; grep -E -A3 '^(panic:|fatal error:)' "$LOGS/regate.log" | head -20
fi
if [[ "${REGATE_RACE:-0}" == 1 ]]; then
	echo "regate data races: $(grep -c 'WARNING: DATA RACE' "$LOGS/regate.log" || true) (see $LOGS/regate.log)"
fi
ERRS=$(grep -cE '\[(ERROR|WARN)\]' "$LOGS/regate.log" || true)
echo "regate log: $ERRS ERROR/WARN lines ($LOGS/regate.log); most frequent:"
grep -E '\[(ERROR|WARN)\]' "$LOGS/regate.log" | sed -E 's/^[^[]*//; s/(session_id|client_addr|pid|decision_id)=[^ ]*//g' | sort | uniq -c | sort -rn | head -10 || true
echo "details: $LOGS/report.txt, $LOGS/regressions.txt (failure output via regate), $LOGS/{direct,regate}.json"
exit "$REG_RC"
}
