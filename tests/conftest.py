"""Shared fixtures: small generated data, and the real MovieLens files from ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedshare.config import load_config
from fedshare.data.interactions import prepare
from fedshare.service.journal import RequestJournal
from fedshare.service.model_store import ModelStore
from fedshare.storage import load_tensors

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FEDSHARE_DATA_DIR", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    """No test writes into the repo's MLflow store or talks to telemetry endpoints."""
    import tempfile

    store = Path(tempfile.mkdtemp(prefix="fedshare-test-mlflow-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    for key, value in {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }.items():
        os.environ.setdefault(key, value)
    # Two xdist workers on two cores: one torch thread each (and in the subprocesses they start),
    # else their threads fight over the cores (fedshare/threads.py).
    from fedshare.threads import apply_thread_policy, usable_cores

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("FEDSHARE_THREADS", str(max(1, usable_cores() // workers)))
    apply_thread_policy()


def real_data_dir() -> Path:
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        pytest.skip(f"real MovieLens data not found in {SHARED_DATA} (set FEDSHARE_DATA_DIR)")
    return SHARED_DATA


def synthetic_raw(n_users: int = 40, n_items: int = 60, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Random interactions with a little structure (users prefer one of two item halves)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        half = user % 2
        pool = np.arange(n_items // 2) + half * (n_items // 2)
        items = rng.choice(pool, size=per_user, replace=False)
        rows += [(1000 + user, 5000 + int(item), int(rng.integers(1, 6)), 880000000 + len(rows)) for item in items]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def tiny_config():
    return load_config(
        None,
        ["federated.rounds=6", "eval.every=2", "model.dim=8", "model.align_batch=16", "model.contrastive_weight=0.1"],
    )


@pytest.fixture
def tiny_interactions(tiny_config):
    return prepare(synthetic_raw(), tiny_config.data, seed=0)


def served_state(folder: Path, extra: tuple[str, ...] = ()) -> tuple[Path, list[str]]:
    """A tiny trained FedShare model served from ``folder/state`` (no MLflow): the state folder and
    the overrides it was trained with (``extra`` appended)."""
    from fedshare.service.model_store import publish
    from fedshare.stages import train_stage

    data = folder / "inter.csv"
    synthetic_raw(n_users=40, n_items=60, per_user=12).to_csv(data, index=False)
    overrides = [
        f"data.dataset={data}",
        "federated.rounds=4",
        "eval.every=2",
        "model.dim=8",
        "unlearning.rounds=2",
        "tracking.enabled=false",
        *extra,
    ]
    config = load_config(None, overrides)
    train_stage(config, folder / "run", progress=False)
    assert publish(config, folder / "state", folder / "run")
    return folder / "state", overrides


# -- the request inbox through the command line (the crash tests of test_inbox and test_share) ------


def cli(args, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "fedshare.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def inbox_args(state, inbox, overrides):
    return ["process-inbox", "--state", str(state), "--inbox", str(inbox)] + [
        x for o in overrides for x in ("--set", o)
    ]


def outcome(state):
    """What must be identical after any crash and rerun: masks, served model, journal summary."""
    current = ModelStore(state).require_current()
    mask = pd.read_parquet(current / "masks.parquet").sort_values(["user", "item"]).reset_index(drop=True)
    server = load_tensors(current / "server.pt")
    journal = RequestJournal(state / "journal.jsonl").entries()
    applied = pd.Series([e["request_id"] for e in journal if e["state"] == "applied"]).value_counts().to_dict()
    return mask, server, applied
