#!/usr/bin/env bash
# The GPU measurements of docs/results.md (raw output: bench/results/gpu/).  Needs only python3 with
# torch, numpy, pandas, pyyaml, pyarrow and tqdm (no Prefect, MLflow, DVC or GE).  MovieLens is read
# from $FEDSHARE_DATA_DIR (default ./data, a git-ignored copy of ../shared/data for a machine that
# does not see ../shared):
#   mkdir -p data && cp -r ../shared/data/ml-100k ../shared/data/ml-1m data/
#
#   bash bench/gpu.sh measure OUT   # alone on the GPU: engine speed, vectorized vs per-client loop vs
#                                   # central (table 4b); one full ML-1M training, timed (fedshare, mixed,
#                                   # seed 0); seconds per round and peak memory up to 1M users (table 5b)
#   bash bench/gpu.sh batch OUT     # ML-1M accuracy, 3 seeds x local/mixed/all/central (table 1b), and
#                                   # ML-1M unlearning, 3 seeds (table 3c): as parallel processes
#   bash bench/gpu.sh cap2000 OUT   # ML-1M local/mixed/central, 3 seeds, with a 2000-round cap (table 1b)
#   bash bench/gpu.sh rest OUT      # the ML-1M sharing sweep (table 1b), unlearning at 5%, 20% and partial
#                                   # and ten sequential events (table 3d), on the GPU; the tables are
#                                   # packed into OUT/rest.tgz
#
# Each step has its own time limit and logs to OUT/<phase>.log; a failed step does not stop the others.
# A dry run on a CPU: DEVICE=cpu DATASET=ml-100k SET="federated.rounds=4 eval.every=2" SPEED_DATASETS=ml-100k
# SPEED_ROUNDS=2 SCALING_USERS=2000 PYTHON=.venv/bin/python bash bench/gpu.sh measure /tmp/gpu-dry
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: bash bench/gpu.sh measure|batch|cap2000|rest OUT}
out=${2:?usage: bash bench/gpu.sh measure|batch|cap2000|rest OUT}
mkdir -p "$out"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATASET=${DATASET:-ml-1m}
STEM=$(basename "$DATASET"); STEM=${STEM%.*}   # run folders are named <stem>-<method>-<sharing>-seed<N>
SEEDS=${SEEDS:-0 1 2}
DEADLINE=${DEADLINE:-420}   # batch: seconds for the parallel runs before what finished is collected
RUNS=$(realpath -m "${RUNS:-bench/out/gpu-runs}")
SPEED_DATASETS=${SPEED_DATASETS:-ml-100k ml-1m}
SPEED_ROUNDS=${SPEED_ROUNDS:-20}
SCALING_USERS=${SCALING_USERS:-10000 100000 1000000}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FEDSHARE_DATA_DIR=${FEDSHARE_DATA_DIR:-$PWD/data}
sets=()
for kv in ${SET:-}; do sets+=(--set "$kv"); done
log=$out/$phase.log

step() {  # step LIMIT_SECONDS NAME COMMAND...: run, time and log one step
  local limit=$1 name=$2; shift 2
  echo "== $name: $*" >>"$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s" >>"$log"
}

measure() {
  { nvidia-smi || true; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } >"$out/machine.txt" 2>&1
  step 50 smoke-unlearning $PY bench/unlearning.py --quick --device "$DEVICE" --fru-alpha 0.5
  step 120 speed $PY bench/speed.py --device "$DEVICE" --datasets $SPEED_DATASETS --rounds "$SPEED_ROUNDS" \
      --loop-datasets ml-100k --loop-rounds 1 --out "$out/speed_$DEVICE.json" --markdown "$out/speed_$DEVICE.md"
  step 200 ml1m-train $PY bench/accuracy.py --dataset "$DATASET" --seeds 0 --runs-of fedshare:mixed --device "$DEVICE" \
      --runs "$RUNS" --json "$out/train_${STEM}_seed0.json" "${sets[@]}"
  step 210 scaling $PY bench/scaling.py --device "$DEVICE" --users $SCALING_USERS --timeout 200 \
      --out "$out/scaling_$DEVICE.json" --markdown "$out/scaling_$DEVICE.md"
}

accuracy_run() {  # accuracy_run METHOD:SHARING SEED
  $PY bench/accuracy.py --dataset "$DATASET" --seeds "$2" --runs-of "$1" --device "$DEVICE" --runs "$RUNS" "${sets[@]}"
}

link_trained() {  # link_trained SEED: bench/unlearning.py finds table 1b's mixed run under its own name
  mkdir -p "$RUNS/unlearning"
  ln -sfn "$RUNS/$STEM-fedshare-mixed-seed$1" "$RUNS/unlearning/$STEM-mixed-seed$1"
}

