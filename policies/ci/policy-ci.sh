#!/usr/bin/env bash
# policy-ci.sh — what a policy repository's CI runs before a bundle reaches the
# gateways: test, what-if against recorded traffic, build, sign, publish.
#
#   POLICY_DIR=policies DECISIONS=decisions.ndjson SIGNING_KEY=ci.pem \
#   PUBLISH_DIR=/srv/bundles ./policy-ci.sh
#
# Environment:
#   POLICY_DIR      the bundle root: .rego, *_test.rego, data files (default: policies)
#   DECISIONS       decisions exported by the gateways (`regate export decisions
#                   --since 24h -o decisions.ndjson`), or a URL to fetch them from;
#                   empty: skip the what-if step (say why in your pipeline)
#   ALLOW_CHANGES   1: publish even when the candidate changes recorded decisions
#                   (the change list is still printed); default: stop
#   REVISION        bundle revision (default: git describe --always --dirty, else a timestamp)
#   SIGNING_KEY     PEM private key (file or inline) that signs the bundle; empty: unsigned
#   SIGNING_ALG     default RS256
#   KEY_ID          key id the gateways' policy.opa.keys know it by (default: ci)
#   OUT             where the bundle is written (default: dist/bundle.tar.gz)
#   PUBLISH_DIR     copy the bundle there atomically (a directory a web server serves), or
#   PUBLISH_URL     HTTP PUT the bundle there (curl -T; PUBLISH_TOKEN as a bearer token), or
#   neither         build only
#   REGATE          the regate binary (default: regate on PATH)
set -euo pipefail

REGATE=${REGATE:-regate}
POLICY_DIR=${POLICY_DIR:-policies}
OUT=${OUT:-dist/bundle.tar.gz}
KEY_ID=${KEY_ID:-ci}
SIGNING_ALG=${SIGNING_ALG:-RS256}
if [[ -z "${REVISION:-}" ]]; then
  REVISION=$(git -C "$POLICY_DIR" describe --always --dirty 2>/dev/null || date -u +%Y%m%dT%H%M%SZ)
fi

step() { printf '\n== %s\n' "$*"; }

step "1/4 regate policy test $POLICY_DIR"
"$REGATE" policy test "$POLICY_DIR"

if [[ -n "${DECISIONS:-}" ]]; then
  step "2/4 what-if: re-decide the recorded decisions with this revision"
  decisions=$DECISIONS
  if [[ "$decisions" == http://* || "$decisions" == https://* ]]; then
    decisions=$(mktemp)
    trap 'rm -f "$decisions"' EXIT
    curl -fsSL "$DECISIONS" -o "$decisions"
  fi
  flags=()
  [[ "${ALLOW_CHANGES:-0}" == 1 ]] && flags+=(--allow-changes)
  "$REGATE" policy what-if --bundle "$POLICY_DIR" --decisions "$decisions" --since "" "${flags[@]}"
else
  step "2/4 what-if skipped: DECISIONS is not set"
fi

step "3/4 build $OUT (revision $REVISION)"
mkdir -p "$(dirname "$OUT")"
build=("$REGATE" policy build "$POLICY_DIR" -o "$OUT" --revision "$REVISION")
if [[ -n "${SIGNING_KEY:-}" ]]; then
  build+=(--signing-key "$SIGNING_KEY" --signing-alg "$SIGNING_ALG" --key-id "$KEY_ID")
fi
"${build[@]}"

if [[ -n "${PUBLISH_DIR:-}" ]]; then
  step "4/4 publish to $PUBLISH_DIR"
  tmp="$PUBLISH_DIR/.$(basename "$OUT").$$"
  cp "$OUT" "$tmp"
  mv -f "$tmp" "$PUBLISH_DIR/$(basename "$OUT")"   # atomic: pollers never see half a file
elif [[ -n "${PUBLISH_URL:-}" ]]; then
  step "4/4 publish to $PUBLISH_URL"
  auth=()
  [[ -n "${PUBLISH_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $PUBLISH_TOKEN")
  curl -fsS "${auth[@]}" -T "$OUT" "$PUBLISH_URL"
else
  step "4/4 publish skipped: neither PUBLISH_DIR nor PUBLISH_URL is set"
fi
echo "revision $REVISION ready"
