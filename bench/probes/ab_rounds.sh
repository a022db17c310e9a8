#!/usr/bin/env bash
# Side-by-side round timings of this checkout against an older one, as in docs/results.md table 4:
#   git worktree add /tmp/old-engine 93781dc
#   FEDSHARE_DATA_DIR=../shared/data bash bench/results/speed_closed_form_2026-12-01/ab_rounds.sh /tmp/old-engine > ab_rounds.log
# Five alternating pairs of processes; each times 20 (ML-100K) or 8 (ML-1M) fedshare rounds after a
# warm-up (round_time.py, which imports fedshare from the folder it runs in) and prints the median.
OLD=${1:?path to the older checkout}
NEW=$(pwd)
TIMER=$NEW/bench/results/speed_closed_form_2026-12-01/round_time.py
for i in 1 2 3 4 5; do
  for ds in "ml-100k 20" "ml-1m 8"; do
    for eng in "$NEW" "$OLD"; do
      echo -n "$(basename "$eng") "; (cd "$eng" && PYTHONPATH=. "$NEW/.venv/bin/python" "$TIMER" $ds 2>&1 | grep median)
    done
  done
done
