#!/usr/bin/env bash
for i in 1 2 3 4 5; do
  for ds in "ml-100k 20" "ml-1m 8"; do
    for eng in /work/main /tmp/old-engine; do
      echo -n "$(basename $eng) "; (cd $eng && PYTHONPATH=. /work/main/.venv/bin/python bench/results/speed_closed_form_2026-12-01/round_time.py (copied to /tmp/fs_time.py when run) $ds 2>&1 | grep median)
    done
  done
done
