"""Full-ranking evaluation: every item is scored, training items are masked, Recall@K and NDCG@K.

No sampled negatives.  Scores are ``user_vectors @ item_vectors.T`` so any model that can express
its score as a dot product (all of ours, by concatenating views) is evaluated by the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from fedshare.data.interactions import Interactions

if TYPE_CHECKING:
    from fedshare.federated.simulation import Model


def rank_metrics(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    truth_users: np.ndarray,
    truth_items: np.ndarray,
    seen_users: np.ndarray,
    seen_items: np.ndarray,
    ks: list[int],
    batch_users: int = 1024,
) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K for every user that has ground truth.

    ``truth_*`` are the held-out (user, item) pairs; ``seen_*`` the pairs to exclude from the
    ranking (training, and validation when testing).  Returns {"users": ids, "recall@K": [...], ...}.
    """
    device = user_vectors.device
    n_items = item_vectors.shape[0]
    users = np.unique(truth_users)
    top = max(ks)
    discounts = 1.0 / torch.log2(torch.arange(2, top + 2, device=device, dtype=torch.float32))
    truth_sorted = _group(truth_users, truth_items)
    seen_sorted = _group(seen_users, seen_items)
    out: dict[str, list[torch.Tensor]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    for start in range(0, len(users), batch_users):
        chunk = users[start : start + batch_users]
        scores = user_vectors[torch.as_tensor(chunk, device=device)] @ item_vectors.T
        rows, cols = _pairs_for(chunk, *seen_sorted)
        scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        truth = torch.zeros(len(chunk), n_items, dtype=torch.bool, device=device)
        rows, cols = _pairs_for(chunk, *truth_sorted)
        truth[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = True
        n_truth = truth.sum(1).to(torch.float32)
        ranked = torch.topk(scores, min(top, n_items), dim=1).indices
        hits = truth.gather(1, ranked).to(torch.float32)
        for k in ks:
            out[f"recall@{k}"].append(hits[:, :k].sum(1) / n_truth)
            dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(1)
            ideal_len = n_truth.clamp(max=k).long()
            ideal = torch.cumsum(discounts[:k], 0)[ideal_len - 1]
            out[f"ndcg@{k}"].append(dcg / ideal)
    result = {name: torch.cat(values).cpu().numpy() for name, values in out.items()}
    result["users"] = users
    return result


def summarize(per_user: dict[str, np.ndarray], groups: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Mean of each metric over users; with ``groups`` (name -> bool per user index) also per group."""
    summary = {name: float(values.mean()) for name, values in per_user.items() if name != "users"}
    for group, flags in (groups or {}).items():
        member = flags[per_user["users"]]
        summary[f"{group}_users"] = int(member.sum())
        for name, values in per_user.items():
            if name != "users" and member.any():
                summary[f"{group}/{name}"] = float(values[member].mean())
    return summary


def _group(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(users, kind="stable")
    users, items = np.asarray(users)[order], np.asarray(items)[order]
    return users, items, order


def _pairs_for(
    chunk: np.ndarray, users: np.ndarray, items: np.ndarray, _order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row in chunk, item) for every pair whose user is in the sorted ``chunk``."""
    lo = np.searchsorted(users, chunk, side="left")
    hi = np.searchsorted(users, chunk, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(chunk)), counts)
    index = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
    return rows, items[index]


def evaluate(
    model: Model,
    interactions: Interactions,
    split: str,
    groups: dict[str, np.ndarray] | None = None,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking metrics on ``valid`` (train masked) or ``test`` (train and valid masked), over
    every user with ground truth in ``split`` or, with ``users``, over those of them only."""
    table = interactions.table
    truth = table[table["split"] == split]
    if users is not None:
        truth = truth[truth["user"].isin(users)]
    seen = table[table["split"] == "train"] if split == "valid" else table[table["split"] != "test"]
    user_vectors, item_vectors = model.scoring_vectors()
    per_user = rank_metrics(
        user_vectors,
        item_vectors,
        truth["user"].to_numpy(),
        truth["item"].to_numpy(),
        seen["user"].to_numpy(),
        seen["item"].to_numpy(),
        model.config.eval.ks,
        model.config.eval.batch_users,
    )
    return summarize(per_user, groups)


def validation_users(interactions: Interactions, count: int, seed: int) -> np.ndarray | None:
    """A fixed, seeded subset of ``count`` users with validation pairs (None: all of them).

    Validation only selects the round; on Gowalla a pass over all 29,858 users costs as much as
    several rounds, and a few thousand users rank the rounds the same way within the noise.
    """
    table = interactions.table
    candidates = np.unique(table.loc[table["split"] == "valid", "user"].to_numpy())
    if count <= 0 or count >= len(candidates):
        return None
    rng = np.random.default_rng([seed, 13])
    return np.sort(rng.choice(candidates, size=count, replace=False))


def auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """ROC AUC of telling positives from negatives by score (Mann-Whitney U, ties counted half)."""
    scores = np.concatenate([positive_scores, negative_scores])
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def server_scores(model: Model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The server model's score g_u . g_i for (user, item) pairs."""
    return server_attack_scores(model, users, items)["graph"]


def server_attack_scores(model: Model, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    """Every (user, item) score the server can compute from what it holds after unlearning.

    ``graph``: its LightGCN output g_u . g_i; ``graph_layer0``: the layer-0 rows e_u . e_i;
    ``graph_user_item_table``: g_u . q_i, the user's graph vector against the federated item table Q
    that the alignment ties to the graph.  The server holds no other user vector (h_u stays on the
    device), so these are all the per-user scores it can form.
    """
    server = model.server
    with torch.no_grad():
        global_users, global_items = server.propagate()
        if global_users is None:
            zeros = np.zeros(len(users))
            return {"graph": zeros, "graph_layer0": zeros, "graph_user_item_table": zeros}
        u = torch.tensor(users, device=global_users.device)
        i = torch.tensor(items, device=global_users.device)

        def dot(user_table: torch.Tensor, item_table: torch.Tensor) -> np.ndarray:
            return (user_table[u] * item_table[i]).sum(-1).cpu().numpy()

        return {
            "graph": dot(global_users, global_items),
            "graph_layer0": dot(server.graph_users, server.graph_items),
            "graph_user_item_table": dot(global_users, server.item_table),
        }


def device_scores(model: Model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The full score the user's device computes (its private state plus the downloaded tables)."""
    user_vectors, item_vectors = model.scoring_vectors()
    u = torch.tensor(users, device=user_vectors.device)
    i = torch.tensor(items, device=user_vectors.device)
    return (user_vectors[u] * item_vectors[i]).sum(-1).cpu().numpy()


def two_sided(value: float) -> float:
    """An attacker who may flip the decision: items that stand out by *low* scores leak as well."""
    return max(value, 1.0 - value)


def never_seen_items(interactions: Interactions, users: np.ndarray, seed: int) -> np.ndarray:
    """One random item per entry of ``users`` that this user never interacted with (any split)."""
    rng = np.random.default_rng([seed, 11])
    seen = set(zip(interactions.table["user"].tolist(), interactions.table["item"].tolist()))
    never = np.empty(len(users), dtype=np.int64)
    for position, user in enumerate(users.tolist()):
        item = int(rng.integers(interactions.n_items))
        while (user, item) in seen:
            item = int(rng.integers(interactions.n_items))
        never[position] = item
    return never


def mean_rank(model: Model, users: np.ndarray, items: np.ndarray, chunk: int = 1024) -> float:
    """Mean rank (1 = top) of each pair's item in the server's full ranking g_u . G_I for its user.

    In chunks of pairs: all at once is pairs x items floats (gigabytes on Gowalla)."""
    with torch.no_grad():
        global_users, global_items = model.server.propagate()
        if global_users is None:
            return float("nan")
        total = 0.0
        for start in range(0, len(users), chunk):
            u = torch.tensor(users[start : start + chunk], device=global_users.device)
            i = torch.tensor(items[start : start + chunk], device=global_users.device)
            scores = global_users[u] @ global_items.T
            own = scores[torch.arange(len(u), device=scores.device), i]
            total += float(((scores > own.unsqueeze(1)).sum(1) + 1).sum())
        return total / max(len(users), 1)


def forgetting_metrics(
    model: Model, interactions: Interactions, pairs: pd.DataFrame, seed: int, device_attack: bool = False
) -> dict[str, Any]:
    """Membership attacks on the unshared pairs against random never-seen pairs of the same users.

    ``mia_auc``: ROC AUC of the server's LightGCN score g_u . g_i (0.5 = indistinguishable).
    ``mia_auc_server``: the strongest attack on everything the server holds (``server_attack_scores``,
    each two-sided), with each score's AUC in ``mia_auc_by_score``.  ``mia_auc_device`` (with
    ``device_attack``, for delete requests, whose data leaves the device too): the two-sided AUC of
    the device's own full score.  ``unshared_mean_rank``: mean rank of each unshared item in the
    server's ranking for its user (1 = top).  Compare every value with the same measure on retrain.
    """
    users, items = pairs["user"].to_numpy(), pairs["item"].to_numpy()
    never = never_seen_items(interactions, users, seed)
    # Members and non-members scored in one call (one propagation); the first len(users) are members.
    both_users, both_items, n = np.concatenate([users, users]), np.concatenate([items, never]), len(users)
    scores = server_attack_scores(model, both_users, both_items)
    by_score = {name: auc(values[:n], values[n:]) for name, values in scores.items()}
    metrics: dict[str, Any] = {
        "mia_auc": by_score["graph"],
        "mia_auc_server": max(two_sided(value) for value in by_score.values()),
        "mia_auc_by_score": by_score,
        "unshared_mean_rank": mean_rank(model, users, items),
    }
    if device_attack and model.clients is not None:
        device = device_scores(model, both_users, both_items)
        metrics["mia_auc_device"] = two_sided(auc(device[:n], device[n:]))
    return metrics


def unlearning_metrics(
    model: Model, interactions: Interactions, mask, pairs, seed: int, device_attack: bool = False
) -> dict[str, Any]:
    requesting = np.zeros(interactions.n_users, dtype=bool)
    requesting[pairs["user"].unique()] = True
    metrics = evaluate(model, interactions, "test", {"requesting": requesting, "others": ~requesting})
    metrics.update(forgetting_metrics(model, interactions, pairs, seed, device_attack))
    return metrics


def embedding_distance(model: Model, reference: Model) -> float:
    """Mean relative L2 distance between the two models' global item representations."""
    with torch.no_grad():
        _, items = model.server.propagate()
        _, reference_items = reference.server.propagate()
        return float(((items - reference_items).norm(dim=1) / reference_items.norm(dim=1).clamp(min=1e-12)).mean())
