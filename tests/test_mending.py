"""Graph mending (model.mend_edges): predicted edges that densify the server graph, from the server's own state."""

import dataclasses

import torch

from fedshare.config import SharingConfig
from fedshare.data.sharing import build_mask
from fedshare.federated.simulation import build_model
from fedshare.training import train


def _mending(config, per_user: int, every: int = 2):
    return dataclasses.replace(config, model=dataclasses.replace(config.model, mend_edges=per_user, mend_every=every))


def _adjacency_edges(server) -> set[tuple[int, int]]:
    """(user, item) pairs with an entry in the adjacency the server propagates over."""
    crow, col = server.adjacency.crow_indices(), server.adjacency.col_indices()
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1), crow[1:] - crow[:-1])
    n_users = server.graph.n_users
    return {(int(r), int(c) - n_users) for r, c in zip(rows, col) if r < n_users}


def test_mending_adds_each_sharing_users_best_scored_unshared_items(tiny_config, tiny_interactions):
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    model, _ = build_model(_mending(tiny_config, per_user=3), tiny_interactions, mask, torch.device("cpu"))
    server = model.server
    shared = server.graph.pairs()
    assert _adjacency_edges(server) == shared and server.mended_users.numel() == 0  # nothing before a mending

    global_users, global_items = server.propagate()  # mending must be recomputable from the server alone
    expected = set()
    for user in server.users_with_edges.tolist():
        scores = global_items @ global_users[user]
        scores[[item for u, item in shared if u == user]] = -torch.inf
        expected |= {(user, int(item)) for item in scores.topk(3).indices}
    server.mend()
    mended = set(zip(server.mended_users.tolist(), server.mended_items.tolist()))
    assert len(server.mended_users) == 3 * len(server.users_with_edges)
    assert mended == expected and not mended & shared
    # Propagation runs over shared plus predicted edges; the BPR loss and its negatives still see shared edges only.
    assert _adjacency_edges(server) == shared | mended
    assert server.graph.pairs() == shared
    # A new graph (an unshare) drops the predicted edges until the next mending.
    server.set_graph(server.graph)
    assert _adjacency_edges(server) == shared and server.mended_users.numel() == 0


def test_a_mended_model_keeps_its_predicted_edges_in_its_state(tiny_config, tiny_interactions):
    """The best round is restored with the graph it was scored on; mending off keeps the state as before."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    config = _mending(tiny_config, per_user=2, every=2)
    result = train(config, tiny_interactions, mask, progress=False)
    state = result.model.server.state()
    assert state["mended_users"].numel() == 2 * len(result.model.server.users_with_edges)

    fresh, _ = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    fresh.load_state(result.model.state())
    for restored, trained in zip(fresh.scoring_vectors(), result.model.scoring_vectors()):
        assert torch.equal(restored, trained)

    plain, _ = build_model(tiny_config, tiny_interactions, mask, torch.device("cpu"))
    assert set(plain.server.state()) == {"item_table", "graph_users", "graph_items"}


def test_mending_changes_training_and_off_is_the_default(tiny_config, tiny_interactions):
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    assert tiny_config.model.mend_edges == 0
    plain = train(tiny_config, tiny_interactions, mask, progress=False).model.scoring_vectors()[1]
    mended = train(_mending(tiny_config, per_user=2), tiny_interactions, mask, progress=False)
    mended = mended.model.scoring_vectors()[1]
    assert not torch.allclose(plain, mended)
