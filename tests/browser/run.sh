#!/usr/bin/env bash
# Real-browser end-to-end test of tapgate's pages.
#
#   tests/browser/run.sh [extra node --test args]
#
# Installs what is missing (Debian's chromium, the npm packages, the tapgate
# debug binary), then runs every *.test.mjs here with node's test runner.
# TAPGATE_BIN=/path/to/tapgate uses that binary instead of building one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Playwright cannot download browsers here; the tests launch Debian's chromium.
if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: /usr/bin/chromium is missing; installing Debian's chromium" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

cd "$here"
if [ ! -d node_modules ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

if [ -z "${TAPGATE_BIN:-}" ]; then
  TAPGATE_BIN="$repo/target/debug/tapgate"
  # The pages are compiled into the binary (include_str!), so a page edited
  # after the last build means a stale binary: rebuild then too.
  if [ ! -x "$TAPGATE_BIN" ] || [ -n "$(find "$repo/src/pages/assets" -newer "$TAPGATE_BIN" -print -quit)" ]; then
    echo "run.sh: building $TAPGATE_BIN" >&2
    (cd "$repo" && cargo build)
  fi
elif [ ! -x "$TAPGATE_BIN" ]; then
  echo "run.sh: TAPGATE_BIN=$TAPGATE_BIN is not an executable file" >&2
  exit 2
fi
export TAPGATE_BIN

mkdir -p artifacts
# One test file at a time: each starts its own tapgate and browser, and the
# machine may be small.
exec node --test --test-concurrency=1 --test-reporter=spec "$@" ./*.test.mjs
