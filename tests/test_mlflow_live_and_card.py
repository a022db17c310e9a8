"""What the MLflow UI shows: the curve of a training that is still running, and a model card on
every registered version (what produced it, on which data and consent, how good, which events)."""

import json
from pathlib import Path

import pytest
from conftest import synthetic_raw

from fedshare.config import load_config
from fedshare.mlops import tracking
from fedshare.stages import train_stage, unshare_stage

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def overrides(tmp_path):
    data = tmp_path / "inter.csv"
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(data, index=False)
    return [
        f"data.dataset={data}",
        "federated.rounds=12",
        "eval.every=3",
        "model.dim=8",
        "unlearning.rounds=2",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.registered_model=card-{tmp_path.name}",
    ]


@pytest.fixture
def tracked_config(overrides):
    return load_config(None, overrides)


def test_the_curve_reaches_mlflow_while_the_training_runs(tracked_config, tmp_path, monkeypatch):
    client = mlflow.MlflowClient(tracking_uri=tracked_config.tracking.uri)
    seen = []  # (status of the run, points of its curve) right after each validation was sent
    send = tracking.LiveCurve.__call__

    def send_and_look(self, row):
        send(self, row)
        run = client.get_run(self.run_id)
        seen.append((run.info.status, len(client.get_metric_history(self.run_id, "curve/valid/recall_at_20"))))

    monkeypatch.setattr(tracking.LiveCurve, "__call__", send_and_look)
    train_stage(tracked_config, tmp_path / "run", progress=False)

    assert seen == [("RUNNING", n) for n in range(1, 5)]  # rounds 3, 6, 9, 12: one more point each time
    tracked = json.loads((tmp_path / "run" / "tracking.json").read_text())
    finished = client.get_run(tracked["run_id"])  # the same run, finished at the end with the model
    assert finished.info.status == "FINISHED"
    curve = client.get_metric_history(tracked["run_id"], "curve/valid/recall_at_20")
    assert [point.step for point in curve] == [3, 6, 9, 12]  # not sent twice
    assert "test/recall_at_20" in finished.data.metrics
    assert len(client.search_runs([finished.info.experiment_id])) == 1


