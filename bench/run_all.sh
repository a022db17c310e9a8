#!/usr/bin/env bash
# Regenerate every table of docs/results.md (CPU; hours on 2 cores).  One line per table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD FEDSHARE_DATA_DIR=${FEDSHARE_DATA_DIR:-$(cd .. && pwd)/shared/data}
# 1. accuracy vs sharing (ML-100K; ML-1M with --dataset ml-1m)
$PY bench/accuracy.py --dataset ml-100k --seeds 0 1 2 --runs-of local:none fedshare:0 fedshare:0.25 fedshare:0.5 fedshare:0.75 fedshare:mixed fedshare:uniform fedshare:all central:all \
    --runs bench/out/runs-p30 --json bench/results/accuracy_ml-100k.json --markdown bench/results/accuracy_ml-100k.md --plot docs/accuracy_vs_sharing_ml-100k.png
$PY bench/accuracy.py --dataset ml-1m --seeds 0 1 2 --runs-of central:all \
    --json bench/results/accuracy_ml-1m-central.json --markdown bench/results/accuracy_ml-1m-central.md
$PY bench/accuracy.py --dataset ml-1m --seeds 0 1 2 --runs-of local:none fedshare:0 fedshare:0.25 fedshare:0.5 fedshare:0.75 fedshare:mixed fedshare:uniform fedshare:all --runs bench/out/cpu-runs \
    --merge bench/results/accuracy_ml-1m-central.json --json bench/results/sweep_ml-1m_cpu.json --markdown bench/results/sweep_ml-1m_cpu.md --plot docs/accuracy_vs_sharing_ml-1m.png
# 2. ablations at mixed
$PY bench/ablations.py --dataset ml-100k --seeds 0 1 2 --runs bench/out/ablations-p30 --json bench/results/ablations_ml-100k.json --markdown bench/results/ablations_ml-100k.md
# 3. unlearning: five methods, other request sizes, ML-1M (FRU's replay at alpha 0.1: a 32 GB log per seed), ten sequential events
$PY bench/unlearning.py --dataset ml-100k --seeds 0 1 2 --set model.global_weight=one --set eval.patience=10 \
    --json bench/results/unlearning_ml-100k.json --markdown bench/results/unlearning_ml-100k.md
$PY bench/unlearning.py --dataset ml-100k --seeds 0 1 2 --fru-alpha 0 --methods contrastive none finetune retrain --runs bench/out/unlearn-p30 \
    --json bench/results/unlearning_ml-100k_p30.json --markdown bench/results/unlearning_ml-100k_p30.md
for spec in "0.05 all" "0.2 all" "0.1 partial"; do set -- $spec
  $PY bench/unlearning.py --dataset ml-100k --seeds 0 1 2 --fraction $1 --scope $2 --fru-alpha 0 \
      --methods contrastive none finetune retrain --set model.global_weight=one --set eval.patience=10 \
      --json bench/results/unlearning_ml-100k_$2$1.json --markdown bench/results/unlearning_ml-100k_$2$1.md
done
$PY bench/unlearning.py --dataset ml-1m --seeds 0 --fru-log-rounds 20 \
    --json bench/results/fru_log_ml-1m.json --markdown bench/results/fru_log_ml-1m.md
$PY bench/unlearning.py --dataset ml-1m --seeds 0 1 2 --fru-alpha 0.1 --runs bench/out/fru-1m \
    --json bench/results/unlearning_ml-1m_fru.json --markdown bench/results/unlearning_ml-1m_fru.md
for seed in 0 1 2; do  # 3d starts from 1b's mixed runs (same config), copied so that they are not trained again
  [ -e bench/out/cpu-runs/unlearning/ml-1m-mixed-seed$seed ] || { mkdir -p bench/out/cpu-runs/unlearning; \
    cp -r bench/out/cpu-runs/ml-1m-fedshare-mixed-seed$seed bench/out/cpu-runs/unlearning/ml-1m-mixed-seed$seed; }
done
for spec in "0.05 all" "0.2 all" "0.1 partial"; do set -- $spec  # 3d: ML-1M, 3 seeds
  $PY bench/unlearning.py --dataset ml-1m --seeds 0 1 2 --fraction $1 --scope $2 --fru-alpha 0 \
      --methods contrastive none finetune retrain --runs bench/out/cpu-runs/unlearning \
      --json bench/results/unlearning_ml-1m_$2$1.json --markdown bench/results/unlearning_ml-1m_$2$1.md
done
$PY bench/unlearning.py --dataset ml-1m --seeds 0 1 2 --sequential 10 --event-fraction 0.02 --fru-alpha 0 --retrain-last --runs bench/out/cpu-runs/unlearning \
    --json bench/results/unlearning_sequential_ml-1m.json --markdown bench/results/unlearning_sequential_ml-1m.md --plot docs/unlearning_sequential_ml-1m.png
$PY bench/unlearning.py --dataset ml-100k --seeds 0 1 2 --sequential 10 --event-fraction 0.02 --fru-alpha 0 --retrain-last --runs bench/out/unlearn-p30 \
    --json bench/results/unlearning_sequential_ml-100k.json --markdown bench/results/unlearning_sequential_ml-100k.md --plot docs/unlearning_sequential_ml-100k.png
# 4. engine speed
$PY bench/speed.py --datasets ml-100k ml-1m --rounds 5 --loop-rounds 1 --out bench/results/speed_cpu.json --markdown bench/results/speed_cpu.md
# 4. a full default ML-1M training on the CPU, timed (bench/results/ml-1m-cpu-train/)
/usr/bin/time -v "$(dirname "$PY")/fedshare" train --dataset ml-1m --method fedshare --sharing mixed --seed 0 --set tracking.enabled=false --quiet \
    --out bench/out/ml-1m-cpu-train > bench/results/ml-1m-cpu-train/time.txt 2>&1
cp bench/out/ml-1m-cpu-train/metrics.json bench/out/ml-1m-cpu-train/config.yaml bench/results/ml-1m-cpu-train/
# 5. scaling
$PY bench/scaling.py --users 10000 100000 1000000 1000000@4 --threads 1 --out bench/results/scaling_cpu.json --markdown bench/results/scaling_cpu.md
# GPU tables (1b and 3c on ML-1M, 4b, 5b): only where torch sees a CUDA device; raw output to bench/results/gpu/
if $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  for phase in measure batch cap2000; do PYTHON=$PY bash bench/gpu.sh $phase bench/results/gpu; done
fi
