"""The FRU baseline: what the update log keeps, its bytes on disk, exact replay, and unlearning."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from conftest import synthetic_raw

from fedshare.config import SharingConfig, load_config
from fedshare.data.interactions import prepare
from fedshare.data.requests import apply_to_mask, draw_requests, resolve_requests
from fedshare.data.sharing import build_mask
from fedshare.errors import DataError
from fedshare.evaluation import evaluate, server_scores
from fedshare.training import train
from fedshare.unlearning.common import UnlearningJob
from fedshare.unlearning.fru import UpdateLog, replay, top_share
from fedshare.unlearning.registry import unlearn


class CheckedLog(UpdateLog):
    """Also records, independently of the log's own code, every client's per-item change of each round."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.truth: list[dict[tuple[int, int], torch.Tensor]] = []
        self.current: dict[tuple[int, int], torch.Tensor] = {}

    def add_clients(self, batch, changes):
        dim = changes[0].shape[-1]
        values = torch.cat([change.reshape(-1, dim) for change in changes])
        users, local = batch.users.tolist(), batch.local_user.tolist()
        for j, user_position in enumerate(local):
            client = users[user_position]
            for row in [int(batch.pos_row[j])] + batch.neg_row[j].tolist():
                key = (client, int(batch.row_items[row]))
                self.current.setdefault(key, torch.zeros(dim))
        # each row copy belongs to the client of the interaction that uses it (counted once)
        owner = {}
        for j, user_position in enumerate(local):
            for row in [int(batch.pos_row[j])] + batch.neg_row[j].tolist():
                owner[row] = users[user_position]
        for row, client in owner.items():
            self.current[(client, int(batch.row_items[row]))] += values[row]
        super().add_clients(batch, changes)

    def flush(self, round_number):
        self.truth.append(self.current)
        self.current = {}
        super().flush(round_number)


def _setup(overrides=(), policy="mixed", n_users=40):
    config = load_config(
        None,
        [
            "federated.rounds=8",
            "eval.every=2",
            "eval.patience=100",
            "model.dim=8",
            "model.align_batch=16",
            "model.contrastive_weight=0.1",
            *overrides,
        ],
    )
    interactions = prepare(synthetic_raw(n_users=n_users, n_items=60), config.data, seed=0)
    mask = build_mask(interactions, SharingConfig(policy=policy), seed=0)
    return config, interactions, mask


def test_top_share_keeps_ceil_alpha_of_each_group_by_score():
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2])
    scores = torch.tensor([5.0, 1, 9, 3, 7, 2, 8, 4, 6, 0, 1, 2, 3])
    kept = top_share(groups, scores, 0.3)
    assert kept.tolist() == [2, 4, 6, 11, 12]  # 0.3*10 -> 3 rows (not 4), 0.3*2 -> 1, 0.3*1 -> 1


def test_log_keeps_top_alpha_rows_per_client_and_bytes_are_the_files(tmp_path):
    config, interactions, mask = _setup()
    alpha = 0.3
    log = CheckedLog(tmp_path / "log", alpha=alpha)
    result = train(config, interactions, mask, progress=False, update_log=log)
    assert log.rounds() == list(range(1, result.best_round + 1)) and log.final_round() == result.best_round
    for round_number in log.rounds():
        clients, server = log.load(round_number)
        assert clients["client"].dtype == torch.int32 and clients["value"].dtype == torch.float32
        truth = log.truth[round_number - 1]
        touched = {}
        for client, _ in truth:
            touched[client] = touched.get(client, 0) + 1
        kept = {}
        for client, item, value in zip(clients["client"].tolist(), clients["item"].tolist(), clients["value"]):
            assert torch.allclose(value, truth[(client, item)], atol=1e-7)  # the client's change of that item
            kept.setdefault(client, []).append(item)
        assert set(kept) == set(touched)  # every client of the round has a log entry
        for client, items in kept.items():
            assert len(items) == len(set(items)) <= math.ceil(alpha * touched[client])
            norms = {item: float(value.norm()) for (c, item), value in truth.items() if c == client}
            dropped = [norm for item, norm in norms.items() if item not in items]
            assert not dropped or min(norms[item] for item in items) >= max(dropped) - 1e-9  # the top rows
        for name in ("graph_users", "graph_items", "item_table"):  # the server's own source, top-alpha rows too
            assert server[f"{name}.rows"].numel() >= 1
    # The reported bytes are the files in the folder, measured on disk.
    on_disk = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(log.folder) for name in names)
    assert log.bytes_on_disk() == on_disk > 0
    assert (
        log.bytes_on_disk("clients") + log.bytes_on_disk("server") + (log.folder / "meta.json").stat().st_size
        == on_disk
    )
    # Off by default.
    assert load_config(None).unlearning.fru_alpha == 0.0