def test_a_training_that_crashes_leaves_a_failed_run_not_a_running_one(tracked_config, tmp_path, monkeypatch):
    import fedshare.training

    calls = []
    real = fedshare.training.evaluate

    def evaluate_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(fedshare.training, "evaluate", evaluate_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        train_stage(tracked_config, tmp_path / "run", progress=False)
    live = tracking.live_run(tmp_path / "run")
    run = mlflow.MlflowClient(tracking_uri=tracked_config.tracking.uri).get_run(live["run_id"])
    assert run.info.status == "FAILED"
    assert live["curve_logged_through"] == 3


def test_tracking_that_is_away_never_costs_the_training(overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once rather than back off for minutes
    away = load_config(None, overrides + ["tracking.uri=http://127.0.0.1:9"])  # nothing listens there
    with pytest.warns(UserWarning, match="no live curve"):
        metrics = train_stage(away, tmp_path / "run", progress=False, track=False, live_curve=True)
    assert metrics["recall@20"] > 0
    assert tracking.live_run(tmp_path / "run") is None


def test_every_version_carries_a_model_card(tracked_config, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=tracked_config.tracking.uri)
    name = tracked_config.tracking.registered_model
    trained = train_stage(tracked_config, tmp_path / "run", progress=False)
    unshare_stage(tmp_path / "run", tmp_path / "event-1", "contrastive", fraction=0.2)
    unshare_stage(tmp_path / "event-1", tmp_path / "event-2", "contrastive", fraction=0.2)

    first, second, third = (client.get_model_version(name, str(v)) for v in (1, 2, 3))
    assert first.tags["fedshare.kind"] == "training"
    assert first.tags["test/recall_at_20"] == f"{trained['recall@20']:.4f}"
    assert first.tags["valid/recall_at_20"] == f"{trained['valid']['recall@20']:.4f}"
    assert first.tags["fedshare.sharing"] == tracked_config.sharing.policy
    assert json.loads(first.tags["fedshare.unlearning_events"]) == []
    # Data and consent versions: same data for all three, consent masks change with each unsharing.
    assert len(first.tags["fedshare.data_digest"]) == 16
    assert first.tags["fedshare.data_digest"] == second.tags["fedshare.data_digest"]
    digests = {v.tags["fedshare.consent_digest"] for v in (first, second, third)}
    assert len(digests) == 3
    # The events a version includes: its parent's plus its own.
    events = json.loads(third.tags["fedshare.unlearning_events"])
    assert [event.split(":")[0] for event in events] == ["event-1", "event-2"]
    assert "contrastive" in events[1]
    for version in (first, second, third):
        assert "Unlearning events included" in version.description
    assert "champion" in client.get_registered_model(name).description


def test_a_copied_project_keeps_its_artifacts_in_its_own_mlruns(tmp_path):
    """The default store is ./mlflow.db with artifacts in ./mlruns; MLflow records absolute paths, so
    without care a copy of the folder writes into, and reads from, the original's mlruns/."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(original / "inter.csv", index=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)

    def train_in(folder, out):  # a fresh process in the project folder, as a user would run it
        args = ["train", "--dataset", "inter.csv", "--rounds", "4", "--quiet", "--out", out]
        args += ["--set", "eval.every=2", "--set", "model.dim=8", "--config", str(REPO / "params.yaml")]
        done = subprocess.run(
            [sys.executable, "-m", "fedshare.cli", *args], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((folder / out / "tracking.json").read_text()), done.stderr

    first, _ = train_in(original, "run")
    shutil.copytree(original, copy)
    before = sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*"))
    second, said = train_in(copy, "run2")
    assert "was copied from another folder" in said
    assert sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*")) == before  # untouched
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    for run_id in (first["run_id"], second["run_id"]):
        artifacts = Path(client.get_run(run_id).info.artifact_uri)
        assert artifacts.is_relative_to(copy / "mlruns") and (artifacts / "metrics.json").exists(), artifacts
    import sqlite3

    with sqlite3.connect(copy / "mlflow.db") as db:  # the registry's copies of the weights, too
        stored = [Path(row[0]) for row in db.execute("select storage_location from model_versions")]
    assert len(stored) == 2 and all(path.is_relative_to(copy / "mlruns") and path.exists() for path in stored)
    _, said_again = train_in(copy, "run3")
    assert "copied" not in said_again  # rewritten once; the copy is now a project of its own


def test_the_registered_model_gives_a_device_its_top_k_raw_item_ids(tracked_config, tmp_path):
    """The pyfunc devices download: their user vector and the items they hold in, top-k raw IDs out,
    the same as the served model's own full score; it carries item tables only, no user vector."""
    import numpy as np
    import pandas as pd
    import torch

    from fedshare.rundir import load_run

    train_stage(tracked_config, tmp_path / "run", progress=False)
    version = json.loads((tmp_path / "run" / "tracking.json").read_text())["model_version"]
    uri = f"models:/{tracked_config.tracking.registered_model}/{version}"
    mlflow.set_tracking_uri(tracked_config.tracking.uri)
    recommender = mlflow.pyfunc.load_model(uri)

    _, interactions, _, model = load_run(tmp_path / "run")
    user_vectors, item_vectors = model.scoring_vectors()
    table = interactions.table
    rows, expected = [], []
    for user in (0, 7):
        held = table[(table["user"] == user) & (table["split"] != "test")]
        rows.append({"user_vector": user_vectors[user].tolist(), "seen": held["item_id"].astype(str).tolist()})
        scores = item_vectors @ user_vectors[user]
        scores[torch.as_tensor(held["item"].to_numpy())] = -torch.inf
        expected.append([str(interactions.item_ids[i]) for i in torch.topk(scores, 5).indices.tolist()])
    got = recommender.predict(pd.DataFrame(rows), params={"k": 5})
    assert got["items"].tolist() == expected

    folder = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "downloaded"))
    [tables] = list(Path(folder).rglob("tables.npz"))
    assert set(np.load(tables).files) == {"item_vectors", "item_ids"}  # no user vector leaves the devices
