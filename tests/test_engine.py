"""The vectorized engine against the per-client reference loop, and the privacy boundary."""

import dataclasses

import pytest
import torch

from fedshare.config import SharingConfig
from fedshare.data.sharing import build_mask
from fedshare.federated.round import run_round
from fedshare.federated.server import Server
from fedshare.federated.simulation import build_model
from fedshare.training import train


def _config(tiny_config, **federated):
    return dataclasses.replace(tiny_config, federated=dataclasses.replace(tiny_config.federated, **federated))


@pytest.mark.parametrize("encoder", ["mf", "ego_lightgcn"])
@pytest.mark.parametrize("local_steps, negatives, fraction", [(1, 1, 1.0), (3, 2, 1.0), (2, 1, 0.5)])
def test_vectorized_round_equals_per_client_loop(
    tiny_config, tiny_interactions, encoder, local_steps, negatives, fraction
):
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    states = []
    for implementation in ("vectorized", "loop"):
        config = _config(
            tiny_config,
            implementation=implementation,
            local_steps=local_steps,
            negatives=negatives,
            client_fraction=fraction,
            local_lr=0.5,
        )
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, client_encoder=encoder))
        model, generator = build_model(config, tiny_interactions, mask, torch.device("cpu"))
        for _ in range(2):
            run_round(model, generator)
        states.append(model.state())
    vectorized, loop = states
    for part in ("server", "clients"):
        for name in vectorized[part]:
            assert torch.allclose(vectorized[part][name].float(), loop[part][name].float(), atol=1e-5), (part, name)
    # and training actually moved the parameters
    fresh, _ = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    assert not torch.allclose(fresh.server.state()["item_table"], vectorized["server"]["item_table"])


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_chunked_rounds_equal_one_pass(tiny_config, tiny_interactions, chunk):
    """Clients trained in groups of <= chunk interactions and the server loss over edge chunks give the
    same model as one pass (chunk 1 puts every client, and every edge, in a group of its own)."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    states, losses = [], []
    for chunk_interactions in (0, chunk):
        config = _config(tiny_config, chunk_interactions=chunk_interactions, negatives=2)
        model, generator = build_model(config, tiny_interactions, mask, torch.device("cpu"))
        assert model.server.graph.n_edges > chunk  # the server loss is really chunked
        losses.append([run_round(model, generator)["server_bpr"] for _ in range(3)])
        states.append(model.state())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for part in ("server", "clients"):
        for name in states[0][part]:
            assert torch.allclose(states[0][part][name].float(), states[1][part][name].float(), atol=1e-5), (part, name)


@pytest.mark.parametrize("negatives", [1, 3])
def test_closed_form_bpr_gradients_match_autograd(negatives):
    from fedshare.model.losses import bpr_gradients, bpr_terms

    generator = torch.Generator().manual_seed(0)
    user, pos, neg = (
        torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((40, 8), (40, 8), (40, negatives, 8))
    )
    terms, d_user, d_pos, d_neg = bpr_gradients(user, pos, neg, scale=0.3)
    inputs = [tensor.clone().requires_grad_() for tensor in (user, pos, neg)]
    expected_terms = bpr_terms(*inputs)
    expected = torch.autograd.grad(0.3 * expected_terms.sum(), inputs)
    assert torch.allclose(terms, expected_terms.detach())
    for got, want in zip((d_user, d_pos, d_neg), expected):
        assert torch.allclose(got, want)


@pytest.mark.parametrize("dedupe, negatives", [(False, 1), (False, 2), (True, 1), (True, 3)])
def test_closed_form_client_gradients_match_autograd(tiny_config, dedupe, negatives):
    """The mf clients' hand-written gradients equal autograd's, for separate and deduplicated row copies."""
    from fedshare.federated.client import (
        autograd_client_gradients,
        make_batch,
        mf_client_gradients,
    )

    generator = torch.Generator().manual_seed(1)
    n_users, n_items, n = 5, 12, 30
    interaction_users = torch.sort(torch.randint(0, n_users, (n,), generator=generator)).values
    positives = torch.randint(0, n_items, (n,), generator=generator)
    negative_items = torch.randint(0, n_items, (n, negatives), generator=generator)
    batch = make_batch(torch.unique(interaction_users), interaction_users, positives, negative_items, n_items, dedupe)
    item_table = torch.randn(n_items, 8, generator=generator, dtype=torch.float64)
    user_emb = torch.randn(batch.users.numel(), 8, generator=generator, dtype=torch.float64)
    model = dataclasses.replace(tiny_config.model, client_encoder="mf", client_l2=0.1)
    rows = batch.initial_rows(item_table)
    got_user, got_rows = mf_client_gradients(user_emb, rows, batch, model, total_interactions=50)
    want_user, want_rows = autograd_client_gradients(user_emb, rows, batch, model, total_interactions=50)
    assert torch.allclose(got_user, want_user)
    assert len(got_rows) == len(want_rows)
    for got, want in zip(got_rows, want_rows):
        assert torch.allclose(got, want)


def test_chunked_server_bpr_matches_autograd():
    """The server's chunked, hand-differentiated mean BPR has autograd's value and gradient."""
    from fedshare.model.losses import bpr_terms, chunked_mean_bpr

    generator = torch.Generator().manual_seed(2)
    users, items, negatives = (torch.randint(0, size, (60,), generator=generator) for size in (7, 9, 9))
    tables = [torch.randn(size, 4, generator=generator, dtype=torch.float64, requires_grad=True) for size in (7, 9)]
    # a non-leaf input, like the LightGCN output the server passes in
    user_table, item_table = tables[0] * 2.0, tables[1] * 0.5
    expected = bpr_terms(user_table[users], item_table[items], item_table[negatives].unsqueeze(1)).mean()
    expected_grads = torch.autograd.grad(expected, tables)
    for chunk in (7, 60):
        value = chunked_mean_bpr(tables[0] * 2.0, tables[1] * 0.5, users, items, negatives, chunk)
        assert value.item() == pytest.approx(expected.item(), rel=1e-12)
        for got, want in zip(torch.autograd.grad(value, tables), expected_grads):
            assert torch.allclose(got, want)


def test_client_groups_never_split_a_client_and_respect_the_limit():
    from fedshare.federated.client import client_groups

    ends = torch.tensor([3, 4, 10, 11, 12, 30])  # cumulative interactions of six clients: 3, 1, 6, 1, 1, 18
    assert client_groups(ends, 0) == [(c, c + 1) for c in range(6)]
    assert client_groups(ends, 5) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert client_groups(ends, 100) == [(0, 6)]
    assert client_groups(torch.tensor([], dtype=torch.long), 5) == []


def _integer_tensors(obj, seen=None):
    """Every integer tensor reachable from an object's attributes."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point() and obj.layout == torch.strided:
            yield obj
        return
    children = (
        obj.values()
        if isinstance(obj, dict)
        else obj
        if isinstance(obj, (list, tuple))
        else (vars(obj).values() if hasattr(obj, "__dict__") else ())
    )
    for child in children:
        yield from _integer_tensors(child, seen)


