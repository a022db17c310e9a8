"""bench/gpu.sh, which runs the GPU measurements of docs/results.md, runs end to end on a CPU with tiny settings."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from unlearning import quick_dataset  # noqa: E402

TINY = (
    "federated.rounds=6 eval.every=2 model.dim=8 unlearning.rounds=2 unlearning.snapshot_rounds=[0,2] "
    "tracking.enabled=false"
)


def run_phase(phase: str, out: Path, runs: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "DATASET": quick_dataset(),
        "SEEDS": "0",
        "SET": TINY,
        "PYTHON": sys.executable,
        "RUNS": str(runs),
        "DEADLINE": "300",
    }
    return subprocess.run(
        ["bash", "bench/gpu.sh", phase, str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_batch_phase_writes_both_tables_and_the_run_metrics(tmp_path):
    done = run_phase("batch", tmp_path / "out", tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    log = (out / "batch.log").read_text()
    assert "complete seeds: accuracy [ 0 ], unlearning [ 0 ]" in log, log
    accuracy = (out / "accuracy_quick_cpu.md").read_text()
    for row in ("| local | none |", "| fedshare | mixed |", "| fedshare | all |", "| central | all |"):
        assert row in accuracy
    unlearning = (out / "unlearning_quick_cpu.md").read_text()
    for method in ("contrastive", "none", "finetune", "retrain"):
        assert f"| {method} |" in unlearning
    # the unlearning table starts from the accuracy table's mixed run (a link), not from a second training
    assert (tmp_path / "runs" / "unlearning" / "quick-mixed-seed0").is_symlink()
    with tarfile.open(out / "runs.tgz") as archive:
        names = archive.getnames()
    assert "quick-central-all-seed0/metrics.json" in names
    assert "unlearning/quick-mixed-seed0-all0.1-contrastive/unlearning.json" in names


def test_unknown_phase_is_refused(tmp_path):
    done = run_phase("nope", tmp_path / "out", tmp_path / "runs")
    assert done.returncode == 2 and "unknown phase nope" in done.stderr
