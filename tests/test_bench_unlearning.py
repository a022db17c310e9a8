"""The unlearning benchmark's quick mode runs end to end, so the script cannot rot."""

import argparse
import json
import subprocess
import sys

import pytest
from conftest import REPO


def test_quick_unlearning_table_has_every_method(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "unlearning.py"),
            "--quick",
            "--json",
            str(tmp_path / "u.json"),
            "--markdown",
            str(tmp_path / "u.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "u.json").read_text())
    assert [r["method"] for r in rows] == ["contrastive", "finetune", "none", "retrain", "fru"]
    by = {r["method"]: r for r in rows}
    assert by["fru"]["storage_bytes"] > by["contrastive"]["storage_bytes"] > 0 == by["retrain"]["storage_bytes"]
    table = (tmp_path / "u.md").read_text()
    assert (
        "| contrastive |" in table and "bytes ratio to fru" in table and "Command: `python bench/unlearning.py" in table
    )


def test_a_merged_results_file_adds_its_other_seeds_to_the_table(tmp_path):
    def quick(*extra):
        args = ["--quick", "--methods", "contrastive", "retrain", "--fru-alpha", "0", *extra]
        script = str(REPO / "bench" / "unlearning.py")
        out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    quick("--json", str(tmp_path / "first.json"))
    earlier = [{**row, "seed": 7} for row in json.loads((tmp_path / "first.json").read_text())]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    printed = quick("--merge", str(tmp_path / "earlier.json"), "--json", str(tmp_path / "u.json"))
    rows = json.loads((tmp_path / "u.json").read_text())
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("contrastive", 0),
        ("retrain", 0),
        ("contrastive", 7),
        ("retrain", 7),
    ]
    assert "seeds [0, 7]" in printed


def test_quick_sequential_events_and_the_retrain_reference(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "unlearning.py"),
            "--quick",
            "--sequential",
            "3",
            "--event-fraction",
            "0.1",
            "--retrain-last",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "s.json"),
            "--markdown",
            str(tmp_path / "s.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [(r["method"], r["event"]) for r in rows] == [
        ("trained", 0),
        ("contrastive", 1),
        ("contrastive", 2),
        ("contrastive", 3),
        ("retrain", 3),
    ]
    assert all(r["storage_bytes"] > 0 for r in rows if r["method"] == "contrastive")
    # the reference answers event 3's requests again, from event 2's state: the same requests
    third = (tmp_path / "runs" / "quick-mixed-seed0-seq3" / "applied.csv").read_text()
    assert (tmp_path / "runs" / "quick-mixed-seed0-seq3-retrain" / "applied.csv").read_text() == third
    table = (tmp_path / "s.md").read_text()
    assert "| 0 (trained model) |" in table and "| retrain without events 1–3 |" in table


def test_quick_fru_log_size_is_measured_per_round_and_the_log_removed(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "unlearning.py"),
            "--quick",
            "--fru-log-rounds",
            "3",
            "--runs",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "f.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = json.loads((tmp_path / "f.json").read_text())
    assert row["rounds_logged"] == 3 and row["clients_bytes_per_round"] > 0 and row["server_bytes_per_round"] > 0
    assert row["fru_log_bytes"] > 3 * row["clients_bytes_per_round"]  # the rounds plus the initial state
    assert not list((tmp_path / "runs").glob("*/fru_log/*.pt"))  # deleted once measured


def test_sequential_table_averages_each_event_over_seeds():
    sys.path.insert(0, str(REPO / "bench"))
    from unlearning import per_event, render_sequential

    def row(seed, event, recall):
        return {
            "seed": seed,
            "event": event,
            "users": 10 + seed,
            "unshared_interactions": 100,
            "recall@20": recall,
            "ndcg@20": 0.2,
            "requesting/recall@20": 0.2,
            "others/recall@20": 0.3,
            "mia_auc": 0.5,
            "unshared_mean_rank": 900.0,
            "seconds": 2.0,
            "storage_bytes": 1000,
        }

    rows = [row(0, 1, 0.30), row(1, 1, 0.32), row(0, 2, 0.28), row(1, 2, 0.28)]
    first, second = per_event(rows)
    assert first["recall@20"][0] == pytest.approx(0.31) and first["recall@20"][1] == pytest.approx(0.0141421, abs=1e-6)
    assert second["recall@20"] == (pytest.approx(0.28), 0.0) and first["users"][0] == 10.5
    args = argparse.Namespace(seeds=[0, 1], sequential=2, event_fraction=0.02, dataset="ml-1m")
    table = render_sequential(rows, args)
    assert "| 1 | 10 ± 1 | 100 ± 0 | 0.3100 ± 0.0141 |" in table and "seeds [0, 1], mean ± sample std" in table
