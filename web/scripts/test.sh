#!/usr/bin/env bash
# Everything the dashboard's tests need, from a fresh clone: dependencies
# from the lockfile, Chromium, the bundle, type check, unit tests, and the
# browser tests against a freshly built `quarry server --dev`.
# Called by `make web-test`; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium
  else
    echo "The browser tests need Chromium at $chromium: run 'sudo apt-get install -y chromium'" >&2
    echo "(Debian/Ubuntu), or set CHROMIUM to a Chromium binary." >&2
    exit 1
  fi
fi

# The conversion spec needs qemu-img on the dev server's agent.
if ! command -v qemu-img >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-utils
  else
    echo "The conversion test needs qemu-img: run 'sudo apt-get install -y qemu-utils'" >&2
    exit 1
  fi
fi

npm run build
npm run typecheck
npm test

# A fresh quarry binary that embeds the bundle just built, and the test
# identity provider the single sign-on spec signs in at (never shipped).
bindir="$(mktemp -d)"
trap 'rm -rf "$bindir"' EXIT
(cd .. && go build -o "$bindir/quarry" ./cmd/quarry && go build -o "$bindir/quarry-test-oidc" ./internal/oidctest/cmd/quarry-test-oidc)
QUARRY_BIN="$bindir/quarry" QUARRY_OIDC_BIN="$bindir/quarry-test-oidc" npx playwright test "$@"
