#!/usr/bin/env bash
# Register prefect.yaml's deployments on the `fedshare` process pool: what the compose stack's
# prefect-deploy service runs, and what a person runs against their own Prefect server.
#   FEDSHARE_HOME=/srv/fedshare bash scripts/deploy.sh     # then: prefect worker start --pool fedshare
# FEDSHARE_HOME is the data folder (state/, inbox/, runs/); prefect.yaml fills the deployments'
# paths from it.  Unset, `prefect deploy` would store the literal text '{{ $FEDSHARE_HOME }}/state',
# so this refuses to deploy.  FEDSHARE_APP_DIR (the checkout with flows/) may stay unset: the worker
# fills it when a run starts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FEDSHARE_HOME:-}" ]; then
  echo "error: FEDSHARE_HOME is not set; it names the folder that holds state/, inbox/ and runs/ for the" >&2
  echo "deployments (e.g. FEDSHARE_HOME=/srv/fedshare bash scripts/deploy.sh)" >&2
  exit 2
fi
case "$FEDSHARE_HOME" in
  /*) ;;
  *) echo "error: FEDSHARE_HOME must be an absolute path (the worker runs flows from another folder): $FEDSHARE_HOME" >&2; exit 2 ;;
esac
prefect work-pool create fedshare --type process --overwrite
prefect deploy --all --no-prompt
