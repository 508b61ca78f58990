#!/usr/bin/env bash
# Installs what the end-to-end tests need when it is missing: PostgreSQL
# (server binaries in /usr/lib/postgresql/<v>/bin, and psql).
set -euo pipefail
need=()
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${need[*]}; install them (apt-get install -y ${need[*]}) or run as root" >&2
  exit 1
fi
echo "installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
