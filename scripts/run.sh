#!/usr/bin/env bash
# The main job on embedded defaults (no server to start): fetch the data into the DVC-tracked data/,
# then one Prefect run that trains, serves and processes unsharing requests (flows/pipeline.py).
#   MLflow: ./mlflow.db (browse: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db)
#   Prefect: a temporary local API for the run     DVC: masks versioned, pushed to .dvc_remote
# Extra arguments go to the flow, e.g.  bash scripts/run.sh --set sharing.policy=all
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
fedshare fetch --dataset ml-100k --to data
python -m flows.pipeline "$@"