@pytest.mark.parametrize(
    "overrides", [(), ("federated.client_fraction=0.5", "federated.local_steps=2", "federated.negatives=2")]
)
def test_replay_of_the_full_log_rebuilds_the_trained_server(tmp_path, overrides):
    config, interactions, mask = _setup(overrides)
    log = UpdateLog(tmp_path / "log", alpha=1.0)
    result = train(config, interactions, mask, progress=False, update_log=log)
    trained = result.model.state()["server"]
    assert replay(result.model, log, calibrated=False) == result.best_round > 1
    replayed = result.model.state()["server"]
    for name, value in trained.items():
        assert torch.allclose(replayed[name], value, atol=1e-5), name
    # A log that keeps fewer rows does not rebuild it exactly (the check above is not vacuous).
    log_half = UpdateLog(tmp_path / "half", alpha=0.3)
    result = train(config, interactions, mask, progress=False, update_log=log_half)
    replay(result.model, log_half, calibrated=False)
    assert not torch.allclose(result.model.state()["server"]["item_table"], trained["item_table"], atol=1e-5)


def test_fru_unlearning_removes_edges_and_lowers_scores(tmp_path):
    config, interactions, mask = _setup(("federated.rounds=16",), policy="all", n_users=50)
    log = UpdateLog(tmp_path / "log", alpha=0.5)
    result = train(config, interactions, mask, progress=False, update_log=log)
    model = result.model
    requests = resolve_requests(draw_requests(mask, 0.1, "all", seed=0), mask)
    pairs = requests.pairs
    users, items = pairs["user"].to_numpy(), pairs["item"].to_numpy()
    before = server_scores(model, users, items)
    new_mask = apply_to_mask(mask, pairs)
    settings = dataclasses.replace(config.unlearning, rounds=0, weight=0.0, hops=1)
    with pytest.raises(DataError, match="update log"):
        unlearn(UnlearningJob(model, interactions, new_mask, pairs, settings, seed=0), "fru")
    outcome = unlearn(UnlearningJob(model, interactions, new_mask, pairs, settings, seed=0, update_log=log), "fru")
    assert outcome.rounds == result.best_round and outcome.seconds > 0
    assert not model.server.graph.pairs() & set(zip(users.tolist(), items.tolist()))
    after = server_scores(model, users, items)
    assert after.mean() < before.mean()
    # The replayed model still ranks: remaining shared edges score above random pairs, recall is far from 0.
    remaining = new_mask[new_mask["shared"]]
    rng = np.random.default_rng(0)
    random_items = rng.integers(interactions.n_items, size=len(remaining))
    assert (
        server_scores(model, remaining["user"].to_numpy(), remaining["item"].to_numpy()).mean()
        > server_scores(model, remaining["user"].to_numpy(), random_items).mean()
    )
    assert evaluate(model, interactions, "test")["recall@20"] > 0.5 * result.best_validation["recall@20"]


def test_delete_request_recomputes_the_requesting_clients(tmp_path):
    config, interactions, mask = _setup(("federated.rounds=4", "eval.every=4"), policy="all")
    log = UpdateLog(tmp_path / "log", alpha=1.0)
    result = train(config, interactions, mask, progress=False, update_log=log)
    user = int(mask["user"].iloc[0])
    # Nothing deleted from the data, but the client is treated as affected: its logged rows are not
    # used, its fresh local training (from its round-0 embedding) replaces them: the replay then
    # equals the exact one only if the fresh work matches the log, which it does when nothing changed.
    trained = result.model.state()
    replay(result.model, log, affected_clients=torch.tensor([user]), calibrated=False)
    # Fresh training redraws the negatives, so the rebuilt item table differs, but only a little.
    rebuilt = result.model.state()
    difference = (rebuilt["server"]["item_table"] - trained["server"]["item_table"]).norm()
    assert 0 < difference < 0.1 * trained["server"]["item_table"].norm()
    assert not torch.equal(rebuilt["clients"]["user_emb"][user], trained["clients"]["user_emb"][user])
    others = torch.arange(interactions.n_users) != user
    assert torch.equal(rebuilt["clients"]["user_emb"][others], trained["clients"]["user_emb"][others])
