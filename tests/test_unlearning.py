"""Unsharing on a small run: requests, edges gone, snapshots checked, scores of unshared items lowered."""

import importlib
import json

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_raw

from fedshare.cli import build_parser
from fedshare.config import load_config
from fedshare.data.requests import read_requests, resolve_requests
from fedshare.errors import CorruptFileError, DataError
from fedshare.evaluation import auc, mean_rank, server_attack_scores, server_scores, two_sided
from fedshare.rundir import load_run
from fedshare.stages import make_requests_stage, train_stage, unshare_stage
from fedshare.storage import load_tensors
from fedshare.unlearning.registry import METHODS
from fedshare.unlearning.snapshots import SnapshotStore


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unshare")
    data = folder / "inter.csv"
    synthetic_raw(n_users=60, n_items=80, per_user=16).to_csv(data, index=False)
    config = load_config(
        None,
        [
            f"data.dataset={data}",
            "sharing.policy=all",
            "federated.rounds=40",
            "eval.every=5",
            "eval.patience=100",
            "model.dim=16",
            "unlearning.snapshot_rounds=[0, 10, 20]",
            "tracking.enabled=false",
        ],
    )
    train_stage(config, folder / "run", progress=False)
    return folder / "run"


def test_snapshots_are_kept_with_checksums(trained_run):
    store = SnapshotStore(trained_run / "snapshots")
    assert store.rounds() == [0, 10, 20]
    assert store.bytes_on_disk() > 0
    path = store.path(10)
    payload = bytearray(path.read_bytes())
    payload[-10] ^= 0xFF
    corrupted = trained_run.parent / "corrupt.pt"
    corrupted.write_bytes(bytes(payload))
    (trained_run.parent / "corrupt.pt.sha256").write_text((path.parent / (path.name + ".sha256")).read_text())
    with pytest.raises(CorruptFileError, match="corrupted"):
        load_tensors(corrupted)


def test_request_parsing_rejects_bad_rows_with_reasons(trained_run, tmp_path):
    _, _, mask, _ = load_run(trained_run)
    shared = mask[mask["shared"]]
    user_id, item_id = int(shared["user_id"].iloc[0]), int(shared["item_id"].iloc[0])
    never = int(mask["item_id"].max()) + 1000
    path = tmp_path / "requests.csv"
    pd.DataFrame(
        {
            "request_id": ["a", "b", "b", "c", "d"],
            "user_id": [user_id, user_id, user_id, 999999, "x"],
            "item_id": [item_id, never, "", "", ""],
        }
    ).to_csv(path, index=False)
    requests = resolve_requests(read_requests(path), mask)
    assert requests.pairs[["user_id", "item_id"]].values.tolist() == [[user_id, item_id]]
    reasons = list(zip(requests.rejected["request_id"], requests.rejected["reason"]))
    assert reasons == [
        ("b", "item not currently shared by this user"),
        ("b", "duplicate request_id"),
        ("c", "unknown user"),
        ("d", "user_id and item_id must be non-negative integers"),
    ]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="cannot be parsed"):
        read_requests(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="lacks column"):
        read_requests(tmp_path / "cols.csv")


def test_contrastive_unshare_removes_edges_and_lowers_scores(trained_run, tmp_path):
    requests_file = tmp_path / "requests.csv"
    make_requests_stage(trained_run, 0.2, "all", 0, requests_file)
    _, interactions, mask, before = load_run(trained_run)
    requests = resolve_requests(read_requests(requests_file), mask)
    users, items = requests.pairs["user"].to_numpy(), requests.pairs["item"].to_numpy()
    scores_before = server_scores(before, users, items)

    out = tmp_path / "after"
    metrics = unshare_stage(trained_run, out, "contrastive", requests_file=requests_file, compare_retrain=True)
    assert metrics["unshared_interactions"] == len(requests.pairs) and metrics["storage_bytes"] > 0
    written = json.loads((out / "unlearning.json").read_text())
    for key in ("recall@20", "ndcg@20", "mia_auc", "unshared_mean_rank", "seconds", "storage_bytes"):
        assert key in written
    assert "recall@20" in metrics["retrain"]

    # The unshared edges are gone from everything the server keeps.
    server = load_tensors(out / "server.pt")
    kept = set(zip(server["shared_users"].tolist(), server["shared_items"].tolist()))
    assert not kept & set(zip(users.tolist(), items.tolist()))
    assert not pd.read_parquet(out / "masks.parquet").merge(requests.pairs[["user", "item"]]).shared.any()
    # The unshared items' server scores for their users went down.
    _, _, _, after = load_run(out)
    assert server_scores(after, users, items).mean() < scores_before.mean()


def test_auc_matches_its_definition():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


def test_the_attacks_read_every_server_table_and_rank_in_chunks(trained_run):
    _, _, _, model = load_run(trained_run)
    users, items = np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7, 8, 9])
    scores = server_attack_scores(model, users, items)
    assert set(scores) == {"graph", "graph_layer0", "graph_user_item_table"}
    assert np.allclose(scores["graph"], server_scores(model, users, items))
    q = model.server.item_table.detach().numpy()
    global_users, _ = model.server.propagate()
    expected = (global_users.detach().numpy()[users] * q[items]).sum(1)
    assert np.allclose(scores["graph_user_item_table"], expected, atol=1e-5)
    # Chunked ranks equal the ranks computed all at once, and a flipped attack counts as one.
    assert mean_rank(model, users, items, chunk=2) == mean_rank(model, users, items, chunk=1024)
    assert two_sided(0.2) == 0.8 and two_sided(0.7) == 0.7


