"""Unsharing: requests, embedding snapshots, and removing unshared data's influence from the server.

Methods (docs/method.md, "Unlearning"):

* ``none``: drop the unshared edges from the server graph, nothing else (lower bound).
* ``finetune``: drop the edges, then a few federated rounds on the remaining data.
* ``contrastive``: drop the edges, then a few rounds where the affected nodes are pulled toward a
  clean target (built from the round-0 snapshot and the cleaned graph) and pushed away from their
  contaminated pre-unlearning representation, with BPR and alignment keeping utility.
* ``retrain``: train from scratch with the new masks (the reference).
* ``fru``: the FRU baseline (``fedshare/fru.py``): roll back to round 0 and replay the update log
  written during training, calibrated, with the affected server rows recomputed fresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data import DataError, Interactions
from .models import lightgcn
from .sharing import SharedGraph, global_view_weights, shared_graph
from .storage import load_tensors, save_tensors
from .training import Model, run_round

METHODS = ("contrastive", "finetune", "none", "retrain", "fru")


# -- snapshots -------------------------------------------------------------------------------------

class SnapshotStore:
    """K server-embedding snapshots on disk, each written atomically with a SHA-256 sidecar."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, round_number: int) -> Path:
        return self.folder / f"snapshot-{round_number:05d}.pt"

    def save(self, round_number: int, server_state: dict[str, torch.Tensor]) -> int:
        info = save_tensors(self.path(round_number), {name: server_state[name] for name in SNAPSHOT_TABLES})
        return info["bytes"]

    def rounds(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("snapshot-*.pt"))

    def load(self, round_number: int) -> dict[str, torch.Tensor]:
        return load_tensors(self.path(round_number))

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("snapshot-*.pt*"))


SNAPSHOT_TABLES = ("graph_users", "graph_items", "item_table")


# -- requests --------------------------------------------------------------------------------------

@dataclass
class Requests:
    """Accepted (user, item) index pairs to unshare, and the rejected rows with their reasons."""

    pairs: pd.DataFrame     # request_id, user_id, item_id, user, item
    rejected: pd.DataFrame  # request_id, user_id, item_id, reason


MAX_REQUEST_BYTES = 64 * 2**20  # ~2 million requests; larger files are a mistake or an attack


