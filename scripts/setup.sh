#!/usr/bin/env bash
# Create .venv (once) and install the service with its test tools.
# torch/torchvision are pinned in constraints.txt to the builds CI uses.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # rembg imports pymatting, whose numba kernels compile at its first import (about 50 CPU-s)
  # into its own __pycache__: once here, not in the first test or `from rembg import remove`
  # that imports it. rembg (its version from constraints.txt) goes in first, so that the
  # kernels compile on one core while pip installs the rest on another; pip then finds
  # rembg's dependencies in place. The last import is quick once they compiled, and compiles
  # them itself if the background one failed.
  .venv/bin/python -m pip install -q -c constraints.txt "rembg[cpu]"
  .venv/bin/python -c "import rembg" >/dev/null 2>&1 &
  kernels=$!
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  wait "$kernels" || true
  .venv/bin/python -c "import rembg"
  rm -f .venv/.installed-* && touch "$stamp"
fi
