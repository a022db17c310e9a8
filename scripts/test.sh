#!/usr/bin/env bash
# The test command of the README: the whole suite, offline, on CPU.
# Two pytest-xdist workers, each taking one test file at a time (--dist loadfile: a file's fixtures,
# such as a trained model, are built once).  The slow tests mostly wait on subprocesses and servers,
# so two workers cut the suite from about 12 to about 8.5 minutes on 2 cores.
#   TEST_WORKERS=0 bash scripts/test.sh     # one process, no xdist (e.g. to debug with -s or --pdb)
#   bash scripts/test.sh tests/test_engine.py -k loop    # any pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export FEDSHARE_DATA_DIR=${FEDSHARE_DATA_DIR:-$(cd .. && pwd)/shared/data}
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKERS=${TEST_WORKERS:-2}
parallel=()
if [ "$WORKERS" != 0 ]; then parallel=(-n "$WORKERS" --dist loadfile); fi
exec "$VENV/bin/python" -m pytest -q "${parallel[@]}" "$@"
