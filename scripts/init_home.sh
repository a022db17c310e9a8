#!/usr/bin/env bash
# Prepare FEDSHARE_HOME (the data volume: state/, inbox/, runs/) and then run the given command:
#   bash scripts/init_home.sh prefect worker start --pool fedshare      # what the compose services run
# FEDSHARE_HOME becomes a DVC repository (no git) with a default remote, so that every served version
# of the consent masks is versioned inside the stack as it is in a checkout (fedshare/mlops/versioning.py;
# outside a DVC repository versioning is skipped with a warning).  Idempotent: an existing .dvc/ is kept.
#   FEDSHARE_DVC_REMOTE  where the versions are pushed (default: $FEDSHARE_HOME/dvc-remote, on the volume)
set -euo pipefail
: "${FEDSHARE_HOME:?FEDSHARE_HOME must name the data folder (e.g. /srv/fedshare)}"
mkdir -p "$FEDSHARE_HOME/state" "$FEDSHARE_HOME/inbox" "$FEDSHARE_HOME/runs"
if [ ! -d "$FEDSHARE_HOME/.dvc" ]; then
  (
    cd "$FEDSHARE_HOME"
    dvc init --no-scm --quiet
    dvc config core.analytics false
    dvc remote add --default home "${FEDSHARE_DVC_REMOTE:-$FEDSHARE_HOME/dvc-remote}"
  )
  echo "init_home: $FEDSHARE_HOME is a DVC repository (remote ${FEDSHARE_DVC_REMOTE:-$FEDSHARE_HOME/dvc-remote})" >&2
fi
if [ "$#" -gt 0 ]; then
  exec "$@"
fi
