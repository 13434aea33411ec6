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
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  # rembg imports pymatting, whose numba kernels compile at its first import (about 50 s of
  # a 2-core machine) into its own __pycache__: once here, as pip compiles bytecode, not in
  # the first test or `from rembg import remove` that imports it
  .venv/bin/python -c "import rembg"
  rm -f .venv/.installed-* && touch "$stamp"
fi