unlearning_chain() {  # unlearning_chain SEED: the mixed run of table 1b is the trained model of table 3
  local seed=$1
  accuracy_run fedshare:mixed "$seed" || return
  link_trained "$seed"
  $PY bench/unlearning.py --dataset "$DATASET" --seeds "$seed" --fru-alpha 0 --methods contrastive none finetune retrain \
      --device "$DEVICE" --runs "$RUNS/unlearning" "${sets[@]}"
}

any_alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }

wait_for() {  # wait_for PID...: until all have ended or DEADLINE seconds have passed; then stop the rest
  local start=$SECONDS pid
  while ((SECONDS - start < DEADLINE)) && any_alive "$@"; do sleep 5; done
  # Stop our own children by parent PID: a pattern (pkill -f) would also match the shell that runs
  # this script and end it before its collect step.
  for pid in "$@"; do pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; done
  echo "parallel part: $((SECONDS - start)) s" >>"$log"
}

batch() {
  export OMP_NUM_THREADS=1  # a dozen processes share the CPUs
  local pids=() seed spec
  for seed in $SEEDS; do
    (unlearning_chain "$seed" >"$out/chain-$seed.txt" 2>&1) & pids+=($!)
    for spec in local:none fedshare:all central:all; do
      (accuracy_run "$spec" "$seed" >>"$out/runs-$seed.txt" 2>&1) & pids+=($!)
    done
  done
  wait_for "${pids[@]}"
  collect
  # what finished: the metrics of every run (the tables above are built from them)
  tar czf "$out/runs.tgz" -C "$RUNS" --dereference $(cd "$RUNS" && ls -d */metrics.json */history.json */config.yaml \
      unlearning/*/unlearning.json 2>/dev/null) 2>>"$log"
  cat "$out"/chain-*.txt "$out"/runs-*.txt >>"$log" 2>/dev/null; rm -f "$out"/chain-*.txt "$out"/runs-*.txt
}

collect() {  # the two tables over the seeds whose runs all finished (runs are reused, none is started)
  local seed acc_seeds="" unl_seeds=""
  for seed in $SEEDS; do
    ls "$RUNS/$STEM"-{local-none,fedshare-mixed,fedshare-all,central-all}-seed$seed/metrics.json >/dev/null 2>&1 \
      && acc_seeds+=" $seed"
    ls "$RUNS/unlearning/$STEM-mixed-seed$seed"-all0.1-{contrastive,none,finetune,retrain}/unlearning.json >/dev/null 2>&1 \
      && unl_seeds+=" $seed"
  done
  echo "complete seeds: accuracy [$acc_seeds ], unlearning [$unl_seeds ]" >>"$log"
  [ -n "$acc_seeds" ] && step 120 collect-accuracy $PY bench/accuracy.py --dataset "$DATASET" --seeds $acc_seeds \
      --runs-of local:none fedshare:mixed fedshare:all central:all --device "$DEVICE" --runs "$RUNS" "${sets[@]}" \
      --json "$out/accuracy_${STEM}_$DEVICE.json" --markdown "$out/accuracy_${STEM}_$DEVICE.md"
  [ -n "$unl_seeds" ] && step 60 collect-unlearning $PY bench/unlearning.py --dataset "$DATASET" --seeds $unl_seeds \
      --fru-alpha 0 --methods contrastive none finetune retrain --device "$DEVICE" --runs "$RUNS/unlearning" "${sets[@]}" \
      --json "$out/unlearning_${STEM}_$DEVICE.json" --markdown "$out/unlearning_${STEM}_$DEVICE.md"
  return 0
}

cap2000() {  # ML-1M needs more than the default 800 rounds to reach its ceiling (docs/results.md, table 1b)
  export OMP_NUM_THREADS=1
  local pids=() seed spec ok=""
  RUNS=$RUNS-cap2000; sets=(--set federated.rounds=2000 "${sets[@]}")  # SET still wins (dry runs)
  for seed in $SEEDS; do
    for spec in local:none fedshare:mixed central:all; do
      accuracy_run "$spec" "$seed" >>"$out/cap2000-runs.txt" 2>&1 & pids+=($!)
    done
  done
  wait_for "${pids[@]}"
  for seed in $SEEDS; do
    ls "$RUNS/$STEM"-{local-none,fedshare-mixed,central-all}-seed$seed/metrics.json >/dev/null 2>&1 && ok+=" $seed"
  done
  [ -n "$ok" ] && step 120 collect-cap2000 $PY bench/accuracy.py --dataset "$DATASET" --seeds $ok \
      --runs-of local:none fedshare:mixed central:all --device "$DEVICE" --runs "$RUNS" "${sets[@]}" \
      --json "$out/accuracy_${STEM}_cap2000_$DEVICE.json" --markdown "$out/accuracy_${STEM}_cap2000_$DEVICE.md"
  cat "$out/cap2000-runs.txt" >>"$log"; rm -f "$out/cap2000-runs.txt"
}

unlearning_sizes() {  # unlearning_sizes SEED: table 3a's request sizes on the seed's mixed run
  local seed=$1 spec
  accuracy_run fedshare:mixed "$seed" || return
  link_trained "$seed"
  for spec in "0.05 all" "0.2 all" "0.1 partial"; do set -- $spec
    $PY bench/unlearning.py --dataset "$DATASET" --seeds "$seed" --fraction "$1" --scope "$2" --fru-alpha 0 \
        --methods contrastive none finetune retrain --device "$DEVICE" --runs "$RUNS/unlearning" "${sets[@]}"
  done
  # ten events one after another
  $PY bench/unlearning.py --dataset "$DATASET" --seeds "$seed" --sequential 10 --event-fraction 0.02 --fru-alpha 0 \
      --device "$DEVICE" --runs "$RUNS/unlearning" "${sets[@]}"
}

rest() {
  export OMP_NUM_THREADS=1
  local pids=() seed spec sweep_seeds="" tables=$out/tables size_seeds
  for seed in $SEEDS; do
    (unlearning_sizes "$seed" >"$out/sizes-$seed.txt" 2>&1) & pids+=($!)
    for spec in fedshare:0.25 fedshare:0.5 fedshare:0.75 fedshare:uniform; do
      (accuracy_run "$spec" "$seed" >>"$out/sweep-$seed.txt" 2>&1) & pids+=($!)
    done
  done
  wait_for "${pids[@]}"
  mkdir -p "$tables"
  for seed in $SEEDS; do
    ls "$RUNS/$STEM"-fedshare-{0.25,0.5,0.75,uniform,mixed}-seed$seed/metrics.json >/dev/null 2>&1 && sweep_seeds+=" $seed"
  done
  [ -n "$sweep_seeds" ] && step 120 collect-sweep $PY bench/accuracy.py --dataset "$DATASET" --seeds $sweep_seeds \
      --runs-of fedshare:0.25 fedshare:0.5 fedshare:0.75 fedshare:mixed fedshare:uniform --device "$DEVICE" \
      --runs "$RUNS" "${sets[@]}" --json "$tables/sweep_${STEM}_$DEVICE.json" --markdown "$tables/sweep_${STEM}_$DEVICE.md"
  for spec in "0.05 all" "0.2 all" "0.1 partial"; do set -- $spec
    size_seeds=""
    for seed in $SEEDS; do
      ls "$RUNS/unlearning/$STEM-mixed-seed$seed-$2$1"-{contrastive,none,finetune,retrain}/unlearning.json \
          >/dev/null 2>&1 && size_seeds+=" $seed"
    done
    [ -n "$size_seeds" ] && step 60 "collect-$2$1" $PY bench/unlearning.py --dataset "$DATASET" --seeds $size_seeds \
        --fraction "$1" --scope "$2" --fru-alpha 0 --methods contrastive none finetune retrain --device "$DEVICE" \
        --runs "$RUNS/unlearning" "${sets[@]}" \
        --json "$tables/unlearning_${STEM}_$2$1_$DEVICE.json" --markdown "$tables/unlearning_${STEM}_$2$1_$DEVICE.md"
  done
  local sequential_seeds=""
  for seed in $SEEDS; do
    [ -f "$RUNS/unlearning/$STEM-mixed-seed$seed-seq10/unlearning.json" ] && sequential_seeds+=" $seed"
  done
  [ -n "$sequential_seeds" ] && step 60 collect-sequential \
      $PY bench/unlearning.py --dataset "$DATASET" --seeds $sequential_seeds --sequential 10 --event-fraction 0.02 --fru-alpha 0 \
      --device "$DEVICE" --runs "$RUNS/unlearning" "${sets[@]}" --json "$tables/sequential_${STEM}_$DEVICE.json" \
      --markdown "$tables/sequential_${STEM}_$DEVICE.md" --plot "$tables/sequential_${STEM}_$DEVICE.png"
  cat "$out"/sizes-*.txt "$out"/sweep-*.txt >>"$log" 2>/dev/null; rm -f "$out"/sizes-*.txt "$out"/sweep-*.txt
  tar czf "$out/rest.tgz" -C "$out" tables && rm -rf "$tables"
}

case $phase in
  measure) measure ;;
  batch) batch ;;
  cap2000) cap2000 ;;
  rest) rest ;;
  *) echo "unknown phase $phase (measure, batch, cap2000 or rest)" >&2; exit 2 ;;
esac