def test_server_never_holds_an_unshared_interaction(tiny_config, tiny_interactions):
    mask = build_mask(tiny_interactions, SharingConfig(policy="uniform"), seed=0)
    result = train(tiny_config, tiny_interactions, mask, progress=False)
    server = result.model.server
    n_items = tiny_interactions.n_items
    shared = set(zip(mask.loc[mask["shared"], "user"], mask.loc[mask["shared"], "item"]))
    private = set(zip(mask.loc[~mask["shared"], "user"], mask.loc[~mask["shared"], "item"]))
    held_out = set(zip(*tiny_interactions.table.query("split != 'train'")[["user", "item"]].to_numpy().T))
    assert private and shared
    # The server's graph is exactly the shared interactions.
    assert server.graph.pairs() == shared
    # The adjacency the server propagates over has an entry for exactly the shared edges.
    crow, col = server.adjacency.crow_indices(), server.adjacency.col_indices()
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1), crow[1:] - crow[:-1])
    edges = {(int(r), int(c) - server.graph.n_users) for r, c in zip(rows, col) if r < server.graph.n_users}
    assert edges == shared
    # The keys the server samples negatives against decode to shared pairs only.
    decoded = {(int(k) // n_items, int(k) % n_items) for k in server.shared_keys}
    assert decoded == shared and not decoded & (private | held_out)
    # Integer data on the server: only the known shared-edge tensors (a new attribute must be vetted here).
    # The user-uniform sampler's index: positions of the shared edges grouped by user, and per-user
    # counts of shared edges (what server.graph.users already says, arranged for sampling).
    n_edges, n_users = server.graph.n_edges, server.graph.n_users
    assert torch.equal(torch.sort(server.edges_by_user).values, torch.arange(n_edges))
    assert torch.equal(server.edge_counts, torch.bincount(server.graph.users, minlength=n_users))
    assert torch.equal(server.edge_starts, torch.cumsum(server.edge_counts, 0) - server.edge_counts)
    assert set(server.users_with_edges.tolist()) == {u for u, _ in shared}
    sampler = (server.edges_by_user, server.edge_counts, server.edge_starts, server.users_with_edges)
    shared_edge_tensors = (server.graph.users, server.graph.items, server.shared_keys, server.items_in_graph)
    vetted = {id(t) for t in (*shared_edge_tensors, *sampler)}
    for tensor in _integer_tensors(server):
        assert id(tensor) in vetted or tensor.numel() <= 1, f"unvetted integer tensor on the server: {tensor.shape}"
    assert set(server.items_in_graph.tolist()) == {i for _, i in shared}


def test_server_is_built_from_the_shared_graph_only():
    import inspect

    parameters = inspect.signature(Server.__init__).parameters
    assert list(parameters)[1] == "graph" and "SharedGraph" in str(parameters["graph"].annotation)
    annotations = " ".join(str(p.annotation) for p in parameters.values())
    assert not any(kind in annotations for kind in ("DataFrame", "Interactions", "ClientStore", "ndarray"))


def test_local_method_gives_the_server_no_interactions(tiny_config, tiny_interactions):
    mask = build_mask(tiny_interactions, SharingConfig(policy="all"), seed=0)
    config = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, method="local"))
    model, _ = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    assert model.server.graph.n_edges == 0 and not model.server.use_graph


