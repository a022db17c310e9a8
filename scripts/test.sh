#!/usr/bin/env bash
# The test command of the README: the whole suite, offline, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export FEDSHARE_DATA_DIR=${FEDSHARE_DATA_DIR:-$(cd .. && pwd)/shared/data}
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec "$VENV/bin/python" -m pytest -q "$@"
