"""After an unsharing event, nothing the server still keeps holds an unshared interaction: not the
served state, not the DVC cache or remote, not the MLflow registry (once the retention has passed)."""

import io
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import synthetic_raw

from fedshare.config import load_config
from fedshare.mlops.versioning import mask_versions
from fedshare.service.inbox import process_inbox, purge
from fedshare.service.model_store import ModelStore, publish
from fedshare.stages import train_stage

DVC = os.path.join(os.path.dirname(sys.executable), "dvc")
pytestmark = pytest.mark.skipif(not os.path.exists(DVC), reason="dvc is not installed in this environment")


def shared_pairs_in(path):
    """(user_id, item_id) pairs that a server-side file marks as shared, or None if it holds none."""
    payload = path.read_bytes()
    if payload[:4] == b"PAR1":
        table = pd.read_parquet(io.BytesIO(payload))
        if {"user_id", "item_id", "shared"} <= set(table.columns):
            rows = table[table["shared"]]
            return set(zip(rows["user_id"].astype(int), rows["item_id"].astype(int)))
        return None
    if path.suffix == ".pt" or payload[:2] == b"PK":  # torch files are zip archives
        try:
            tensors = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not a torch file
            return None
        if isinstance(tensors, dict) and "shared_users" in tensors:
            return {("idx", int(u), int(i)) for u, i in zip(tensors["shared_users"], tensors["shared_items"])}
    return None


@pytest.fixture
def repo(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "remote", "add", "-d", "-q", "local", str(tmp_path / ".dvc_remote")], cwd=tmp_path, check=True)
    return tmp_path


def serve_and_unshare(repo, retention_days):
    data = repo / "inter.csv"
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(data, index=False)
    overrides = [
        f"data.dataset={data}",
        "federated.rounds=4",
        "eval.every=2",
        "model.dim=8",
        "unlearning.rounds=2",
        "unlearning.snapshot_rounds=[0, 2]",
        f"requests.retention_days={retention_days}",
        f"tracking.registered_model=no-trace-{retention_days}-{repo.name}",
    ]
    config = load_config(None, overrides)
    train_stage(config, repo / "run", progress=False)
    state, inbox = repo / "state", repo / "inbox"
    assert publish(config, state, repo / "run")
    mask = pd.read_parquet(state / "models" / "0000" / "masks.parquet")
    user_id = int(mask.loc[mask["shared"], "user_id"].iloc[0])
    gone = mask[mask["shared"] & (mask["user_id"] == user_id)]
    inbox.mkdir()
    pd.DataFrame({"request_id": ["forget-me"], "user_id": [user_id], "item_id": [""]}).to_csv(
        inbox / "r.csv", index=False
    )
    [result] = process_inbox(config, state, inbox, "contrastive")
    assert result["applied"] == 1
    raw = set(zip(gone["user_id"].astype(int), gone["item_id"].astype(int)))
    indexed = {("idx", int(u), int(i)) for u, i in zip(gone["user"], gone["item"])}
    return config, state, raw | indexed


def server_side_files(repo):
    """Everything the server side keeps: the served state, the DVC cache and remote."""
    roots = [repo / "state", repo / ".dvc" / "cache", repo / ".dvc_remote"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_nothing_server_side_holds_an_unshared_interaction_after_purge(repo):
    config, state, unshared = serve_and_unshare(repo, retention_days=0)
    checked = 0
    for path in server_side_files(repo):
        pairs = shared_pairs_in(path)
        if pairs is not None:
            checked += 1
            assert not pairs & unshared, f"{path} still holds unshared interactions"
    assert checked >= 3  # served masks, served server.pt, the DVC cache/remote copies of the masks
    assert len(mask_versions(state)) == 1
    # MLflow: the version trained before the event is gone with its model artifacts; the champion is the new one.
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions(f"name='{config.tracking.registered_model}'")
    champion = client.get_model_version_by_alias(config.tracking.registered_model, "champion")
    assert [str(v.version) for v in versions] == [str(champion.version)]
    assert str(champion.version) == ModelStore(state).events()[-1]["tracking"]["model_version"]


def test_retention_keeps_old_versions_until_fedshare_purge_after_it(repo):
    config, state, unshared = serve_and_unshare(repo, retention_days=1)
    leaked = [p for p in server_side_files(repo) if (shared_pairs_in(p) or set()) & unshared]
    assert leaked and all(".dvc" in str(p) for p in leaked)  # only the older DVC mask version, kept for a day
    assert len(mask_versions(state)) == 2
    purged = purge(
        load_config(
            None,
            [
                f"data.dataset={config.data.dataset}",
                "requests.retention_days=0",
                f"tracking.registered_model={config.tracking.registered_model}",
            ],
        ),
        state,
    )
    assert len(purged["mask_versions"]) == 1 and purged["mlflow_versions"]
    assert not [p for p in server_side_files(repo) if (shared_pairs_in(p) or set()) & unshared]


def test_the_consent_store_holds_each_users_choice_and_last_request_and_is_versioned_with_the_masks(repo):
    config, state, unshared = serve_and_unshare(repo, retention_days=0)
    consent = pd.read_parquet(state / "consent.parquet")
    masks = pd.read_parquet(state / "masks.parquet")
    assert "item_id" not in consent.columns  # counts and receipts only: an old version reveals no item
    assert set(consent["user_id"]) == set(masks["user_id"].astype(str))
    [requester] = {str(pair[0]) for pair in unshared if len(pair) == 2}  # raw (user_id, item_id) pairs
    row = consent.set_index("user_id").loc[requester]
    assert row["shared_items"] == 0 and row["training_items"] > 0 and row["ratio"] == 0.0
    assert (row["requests"], row["last_request_id"], row["last_mode"]) == (1, "forget-me", "unshare")
    assert row["changed_at"] and row["model"] == ModelStore(state).current().name
    others = consent[consent["user_id"] != requester]
    assert (others["requests"] == 0).all() and (others["last_request_id"] == "").all()
    shared_now = masks[masks["shared"]].groupby(masks["user_id"].astype(str)).size()
    assert (others.set_index("user_id")["shared_items"] == shared_now.reindex(others["user_id"]).fillna(0)).all()
    # DVC holds the current consent store beside the masks; the superseded one went with the purge.
    [version] = mask_versions(state)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    assert (cache / version["consent_md5"][:2] / version["consent_md5"][2:]).exists()
    consent_objects = [p for p in cache.rglob("*") if p.is_file() and p.read_bytes()[:4] == b"PAR1"]
    consents = [p for p in consent_objects if "last_request_id" in pd.read_parquet(p).columns]
    assert len(consents) == 1
