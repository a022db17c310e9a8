"""The unlearning benchmark's quick mode runs end to end, so the script cannot rot."""

import json
import subprocess
import sys

from conftest import REPO


def test_quick_unlearning_table_has_every_method(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "unlearning.py"), "--quick", "--json",
                          str(tmp_path / "u.json"), "--markdown", str(tmp_path / "u.md")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "u.json").read_text())
    assert [r["method"] for r in rows] == ["contrastive", "finetune", "none", "retrain", "fru"]
    by = {r["method"]: r for r in rows}
    assert by["fru"]["storage_bytes"] > by["contrastive"]["storage_bytes"] > 0 == by["retrain"]["storage_bytes"]
    table = (tmp_path / "u.md").read_text()
    assert "| contrastive |" in table and "bytes ratio to fru" in table and "Command: `python bench/unlearning.py" in table


def test_quick_sequential_events(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "unlearning.py"), "--quick", "--sequential", "3",
                          "--event-fraction", "0.1", "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["event"] for r in rows] == [1, 2, 3] and all(r["storage_bytes"] > 0 for r in rows)


def test_quick_fru_log_size_is_measured_per_round_and_the_log_removed(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "unlearning.py"), "--quick", "--fru-log-rounds", "3",
                          "--runs", str(tmp_path / "runs"), "--json", str(tmp_path / "f.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = json.loads((tmp_path / "f.json").read_text())
    assert row["rounds_logged"] == 3 and row["clients_bytes_per_round"] > 0 and row["server_bytes_per_round"] > 0
    assert row["fru_log_bytes"] > 3 * row["clients_bytes_per_round"]  # the rounds plus the initial state
    assert not list((tmp_path / "runs").glob("*/fru_log/*.pt"))  # deleted once measured
