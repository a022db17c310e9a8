"""MLflow's `champion` alias names the model the state folder serves, and nothing else moves it.

Every path that registers a model is driven here: a one-off training, a state folder's training
that wins and one that loses, an unlearning run outside a state folder, and an inbox event."""

import json

import pandas as pd
import pytest
from conftest import synthetic_raw

from fedshare.config import load_config
from fedshare.service.inbox import process_inbox
from fedshare.service.model_store import ModelStore, publish
from fedshare.stages import train_stage, unshare_stage

mlflow = pytest.importorskip("mlflow")


def aliases(client, name):
    """alias -> version of the registered model."""
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def version_of(run_dir):
    return str(json.loads((run_dir / "tracking.json").read_text())["model_version"])


def test_champion_follows_the_served_model_on_every_path(tmp_path):
    data = tmp_path / "inter.csv"
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(data, index=False)
    name = f"champion-{tmp_path.name}"
    base = [
        f"data.dataset={data}",
        "eval.every=2",
        "model.dim=8",
        "unlearning.rounds=2",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.registered_model={name}",
    ]
    trained = load_config(None, base + ["federated.rounds=30"])
    client = mlflow.MlflowClient(tracking_uri=trained.tracking.uri)

    # An experiment outside a state folder is a candidate, never the champion.
    train_stage(trained, tmp_path / "experiment", progress=False)
    assert aliases(client, name) == {"candidate": version_of(tmp_path / "experiment")}

    # A state folder serves a trained run: champion = the served version.
    state = tmp_path / "state"
    train_stage(trained, tmp_path / "served", progress=False)
    assert publish(trained, state, tmp_path / "served")
    served_version = version_of(tmp_path / "served")
    assert aliases(client, name) == {"candidate": served_version, "champion": served_version}
    served_run = client.get_run(json.loads((tmp_path / "served" / "tracking.json").read_text())["run_id"])
    assert served_run.data.tags["fedshare.run_dir"] == str((state / "models" / "0000").resolve())

    # A 1-round model loses on validation: it is registered, but champion stays on the served one.
    short = load_config(None, base + ["federated.rounds=1", "eval.every=1"])
    train_stage(short, tmp_path / "short", progress=False)
    assert not publish(short, state, tmp_path / "short")
    assert aliases(client, name) == {"candidate": version_of(tmp_path / "short"), "champion": served_version}

    # Unlearning outside a state folder (here the method that forgets nothing) does not move it.
    unshare_stage(tmp_path / "served", tmp_path / "unshared", "none", fraction=0.2)
    assert aliases(client, name)["champion"] == served_version
    assert aliases(client, name)["candidate"] == version_of(tmp_path / "unshared")

    # One naming for training and unlearning runs; the curve as it happened, the selected model as summary.
    training = client.get_run(json.loads((tmp_path / "served" / "tracking.json").read_text())["run_id"])
    unlearning = client.get_run(json.loads((tmp_path / "unshared" / "tracking.json").read_text())["run_id"])
    assert {"test/recall_at_20", "test/ndcg_at_20"} <= set(training.data.metrics) & set(unlearning.data.metrics)
    assert training.data.params["federated.rounds"] == unlearning.data.params["federated.rounds"] == "30"
    assert len(unlearning.inputs.dataset_inputs) == len(training.inputs.dataset_inputs) == 2
    sources = {i.dataset.name: i.dataset.source for i in unlearning.inputs.dataset_inputs}
    mask_source = next(source for name, source in sources.items() if name.endswith("sharing-mask"))
    assert str(tmp_path / "unshared" / "masks.parquet") in mask_source  # the run's own masks, not a URL
    selected = json.loads((tmp_path / "served" / "metrics.json").read_text())
    history = json.loads((tmp_path / "served" / "history.json").read_text())
    curve = client.get_metric_history(training.info.run_id, "curve/valid/recall_at_20")
    assert [m.step for m in curve] == [row["round"] for row in history]
    assert training.data.metrics["valid/recall_at_20"] == pytest.approx(selected["valid"]["recall@20"])
    [summary] = client.get_metric_history(training.info.run_id, "valid/recall_at_20")
    assert summary.step == selected["best_round"]

    # An applied, measured event of the state folder does: champion = the new CURRENT model.
    mask = pd.read_parquet(ModelStore(state).require_current() / "masks.parquet")
    user_id = int(mask.loc[mask["shared"], "user_id"].iloc[0])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pd.DataFrame({"request_id": ["r1"], "user_id": [user_id], "item_id": [""]}).to_csv(inbox / "r.csv", index=False)
    [outcome] = process_inbox(trained, state, inbox, "contrastive")
    current = ModelStore(state).require_current()
    assert outcome["applied"] == 1 and aliases(client, name)["champion"] == version_of(current) != served_version
    assert outcome["event"]["tracking"]["champion"] is True
    # Tags never name a dead folder: the event's run names the served models/N (not a staged .tmp-N);
    # the training run it replaced, whose folder and version were purged, says so.
    event_run = client.get_run(outcome["event"]["tracking"]["run_id"])
    assert event_run.data.tags["fedshare.run_dir"] == str(current.resolve())
    replaced = client.get_run(json.loads((tmp_path / "served" / "tracking.json").read_text())["run_id"])
    assert replaced.data.tags["fedshare.run_dir"].startswith("purged")


def test_a_kill_between_the_journal_and_the_alias_is_repaired_by_the_next_run(tmp_path):
    """SIGKILL right after the journal says `applied`, before `champion` moves: the next run's
    recovery moves it, so champion and CURRENT never stay apart."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    data = tmp_path / "inter.csv"
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(data, index=False)
    name = f"crash-{tmp_path.name}"
    overrides = [
        f"data.dataset={data}",
        "federated.rounds=6",
        "eval.every=2",
        "model.dim=8",
        "unlearning.rounds=2",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.registered_model={name}",
    ]
    config = load_config(None, overrides)
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    train_stage(config, tmp_path / "run", progress=False)
    assert publish(config, state, tmp_path / "run")
    client = mlflow.MlflowClient(tracking_uri=config.tracking.uri)
    served_version = aliases(client, name)["champion"]
    mask = pd.read_parquet(ModelStore(state).require_current() / "masks.parquet")
    user_id = int(mask.loc[mask["shared"], "user_id"].iloc[0])
    inbox.mkdir()
    pd.DataFrame({"request_id": ["r1"], "user_id": [user_id], "item_id": [""]}).to_csv(inbox / "r.csv", index=False)

    def process_inbox_cli(crash_at=None):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if crash_at:
            env["FEDSHARE_CRASH_AT"] = crash_at
        args = ["process-inbox", "--state", str(state), "--inbox", str(inbox)]
        args += [a for o in overrides for a in ("--set", o)]
        return subprocess.run([sys.executable, "-m", "fedshare.cli", *args], env=env, capture_output=True, timeout=300)

    assert process_inbox_cli(crash_at="applied").returncode == -9
    unlearned = ModelStore(state).require_current()
    assert aliases(client, name)["champion"] == served_version != version_of(unlearned)  # the window
    assert process_inbox_cli().returncode == 0  # recovery, then the re-sent file's rows are duplicates
    assert aliases(client, name)["champion"] == version_of(unlearned)
    assert ModelStore(state).require_current() == unlearned
    assert json.loads((unlearned / "tracking.json").read_text())["champion"] is True
