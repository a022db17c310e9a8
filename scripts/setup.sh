#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment from the pinned requirements.
#   VENV=path  where to put it (default .venv)
# Uses pip (not uv/poetry) so that torch comes as the CPU wheel where the machine provides one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$VENV/.fedshare-installed" ] || [ requirements.txt -nt "$VENV/.fedshare-installed" ] || [ constraints.txt -nt "$VENV/.fedshare-installed" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  touch "$VENV/.fedshare-installed"
fi
# A folder laid out like ../shared/data is used when present; otherwise fedshare downloads.
if [ -n "${FEDSHARE_DATA_DIR:-}" ]; then
  # data/ is what data.dvc tracks and what `dvc repro` reads: fill it now so that the pipeline runs.
  "$VENV/bin/fedshare" fetch --dataset ml-100k --to data
elif [ -d ../shared/data ]; then
  echo "hint: export FEDSHARE_DATA_DIR=$(cd ../shared/data && pwd)" >&2
fi
