#!/usr/bin/env bash
# Probe: seconds per fedshare round of this checkout against an older one, in alternating pairs of processes.
#   git worktree add /tmp/old-engine 93781dc
#   FEDSHARE_DATA_DIR=../shared/data bash bench/probes/ab_rounds.sh /tmp/old-engine > ab_rounds.log
# Five pairs per dataset; each process times 20 (ML-100K) or 8 (ML-1M) rounds after a warm-up with
# bench/probes/round_time.py (which imports fedshare from the folder it runs in) and prints the median.
# Run from the repository root.  Output of 2026-12-01 (edb8438 against 93781dc):
# bench/results/speed_closed_form_2026-12-01/ab_rounds.log.
set -u
OLD=${1:?path to the older checkout}
NEW=$(pwd)
TIMER=$NEW/bench/probes/round_time.py
for i in 1 2 3 4 5; do
  for ds in "ml-100k 20" "ml-1m 8"; do
    for eng in "$NEW" "$OLD"; do
      echo -n "$(basename "$eng") "; (cd "$eng" && PYTHONPATH=. "$NEW/.venv/bin/python" "$TIMER" $ds 2>&1 | grep median)
    done
  done
done