def test_fedshare_with_nothing_shared_trains_exactly_the_local_baseline(tiny_config, tiny_interactions):
    """With rho = 0 for everyone the server holds no edge and every global-view weight is 0, so the
    run is `local` step for step (tables 1 and 1b rely on it: `fedshare` at sharing 0 = `local`)."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="0"), seed=0)
    assert not mask["shared"].any()
    results = {}
    for method in ("fedshare", "local"):
        config = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, method=method))
        results[method] = train(config, tiny_interactions, mask, progress=False)
    fedshare, local = results["fedshare"], results["local"]
    assert not fedshare.model.server.use_graph
    assert fedshare.best_round == local.best_round and fedshare.best_validation == local.best_validation
    for fedshare_vectors, local_vectors in zip(fedshare.model.scoring_vectors(), local.model.scoring_vectors()):
        assert torch.equal(fedshare_vectors, local_vectors)


def test_training_learns_and_selects_on_validation(tiny_config, tiny_interactions):
    config = _config(tiny_config, rounds=30)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dim=16))
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    result = train(config, tiny_interactions, mask, progress=False)
    rounds = [entry["round"] for entry in result.history]
    best = max(result.history, key=lambda entry: entry["valid/recall@20"])
    assert result.best_round == best["round"] and rounds == sorted(rounds)
    # the synthetic users like one half of the items: a trained model beats chance (20/60 of the half)
    assert best["valid/recall@20"] > 0.5


def test_server_mini_batches_take_one_step_per_batch_and_learn_faster(tiny_config, tiny_interactions):
    """federated.server_batch: one graph-learner Adam step per mini-batch of shared edges, each on a
    fresh propagation; in the same number of rounds the central ceiling fits its data better."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="all"), seed=0)
    config = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, method="central"))
    losses = {}
    for batch in (0, 64):
        model, generator = build_model(
            _config(config, server_batch=batch), tiny_interactions, mask, torch.device("cpu")
        )
        steps = []
        model.server.graph_optimizer.register_step_post_hook(lambda *_: steps.append(1))
        for _ in range(3):
            run_round(model, generator)
        n_edges = model.server.graph.n_edges
        assert len(steps) == 3 * (1 if batch == 0 else -(-n_edges // batch)), batch
        with torch.no_grad():
            losses[batch] = model.server.graph_bpr_loss(*model.server.propagate()).item()
    assert losses[64] < losses[0]


def test_server_steps_caps_the_graph_steps_of_a_round(tiny_config, tiny_interactions):
    """federated.server_steps: N: only N mini-batches of the shuffled epoch per round, so that a
    round with a small fraction of clients is matched by a few graph steps."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="all"), seed=0)
    steps = []
    model, generator = build_model(
        _config(tiny_config, server_batch=64, server_steps=2), tiny_interactions, mask, torch.device("cpu")
    )
    assert model.server.graph.n_edges > 3 * 64  # an epoch would be more than two steps
    model.server.graph_optimizer.register_step_post_hook(lambda *_: steps.append(1))
    for _ in range(3):
        run_round(model, generator)
    assert len(steps) == 3 * 2


def test_user_uniform_sampling_weighs_every_user_the_same_whatever_their_edge_count(tiny_config, tiny_interactions):
    """federated.server_sampling: users: an epoch is as many draws as shared edges, each a uniform
    user and then one of their edges (LightGCN-PyTorch's sampler), so a light user is drawn as often
    as a heavy one; ``edges`` (the default) takes every edge exactly once."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)  # users share 5 or 10 edges
    by_edges, _ = build_model(_config(tiny_config, server_batch=64), tiny_interactions, mask, torch.device("cpu"))
    epoch = torch.cat(by_edges.server.edge_batches())
    assert torch.equal(torch.sort(epoch).values, torch.arange(by_edges.server.graph.n_edges))

    config = _config(tiny_config, server_batch=64, server_sampling="users")
    model, generator = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    server = model.server
    draws = torch.cat([torch.cat(server.edge_batches()) for _ in range(40)])
    assert len(draws) == 40 * server.graph.n_edges and int(draws.max()) < server.graph.n_edges
    users = server.graph.users[draws]
    per_user = torch.bincount(users, minlength=server.graph.n_users)[server.users_with_edges].double()
    edges_per_user = server.edge_counts[server.users_with_edges].double()
    assert edges_per_user.max() >= 2 * edges_per_user.min()  # light and heavy users in the shared graph
    # Every user is drawn about equally often (binomial noise only), not in proportion to their edges.
    assert (per_user / per_user.mean() - 1).abs().max() < 0.25
    assert torch.corrcoef(torch.stack([per_user, edges_per_user]))[0, 1].abs() < 0.5
    # Within a user, each of their edges comes up.
    first = server.users_with_edges[0]
    assert set(draws[users == first].tolist()) == set(torch.nonzero(server.graph.users == first).flatten().tolist())
    with pytest.raises(Exception, match="server_sampling"):
        _config(tiny_config, server_sampling="items").validate()


def test_time_budget_stops_training_with_a_last_validation(tiny_config, tiny_interactions):
    """federated.max_minutes: once the budget is spent, validate that round and stop (best kept)."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    config = _config(tiny_config, rounds=500, max_minutes=1e-9)  # spent after the first round
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, every=100))
    result = train(config, tiny_interactions, mask, progress=False)
    assert result.rounds_run == 1
    assert [entry["round"] for entry in result.history] == [1] and result.best_round == 1


def test_device_view_gives_private_users_the_mean_of_g_i_over_their_own_items(tiny_config, tiny_interactions):
    """model.device_view = a: user vector [h_u, w_u g_u + a (1 - w_u) mean_{i in D_u} g_i].  A user who
    shares nothing gets a global part built on the device from its own items only."""
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    config = dataclasses.replace(tiny_config, model=dataclasses.replace(tiny_config.model, device_view=0.5))
    model, generator = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    run_round(model, generator)
    with torch.no_grad():
        users, _ = model.scoring_vectors()
        global_users, global_items = model.server.propagate()
    dim = config.model.dim
    train = tiny_interactions.part("train")
    shares = model.clients.shares
    private = int(torch.nonzero(shares == 0)[0])
    partial = int(torch.nonzero((shares > 0) & (shares < 1))[0])
    for user in (private, partial):
        own = torch.tensor(train.loc[train["user"] == user, "item"].to_numpy())
        expected = shares[user] * global_users[user] + 0.5 * (1 - shares[user]) * global_items[own].mean(0)
        assert torch.allclose(users[user, dim:], expected, atol=1e-6), user
    switched_off = dataclasses.replace(config, model=dataclasses.replace(config.model, device_view=0.0))
    model.config = switched_off
    assert torch.count_nonzero(model.scoring_vectors()[0][private, dim:]) == 0
