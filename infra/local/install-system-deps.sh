#!/usr/bin/env bash
# Installs the system packages the local stack and the tests need, from Debian's archive, only
# when they are missing: PostgreSQL, pgTAP, pg_prove, and Chromium for the browser tests (driven
# by Playwright at /usr/bin/chromium; Playwright never downloads a browser of its own here).
# Safe to run again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: installing system packages needs root (or sudo)." >&2
    exit 1
  fi
fi

pg_major() {
  ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1
}

missing=()
if [ -z "$(pg_major)" ] || [ ! -x "/usr/lib/postgresql/$(pg_major)/bin/initdb" ]; then
  missing+=(postgresql postgresql-contrib)
fi
major="$(pg_major)"
if [ -z "$major" ] || [ ! -f "/usr/share/postgresql/$major/extension/pgtap.control" ]; then
  missing+=("postgresql-${major:-15}-pgtap")
fi
command -v pg_prove >/dev/null 2>&1 || missing+=(libtap-parser-sourcehandler-pgtap-perl)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# postgresql-N-pgtap may have arrived before the server's version was known: check again.
major="$(pg_major)"
if [ ! -f "/usr/share/postgresql/$major/extension/pgtap.control" ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "postgresql-$major-pgtap" >/dev/null
fi
