"""bench/share.py (sharing more: continued training against a retrain) runs end to end on small data."""

import json
import subprocess
import sys

from conftest import REPO, synthetic_raw


def test_share_benchmark_compares_continued_training_with_a_retrain(tmp_path):
    data = tmp_path / "inter.csv"
    synthetic_raw(n_users=40, n_items=60, per_user=12).to_csv(data, index=False)
    quick = ["federated.rounds=4", "eval.every=2", "model.dim=8", "requests.share_rounds=2"]
    args = [sys.executable, str(REPO / "bench" / "share.py"), "--dataset", str(data), "--fraction", "0.5"]
    args += ["--runs", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]
    args += [a for o in quick for a in ("--set", o)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    [result] = json.loads((tmp_path / "r.json").read_text())
    assert result["requests"] >= 1 and result["new_shared_pairs"] > 0
    for way in ("before", "continue", "retrain"):
        assert 0 <= result[way]["recall@20"] <= 1 and 0 <= result[way]["movers/recall@20"] <= 1
    assert result["continue"]["rounds"] == 2 and result["retrain"]["seconds"] > 0
    table = (tmp_path / "r.md").read_text()
    assert "| continue (a share request) |" in table and "Command: `python bench/share.py" in table
    # the retrain trained on exactly the masks the share produced
    import pandas as pd

    run = next((tmp_path / "runs").iterdir())
    continued = pd.read_parquet(run / "continued" / "masks.parquet").sort_values(["user", "item"])
    retrained = pd.read_parquet(run / "retrained" / "masks.parquet").sort_values(["user", "item"])
    assert continued["shared"].tolist() == retrained["shared"].tolist()
