"""The accuracy and ablation benchmarks' quick modes run end to end, so the scripts cannot rot."""

import json
import subprocess
import sys

from conftest import REPO


def bench(script, tmp_path, *args):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / script),
            "--quick",
            "--json",
            str(tmp_path / "r.json"),
            "--markdown",
            str(tmp_path / "r.md"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads((tmp_path / "r.json").read_text()), (tmp_path / "r.md").read_text()


def test_quick_accuracy_table_and_plot(tmp_path):
    rows, table = bench("accuracy.py", tmp_path, "--plot", str(tmp_path / "p.png"))
    assert [(r["method"], r["sharing"]) for r in rows] == [
        ("local", "none"),
        ("fedshare", "mixed"),
        ("fedshare", "all"),
        ("central", "all"),
    ]
    assert all(0 <= r["recall@20"] <= 1 for r in rows) and (tmp_path / "p.png").stat().st_size > 0
    assert "| fedshare | mixed |" in table and "Command: `python bench/accuracy.py --quick" in table
    assert "private users of fedshare@mixed, same users under local (1 seeds)" in table


def test_quick_ablation_table(tmp_path):
    rows, table = bench("ablations.py", tmp_path)
    labels = [r["label"] for r in rows]
    assert len(labels) == len(set(labels)) >= 5
    assert "model.use_server_graph=false" in table and "model.global_weight=one" in table