def read_requests(path: Path) -> pd.DataFrame:
    """CSV with columns request_id,user_id,item_id (empty item_id = all the user's shared items)."""
    if path.exists() and path.stat().st_size > MAX_REQUEST_BYTES:
        raise DataError(f"request file {path} is {path.stat().st_size} bytes; the limit is {MAX_REQUEST_BYTES} "
                        "(split it into several files)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"request file {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - whatever the bytes, the user gets one line, not a traceback
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataError(f"request file {path} cannot be parsed ({first_line})") from None
    missing = {"request_id", "user_id", "item_id"} - set(table.columns)
    if missing:
        raise DataError(f"request file {path} lacks column(s) {', '.join(sorted(missing))}")
    return table[["request_id", "user_id", "item_id"]]


def resolve_requests(table: pd.DataFrame, mask: pd.DataFrame) -> Requests:
    """Check each request against the current masks; expand 'all items' requests."""
    shared = mask[mask["shared"]]
    by_user = {user_id: group for user_id, group in shared.groupby("user_id")}
    known_users = set(mask["user_id"].tolist())
    accepted, rejected, seen_ids = [], [], set()
    for row in table.itertuples(index=False):
        reason = None
        user_id = _as_id(row.user_id)
        item_id = _as_id(row.item_id) if str(row.item_id).strip() else None
        if not str(row.request_id).strip():
            reason = "request_id is empty"
        elif row.request_id in seen_ids:
            reason = "duplicate request_id"
        elif user_id is None or (str(row.item_id).strip() and item_id is None):
            reason = "user_id and item_id must be non-negative integers"
        elif user_id not in known_users:
            reason = "unknown user"
        elif user_id not in by_user:
            reason = "user shares nothing"
        else:
            group = by_user[user_id]
            chosen = group if item_id is None else group[group["item_id"] == item_id]
            if chosen.empty:
                reason = "item not currently shared by this user"
            else:
                accepted.append(chosen.assign(request_id=row.request_id)[["request_id", "user_id", "item_id", "user", "item"]])
        seen_ids.add(row.request_id)
        if reason:
            rejected.append({"request_id": row.request_id, "user_id": row.user_id, "item_id": row.item_id, "reason": reason})
    pairs = pd.concat(accepted).drop_duplicates(["user", "item"]) if accepted else \
        pd.DataFrame(columns=["request_id", "user_id", "item_id", "user", "item"])
    return Requests(pairs.reset_index(drop=True), pd.DataFrame(rejected, columns=["request_id", "user_id", "item_id", "reason"]))


def _as_id(value: str) -> int | None:
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def draw_requests(mask: pd.DataFrame, fraction: float, scope: str, seed: int) -> pd.DataFrame:
    """A random deletion set among sharing users: all their shared items, or half of them (partial)."""
    rng = np.random.default_rng([seed, 7])
    sharing = np.sort(mask.loc[mask["shared"], "user_id"].unique())
    count = max(1, int(round(fraction * len(sharing))))
    chosen = rng.choice(sharing, size=count, replace=False)
    rows = []
    for number, user_id in enumerate(sorted(chosen.tolist())):
        if scope == "all":
            rows.append({"request_id": f"r{number:05d}", "user_id": user_id, "item_id": ""})
            continue
        items = mask.loc[mask["shared"] & (mask["user_id"] == user_id), "item_id"].to_numpy()
        for k, item_id in enumerate(rng.choice(items, size=max(1, len(items) // 2), replace=False).tolist()):
            rows.append({"request_id": f"r{number:05d}-{k}", "user_id": user_id, "item_id": item_id})
    return pd.DataFrame(rows, columns=["request_id", "user_id", "item_id"])


def apply_to_mask(mask: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    keys = set(zip(pairs["user"].tolist(), pairs["item"].tolist()))
    new = mask.copy()
    hit = [pair in keys for pair in zip(new["user"].tolist(), new["item"].tolist())]
    new.loc[hit, "shared"] = False
    return new


def apply_delete(interactions: Interactions, mask: pd.DataFrame, pairs: pd.DataFrame) -> tuple[Interactions, pd.DataFrame]:
    """Right to be forgotten: the pairs also leave the device's training data."""
    keys = set(zip(pairs["user"].tolist(), pairs["item"].tolist()))
    keep = [pair not in keys for pair in zip(interactions.table["user"].tolist(), interactions.table["item"].tolist())]
    table = interactions.table[keep].reset_index(drop=True)
    keep_mask = [pair not in keys for pair in zip(mask["user"].tolist(), mask["item"].tolist())]
    return Interactions(table, interactions.user_ids, interactions.item_ids), mask[keep_mask].reset_index(drop=True)


# -- unlearning ------------------------------------------------------------------------------------

def replace_graph(model: Model, mask: pd.DataFrame, interactions: Interactions) -> None:
    """Give the server the cleaned shared graph; keep its embeddings and optimizer."""
    model.server.set_graph(shared_graph(mask, interactions.n_users, interactions.n_items))
    device = model.server.device
    if model.clients is not None:
        weights = global_view_weights(mask, interactions.n_users, model.config.model.global_weight)
        model.clients.shares = torch.as_tensor(weights, device=device)


def affected_nodes(old_graph: SharedGraph, pairs: pd.DataFrame, hops: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Users and items within ``hops`` of the requesting users and unshared items on the old graph."""
    users = torch.zeros(old_graph.n_users, dtype=torch.bool, device=old_graph.users.device)
    items = torch.zeros(old_graph.n_items, dtype=torch.bool, device=old_graph.users.device)
    users[torch.tensor(pairs["user"].to_numpy(), device=users.device)] = True
    items[torch.tensor(pairs["item"].to_numpy(), device=users.device)] = True
    for _ in range(hops):
        new_users = users.clone()
        new_users[old_graph.users[items[old_graph.items]]] = True
        new_items = items.clone()
        new_items[old_graph.items[users[old_graph.users]]] = True
        users, items = new_users, new_items
    return torch.nonzero(users).squeeze(1), torch.nonzero(items).squeeze(1)


@dataclass
class UnlearningResult:
    model: Model
    seconds: float
    rounds: int
    affected_users: int
    affected_items: int


def unlearn(model: Model, interactions: Interactions, new_mask: pd.DataFrame, pairs: pd.DataFrame, method: str,
            snapshots: SnapshotStore | None, rounds: int, weight: float, hops: int, seed: int,
            update_log=None, fru_options: dict | None = None) -> UnlearningResult:
    """Remove the unshared pairs' influence from a trained model (in place for all but retrain).

    ``update_log`` (a ``fru.UpdateLog`` written during training) is needed by ``fru`` only, and
    ``fru_options`` (``calibrated``, ``calibration_fraction``) go to ``fru.replay``; the result's
    ``rounds`` is then the number of replayed rounds.
    """
    if method == "fru" and update_log is None:
        raise DataError("unlearning method fru needs the update log written during training "
                        "(train with unlearning.fru_alpha > 0)")
    started = time.perf_counter()
    generator = torch.Generator(device=model.server.device)
    generator.manual_seed(seed + 1)
    if method == "retrain":
        from .training import train
        result = train(model.config, interactions, new_mask, progress=False)
        return UnlearningResult(result.model, time.perf_counter() - started, result.rounds_run, 0, 0)
    old_graph = model.server.graph
    with torch.no_grad():
        dirty_users, dirty_items = model.server.propagate()
    replace_graph(model, new_mask, interactions)
    if model.clients is not None:  # a delete request also changes the device's data
        from .federated import ClientStore
        train = interactions.part("train")
        fresh = ClientStore(train, model.clients.shares.cpu().numpy(), interactions.n_users, interactions.n_items,
                            model.config.model, generator, model.server.device)
        fresh.load_state(model.clients.state())
        model.clients = fresh
    node_users, node_items = affected_nodes(old_graph, pairs, hops)
    if method == "none":
        return UnlearningResult(model, time.perf_counter() - started, 0, len(node_users), len(node_items))
    if method == "fru":
        from .fru import replay
        train = interactions.part("train")
        still_on_device = pairs.merge(train[["user", "item"]], on=["user", "item"], how="left", indicator=True)
        deleted = still_on_device.loc[still_on_device["_merge"] == "left_only", "user"].unique()
        replayed = replay(model, update_log, node_users, node_items, torch.as_tensor(deleted, dtype=torch.long),
                          generator=generator, **(fru_options or {}))
        return UnlearningResult(model, time.perf_counter() - started, replayed, len(node_users), len(node_items))
    extra_loss = None
    if method == "contrastive":
        reset_requesting_users(model, pairs, generator)
        clean_users, clean_items = clean_target(model, snapshots, pairs)
        # The requesting users were just reset to their clean rows: pushing them further away from
        # their old representation would make the withdrawn items stand out by their *low* scores.
        requesting = torch.as_tensor(pairs["user"].unique(), device=node_users.device)
        push_users = node_users[~torch.isin(node_users, requesting)]
        extra_loss = push_pull_loss((clean_users, clean_items, dirty_users, dirty_items), (push_users, node_items),
                                    weight, model.config.model.temperature)
    for _ in range(rounds):
        run_round(model, generator, extra_loss)
    return UnlearningResult(model, time.perf_counter() - started, rounds, len(node_users), len(node_items))


def reset_requesting_users(model: Model, pairs: pd.DataFrame, generator: torch.Generator) -> None:
    """Give each requesting user's server node a fresh random embedding, drawn like the initial ones.

    A user's layer-0 row is trained only by that user's own shared edges, so it memorises them; the
    contrastive push alone leaves much of that in place (its loss saturates once the node is closer to
    the clean target than to the dirty one).  The round-0 row is not a good replacement either: the
    items the user liked moved toward it early in training, so it still points at them.  A fresh
    draw is what a never-trained node looks like; a user who keeps some shared edges re-learns them
    in the unlearning rounds.
    """
    server = model.server
    users = torch.as_tensor(pairs["user"].unique(), device=server.device)
    fresh = torch.randn(len(users), server.graph_users.shape[1], generator=generator, device=server.device)
    with torch.no_grad():
        server.graph_users[users] = fresh * model.config.model.init_std


def clean_target(model: Model, snapshots: SnapshotStore | None, pairs: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN over the cleaned graph, with the requesting users' and unshared items' layer-0
    embeddings taken from the round-0 snapshot (before any data was learned)."""
    server = model.server
    users = server.graph_users.detach().clone()
    items = server.graph_items.detach().clone()
    if snapshots is not None and snapshots.rounds():
        first = snapshots.load(snapshots.rounds()[0])
        touched_users = torch.as_tensor(pairs["user"].unique(), device=server.device)
        touched_items = torch.as_tensor(pairs["item"].unique(), device=server.device)
        users[touched_users] = first["graph_users"].to(server.device)[touched_users]
        items[touched_items] = first["graph_items"].to(server.device)[touched_items]
    with torch.no_grad():
        return lightgcn(users, items, server.adjacency, model.config.model.server_layers)


def push_pull_loss(targets: tuple, nodes: tuple, weight: float, temperature: float):
    """The contrastive unlearning term on the affected nodes, as a function of this round's propagation:
    -log( e^{cos(z,z+)/t} / (e^{cos(z,z+)/t} + e^{cos(z,z-)/t}) ), averaged, times ``weight``."""
    clean_users, clean_items, dirty_users, dirty_items = targets
    positive = torch.cat([clean_users[nodes[0]], clean_items[nodes[1]]])
    negative = torch.cat([dirty_users[nodes[0]], dirty_items[nodes[1]]])

    def loss(global_users: torch.Tensor, global_items: torch.Tensor) -> torch.Tensor:
        z = torch.cat([global_users[nodes[0]], global_items[nodes[1]]])
        pos = F.cosine_similarity(z, positive, dim=-1) / temperature
        neg = F.cosine_similarity(z, negative, dim=-1) / temperature
        return weight * (torch.logsumexp(torch.stack([pos, neg]), 0) - pos).mean()

    return loss


# -- forgetting measures ---------------------------------------------------------------------------

def auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """ROC AUC of telling positives from negatives by score (Mann-Whitney U, ties counted half)."""
    scores = np.concatenate([positive_scores, negative_scores])
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def server_scores(model: Model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The server model's score g_u . g_i for (user, item) pairs."""
    with torch.no_grad():
        global_users, global_items = model.server.propagate()
        if global_users is None:
            return np.zeros(len(users))
        u = torch.tensor(users, device=global_users.device)
        i = torch.tensor(items, device=global_users.device)
        return (global_users[u] * global_items[i]).sum(-1).cpu().numpy()


def forgetting_metrics(model: Model, interactions: Interactions, pairs: pd.DataFrame, seed: int) -> dict[str, float]:
    """MIA AUC (unshared pairs vs never-seen pairs of the same users, by server score) and the mean
    rank of the unshared items in the server model's full ranking for their user (1 = top)."""
    rng = np.random.default_rng([seed, 11])
    users = pairs["user"].to_numpy()
    seen = set(zip(interactions.table["user"].tolist(), interactions.table["item"].tolist()))
    never = []
    for user in users:
        while True:
            item = int(rng.integers(interactions.n_items))
            if (int(user), item) not in seen:
                never.append(item)
                break
    member = server_scores(model, users, pairs["item"].to_numpy())
    non_member = server_scores(model, users, np.array(never))
    with torch.no_grad():
        global_users, global_items = model.server.propagate()
        scores = global_users[torch.tensor(users)] @ global_items.T
        own = scores[torch.arange(len(users)), torch.tensor(pairs["item"].to_numpy())]
        ranks = (scores > own.unsqueeze(1)).sum(1) + 1
    return {"mia_auc": auc(member, non_member), "unshared_mean_rank": float(ranks.float().mean())}
