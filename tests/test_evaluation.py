import math

import numpy as np
import pytest
import torch

from fedshare.config import SharingConfig
from fedshare.data.sharing import build_mask
from fedshare.evaluation import evaluate, rank_metrics, summarize, validation_users
from fedshare.federated.simulation import build_model


def test_metrics_match_a_hand_computed_case():
    # 1 latent dim: item scores for every user are the item vector itself -> ranking 4 > 3 > 2 > 1 > 0.
    users = torch.ones(2, 1)
    items = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    # user 0: item 4 seen in training (masked) -> ranking 3, 2, 1, 0; truth {2, 0}
    # user 1: nothing seen -> ranking 4, 3, 2, 1, 0; truth {3}
    out = rank_metrics(
        users,
        items,
        truth_users=np.array([0, 0, 1]),
        truth_items=np.array([2, 0, 3]),
        seen_users=np.array([0]),
        seen_items=np.array([4]),
        ks=[2, 4],
    )
    d = lambda rank: 1 / math.log2(rank + 1)  # noqa: E731  (rank 1 is the top)
    assert np.allclose(out["recall@2"], [0.5, 1.0])  # user 0 hits item 2 at rank 2
    assert np.allclose(out["ndcg@2"], [d(2) / (d(1) + d(2)), d(2) / d(1)])
    assert np.allclose(out["recall@4"], [1.0, 1.0])  # item 0 at rank 4
    assert np.allclose(out["ndcg@4"], [(d(2) + d(4)) / (d(1) + d(2)), d(2) / d(1)])
    summary = summarize(out, {"even": np.array([True, False])})
    assert np.isclose(summary["recall@2"], 0.75) and np.isclose(summary["even/recall@2"], 0.5)
    assert summary["even_users"] == 1


def test_batched_evaluation_equals_one_batch():
    generator = torch.Generator().manual_seed(0)
    users, items = torch.randn(50, 4, generator=generator), torch.randn(30, 4, generator=generator)
    rng = np.random.default_rng(0)
    truth_users, truth_items = rng.integers(0, 50, 200), rng.integers(0, 30, 200)
    seen_users, seen_items = rng.integers(0, 50, 300), rng.integers(0, 30, 300)
    keep = ~np.isin(truth_users * 30 + truth_items, seen_users * 30 + seen_items)
    args = (users, items, truth_users[keep], truth_items[keep], seen_users, seen_items, [5, 10])
    whole, batched = rank_metrics(*args, batch_users=1000), rank_metrics(*args, batch_users=7)
    for name in whole:
        assert np.allclose(whole[name], batched[name])


def test_validation_on_a_seeded_subset_of_users(tiny_config, tiny_interactions):
    """eval.valid_users: the same users for the same seed, only users with validation pairs, and the
    metrics are those of exactly that subset (test is never restricted)."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    model, _ = build_model(tiny_config, tiny_interactions, mask, torch.device("cpu"))
    table = tiny_interactions.table
    with_validation = np.unique(table.loc[table["split"] == "valid", "user"])
    subset = validation_users(tiny_interactions, 10, seed=0)
    assert len(subset) == 10 and np.isin(subset, with_validation).all()
    assert np.array_equal(subset, validation_users(tiny_interactions, 10, seed=0))
    assert not np.array_equal(subset, validation_users(tiny_interactions, 10, seed=1))
    assert validation_users(tiny_interactions, 0, seed=0) is None
    assert validation_users(tiny_interactions, len(with_validation), seed=0) is None
    flags = np.zeros(tiny_interactions.n_users, dtype=bool)
    flags[subset] = True
    everyone = evaluate(model, tiny_interactions, "valid", {"subset": flags})
    assert evaluate(model, tiny_interactions, "valid", users=subset)["recall@20"] == pytest.approx(
        everyone["subset/recall@20"]
    )
    assert everyone["subset_users"] == 10
