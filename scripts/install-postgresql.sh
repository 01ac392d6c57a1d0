#!/usr/bin/env bash
# Install PostgreSQL (Debian package `postgresql`) for `movierec stack` and its tests, when it is
# missing and we can: root with apt-get. Prints what it did; exits 0 when PostgreSQL is usable
# afterwards, 1 otherwise (with the reason).
set -euo pipefail

found() { ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1; }

if found; then
  echo "PostgreSQL is installed"
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL is not installed and this is not root with apt-get: install the postgresql package" >&2
  exit 1
fi
echo "installing postgresql"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 || {
  apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1
} || { echo "could not install postgresql" >&2; exit 1; }
# The package starts a cluster of its own on port 5432; the stack runs its own clusters.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for cluster in /etc/postgresql/*/main; do
    [[ -d "$cluster" ]] && pg_ctlcluster "$(basename "$(dirname "$cluster")")" main stop >/dev/null 2>&1 || true
  done
fi
found && echo "PostgreSQL is installed"
