"""The synthetic generator (fedshare/synthetic.py) and bench/scaling.py --quick, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedshare.config import DataConfig
from fedshare.data.interactions import prepare
from fedshare.data.synthetic import default_n_items, generate

REPO = Path(__file__).resolve().parent.parent


def test_generator_is_deterministic_by_seed():
    first, again, other = generate(3000, seed=1), generate(3000, seed=1), generate(3000, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert not first[["user_id", "item_id"]].equals(other[["user_id", "item_id"]])


@pytest.mark.parametrize("mean", [20, 8])
def test_generator_mean_skew_and_distinct_pairs(mean):
    n_users = 3000
    frame = generate(n_users, mean_per_user=mean, seed=0)
    info = frame.attrs["synthetic"]
    assert info["n_items"] == default_n_items(n_users) == 1000
    assert abs(len(frame) / n_users - mean) <= 0.1 * mean
    assert info["actual_mean"] == pytest.approx(len(frame) / n_users)
    assert not frame.duplicated(["user_id", "item_id"]).any()

    per_user = frame.groupby("user_id").size()
    assert per_user.size == n_users and per_user.min() >= 3 and per_user.max() <= info["n_items"] // 2
    assert per_user.max() > 5 * per_user.median()  # a long tail of very active users
    per_item = frame["item_id"].value_counts().to_numpy()  # sorted, most popular first
    top_share = per_item[: info["n_items"] // 10].sum() / len(frame)
    assert top_share > 0.30  # top 10% of items: > 30% of interactions
    assert frame["rating"].between(1, 5).all()


def test_generator_output_goes_through_prepare():
    frame = generate(2000, seed=0)
    interactions = prepare(frame, DataConfig(), seed=0)
    assert interactions.n_users == 2000  # everyone has >= 3, nobody is dropped
    assert interactions.n_items == frame["item_id"].nunique()
    assert len(interactions.table) == len(frame)
    assert set(interactions.table["split"]) == {"train", "valid", "test"}


def test_generator_rejects_impossible_means():
    with pytest.raises(ValueError):
        generate(100, mean_per_user=2)  # below the minimum of 3 per user
    with pytest.raises(ValueError):
        generate(100, mean_per_user=600, n_items=1000)  # above half the catalogue


def test_scaling_benchmark_quick(tmp_path):
    out, markdown = tmp_path / "scaling.json", tmp_path / "scaling.md"
    done = subprocess.run(
        [
            sys.executable,
            "bench/scaling.py",
            "--quick",
            "--threads",
            "1",
            "--out",
            str(out),
            "--markdown",
            str(markdown),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    results = report["results"]
    assert [r["users_requested"] for r in results] == [500, 2000]
    assert [r["users"] for r in results] == sorted(r["users"] for r in results)
    for r in results:
        assert r["status"] == "ok", r.get("reason")
        assert r["train_interactions"] > 0 and r["items"] > 0
        assert r["fedshare"]["seconds_per_round"] > 0 and r["local"]["seconds_per_round"] > 0
        assert r["rss_mib"]["peak"] > 0 and r["rss_mib"]["peak_before_rounds"] > 0
        assert r["rss_mib"]["peak"] >= r["rss_mib"]["peak_before_rounds"]
        assert "rounds_start" in r["load_average"]
    assert results[0]["train_interactions"] < results[1]["train_interactions"]
    assert report["growth"]["seconds_vs_interactions"]["exponent"] is not None
    assert report["machine"]["torch"] and report["gpu"] == "not measured yet"

    text = markdown.read_text()
    assert "| users | mean/user | items | train interactions |" in text
    assert "**How cost grows:**" in text and "Command: `python bench/scaling.py --quick" in text


def test_scaling_benchmark_reports_a_failed_size(tmp_path):
    """A size whose child cannot live under the memory limit is a 'failed' row with a reason, not a crash."""
    out = tmp_path / "failed.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/scaling.py",
            "--users",
            "500",
            "--memory-limit-gib",
            "0.3",
            "--out",
            str(out),
            "--markdown",
            str(tmp_path / "failed.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["status"] == "failed" and result["reason"]
    assert "failed" in (tmp_path / "failed.md").read_text()
