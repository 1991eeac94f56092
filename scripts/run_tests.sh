#!/usr/bin/env bash
# Runs the test suite inside a network namespace that has only loopback (`unshare -n`):
# Ray and any test server stay on this host, and the run proves the suite needs no network.
# Falls back to a plain run (with a warning) where namespaces are not permitted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
run() { "$PY" -m pytest "$@"; }
if command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up 2>/dev/null || true; exec "$0" -m pytest "$@"' "$PY" "$@"
else
  echo "warning: cannot create a network namespace here; running tests with the host network" >&2
  run "$@"
fi