@pytest.mark.parametrize("count, read", [(0, []), (1, [0]), (-1, [0, 10, 20])])
def test_contrastive_reads_as_many_snapshots_as_asked(trained_run, tmp_path, count, read):
    metrics = unshare_stage(
        trained_run,
        tmp_path / "out",
        "contrastive",
        fraction=0.2,
        track=False,
        overrides=[f"unlearning.snapshots={count}"],
    )
    store = SnapshotStore(trained_run / "snapshots")
    assert metrics["snapshots_read"] == read
    assert metrics["snapshot_bytes_read"] == (store.bytes_on_disk(read) if read else 0)
    assert 0.5 <= metrics["mia_auc_server"] <= 1 and "mia_auc_device" not in metrics


def test_a_delete_is_also_attacked_on_the_device_score(trained_run, tmp_path):
    metrics = unshare_stage(trained_run, tmp_path / "out", "none", fraction=0.2, mode="delete", track=False)
    assert 0.5 <= metrics["mia_auc_device"] <= 1
    assert set(metrics["mia_auc_by_score"]) == {"graph", "graph_layer0", "graph_user_item_table"}


def test_fru_needs_the_update_log_and_says_how_to_get_it(trained_run, tmp_path):
    with pytest.raises(DataError, match="fru_alpha"):
        unshare_stage(trained_run, tmp_path / "out", "fru", fraction=0.2, track=False)


def test_fru_through_the_stage_reports_the_log_as_storage(tmp_path):
    data = tmp_path / "inter.csv"
    synthetic_raw(n_users=30, n_items=50, per_user=12).to_csv(data, index=False)
    config = load_config(
        None,
        [
            f"data.dataset={data}",
            "sharing.policy=all",
            "federated.rounds=6",
            "eval.every=2",
            "model.dim=8",
            "unlearning.fru_alpha=0.5",
            "tracking.enabled=false",
        ],
    )
    metrics = train_stage(config, tmp_path / "run", progress=False)
    assert metrics["fru_log_bytes"] > 0
    event = unshare_stage(tmp_path / "run", tmp_path / "out", "fru", fraction=0.2, track=False)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "run" / "fru_log").rglob("*") if p.is_file())
    assert event["storage_bytes"] == on_disk and not (tmp_path / "out" / "fru_log").exists()


def test_the_registry_is_the_one_list_of_methods():
    """Each registered method's module has its ``unlearn(job)``; the CLI accepts exactly those names."""
    parser = build_parser()
    base = ["unshare", "--run", "RUN", "--fraction", "0.1", "--out", "OUT", "--method"]
    for name, method in METHODS.items():
        assert callable(importlib.import_module(method.module).unlearn), name
        assert parser.parse_args([*base, name]).method == name
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "no-such-method"])


def test_a_delete_that_removes_an_items_last_pair_keeps_every_index(tmp_path):
    """Deleting the only interaction of an item must not shrink the item index on reload (the trained
    tables still have its row); before the index maps were saved this corrupted memory."""
    data = tmp_path / "inter.csv"
    raw = synthetic_raw(n_users=30, n_items=50, per_user=12)
    lonely_user = int(raw["user_id"].iloc[0])
    raw = pd.concat([raw, pd.DataFrame([{**raw.iloc[0].to_dict(), "item_id": 999999}])], ignore_index=True)
    raw.to_csv(data, index=False)
    config = load_config(
        None,
        [
            f"data.dataset={data}",
            "sharing.policy=all",
            "federated.rounds=4",
            "eval.every=2",
            "model.dim=8",
            "tracking.enabled=false",
        ],
    )
    train_stage(config, tmp_path / "run", progress=False)
    _, interactions, mask, _ = load_run(tmp_path / "run")
    if not mask[(mask["item_id"] == 999999)].shared.any():
        pytest.skip("the lonely item fell into validation or test on this seed")
    requests = pd.DataFrame([{"request_id": "d", "user_id": lonely_user, "item_id": 999999}])
    requests.to_csv(tmp_path / "delete.csv", index=False)
    unshare_stage(
        tmp_path / "run", tmp_path / "out", "none", requests_file=tmp_path / "delete.csv", mode="delete", track=False
    )
    _, after, _, model = load_run(tmp_path / "out")
    assert after.n_items == interactions.n_items and after.n_users == interactions.n_users
    assert list(after.item_ids) == list(interactions.item_ids)
    assert model.server.item_table.shape[0] == interactions.n_items


def test_a_delete_redraws_and_refits_the_deleting_devices_vector(trained_run, tmp_path):
    _, _, _, before = load_run(trained_run)
    unshare_stage(trained_run, tmp_path / "out", "none", fraction=0.2, mode="delete", track=False)
    _, after_data, _, after = load_run(tmp_path / "out")
    deleting = pd.read_csv(tmp_path / "out" / "applied.csv")["user"].unique()
    others = np.setdiff1d(np.arange(after_data.n_users), deleting)
    moved = (after.clients.user_emb - before.clients.user_emb).norm(dim=1).detach().numpy()
    assert (moved[deleting] > 1e-3).all()  # every deleting device has a new vector
    assert np.allclose(moved[others], 0)  # nobody else's device changed
