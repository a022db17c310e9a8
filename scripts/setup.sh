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
# data/ is what data.dvc tracks and what `dvc repro` reads: fill it now, from a folder laid out like
# ../shared/data when there is one (FEDSHARE_DATA_DIR, else ../shared/data itself), so that `dvc repro`
# works in a fresh clone.  Without one, fetching would download: say what to run instead of doing it.
if [ -z "${FEDSHARE_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  FEDSHARE_DATA_DIR=$(cd ../shared/data && pwd)
  echo "hint: export FEDSHARE_DATA_DIR=$FEDSHARE_DATA_DIR (read instead of downloading)" >&2
fi
if [ -n "${FEDSHARE_DATA_DIR:-}" ]; then
  FEDSHARE_DATA_DIR="$FEDSHARE_DATA_DIR" "$VENV/bin/fedshare" fetch --dataset ml-100k --to data
elif [ ! -f data/ml-100k/u.data ]; then
  echo "note: before \`dvc repro\`, fill data/ (downloads ML-100K from GroupLens, checksum checked):" >&2
  echo "  .venv/bin/fedshare fetch --dataset ml-100k --to data" >&2
fi
