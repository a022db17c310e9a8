"""bench/speed.py --quick runs end to end on generated data and writes its JSON and Markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_speed_benchmark_quick(tmp_path):
    out, markdown = tmp_path / "tmp.json", tmp_path / "tmp.md"
    done = subprocess.run(
        [sys.executable, "bench/speed.py", "--quick", "--threads", "1", "--out", str(out), "--markdown", str(markdown)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["users"] == 200 and result["items"] == 300
    for part in ("vectorized", "loop", "local", "central"):
        assert result[part]["seconds_per_round"] > 0, part
    assert result["speedup"] > 0 and result["round_over_central"] > 0
    assert report["machine"]["torch"] and report["machine"]["cpu_count"]

    text = markdown.read_text()
    assert "| dataset | users | items | train interactions | vectorized s/round | loop s/round | speed-up |" in text
    assert "Command: `python bench/speed.py --quick" in text
