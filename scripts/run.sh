#!/usr/bin/env bash
# Set up and start the service on this machine: `scripts/run.sh [CONFIG]`.
# Without CONFIG: serve_config.yaml where nvidia-smi sees a GPU, else configs/cpu.yaml.
# U2-Net weights are fetched once into $U2NET_HOME (default ~/.u2net); RMBG-2.0
# comes from BG_REMOVAL_RMBG_PATH, or the hub with HF_TOKEN, else U2-Net serves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -ge 1 ]; then
  CONFIG=$1
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  CONFIG=serve_config.yaml
else
  CONFIG=configs/cpu.yaml
fi
export U2NET_HOME=${U2NET_HOME:-$HOME/.u2net}
.venv/bin/python scripts/fetch_models.py --model "${BG_REMOVAL_U2NET_MODEL:-u2net}" --home "$U2NET_HOME"
echo "starting the service with $CONFIG on http://127.0.0.1:8000 (Ctrl-C stops it)" >&2
exec .venv/bin/serve run "$CONFIG"
