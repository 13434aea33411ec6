#!/usr/bin/env bash
# Set up and start the service on this machine: `scripts/run.sh [CONFIG]`.
# Without CONFIG: serve_config.yaml where nvidia-smi sees a GPU, else configs/cpu.yaml.
# Settings: BG_REMOVAL_* variables, or a .env file in the directory you start it from
# (or the file BG_REMOVAL_ENV_FILE names); the variables win over the file.
# U2-Net weights are fetched once into U2NET_HOME (default ~/.u2net); RMBG-2.0 comes
# from BG_REMOVAL_RMBG_PATH, or the hub with HF_TOKEN, else U2-Net serves.
set -euo pipefail
start_dir=$PWD
cd "$(dirname "$0")/.."
# Serve builds the app in a worker process of its own: name the start directory's .env
# explicitly (empty: read none), so the file that counts is the one next to the user.
if [ -z "${BG_REMOVAL_ENV_FILE+set}" ]; then
  if [ -f "$start_dir/.env" ]; then
    export BG_REMOVAL_ENV_FILE="$start_dir/.env"
  else
    export BG_REMOVAL_ENV_FILE=""
  fi
fi
scripts/setup.sh
if [ $# -ge 1 ]; then
  CONFIG=$1
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  CONFIG=serve_config.yaml
else
  CONFIG=configs/cpu.yaml
fi
# The U2-Net file the settings name (BG_REMOVAL_U2NET_MODEL, U2NET_HOME: also from .env).
.venv/bin/bgremove fetch --model u2net
echo "starting the service with $CONFIG on http://127.0.0.1:8000 (Ctrl-C stops it)" >&2
echo "settings file: ${BG_REMOVAL_ENV_FILE:-none}" >&2
exec .venv/bin/serve run "$CONFIG"
