"""``contrastive``: FedShare's unlearning (docs/method.md, "Unlearning").

Drop the edges, then a few rounds where the affected nodes are pulled toward a clean target (built
from the round-0 snapshot and the cleaned graph) and pushed away from their contaminated
representations: the one before unlearning and, with more snapshots, the ones along the training
trajectory.  BPR and alignment keep utility.  ``unlearning.snapshots`` says how many of the stored
snapshots it reads (the ablation of docs/results.md).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from fedshare.federated.round import run_round
from fedshare.federated.simulation import Model
from fedshare.model.lightgcn import lightgcn
from fedshare.unlearning.common import (
    UnlearningJob,
    UnlearningResult,
    clean_server,
)
from fedshare.unlearning.snapshots import SnapshotStore


def unlearn(job: UnlearningJob) -> UnlearningResult:
    model, pairs = job.model, job.pairs
    used = used_snapshots(job.snapshots, job.settings.snapshots)
    trajectory = [contaminated_view(model, job.snapshots.load(r)) for r in used[1:]]  # on the old graph
    cleaned = clean_server(job)
    reset_requesting_users(model, pairs, cleaned.generator)
    anchor = job.snapshots.load(used[0]) if used else None
    clean_users, clean_items = clean_target(model, anchor, pairs)
    # The requesting users were just reset to their clean rows: pushing them further away from
    # their old representation would make the withdrawn items stand out by their *low* scores.
    requesting = torch.as_tensor(pairs["user"].unique(), device=cleaned.node_users.device)
    push_users = cleaned.node_users[~torch.isin(cleaned.node_users, requesting)]
    extra_loss = push_pull_loss(
        (clean_users, clean_items),
        [(cleaned.dirty_users, cleaned.dirty_items), *trajectory],
        (push_users, cleaned.node_items),
        job.settings.weight,
        model.config.model.temperature,
    )
    for _ in range(job.settings.rounds):
        run_round(model, cleaned.generator, extra_loss)
    # Kept for the next event: the round-0 snapshot (carried by the stage) and this new state.
    return cleaned.result(
        model, job.settings.rounds, storage_bytes=None, carried_snapshot=model.server.state(), snapshots_read=used
    )


def used_snapshots(snapshots: SnapshotStore | None, count: int) -> list[int]:
    """The rounds of the snapshots this event reads: the first ``count`` stored (-1: all; 0: none).

    The first (round 0, taken before any training) is the clean anchor; the later ones hold the data's influence
    at their round and serve as extra negatives."""
    stored = snapshots.rounds() if snapshots is not None else []
    return stored if count < 0 else stored[:count]


def contaminated_view(model: Model, snapshot: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A snapshot's LightGCN output over the server graph *before* the edges are dropped: where the
    affected nodes stood at that round, with the withdrawn data in them."""
    server = model.server
    with torch.no_grad():
        return lightgcn(
            snapshot["graph_users"].to(server.device),
            snapshot["graph_items"].to(server.device),
            server.adjacency,
            model.config.model.server_layers,
        )


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


def clean_target(
    model: Model, anchor: dict[str, torch.Tensor] | None, pairs: pd.DataFrame
) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN over the cleaned graph, with the requesting users' and unshared items' layer-0
    embeddings taken from the ``anchor`` snapshot (round 0: before any data was learned).  Without a
    snapshot the target is the current state on the cleaned graph."""
    server = model.server
    users = server.graph_users.detach().clone()
    items = server.graph_items.detach().clone()
    if anchor is not None:
        first = anchor
        touched_users = torch.as_tensor(pairs["user"].unique(), device=server.device)
        touched_items = torch.as_tensor(pairs["item"].unique(), device=server.device)
        users[touched_users] = first["graph_users"].to(server.device)[touched_users]
        items[touched_items] = first["graph_items"].to(server.device)[touched_items]
    with torch.no_grad():
        return lightgcn(users, items, server.adjacency, model.config.model.server_layers)


def push_pull_loss(target: tuple, contaminated: list[tuple], nodes: tuple, weight: float, temperature: float):
    """The contrastive unlearning term on the affected nodes, as a function of this round's propagation:
    -log( e^{cos(z,z+)/t} / (e^{cos(z,z+)/t} + sum_k e^{cos(z,z-_k)/t}) ), averaged, times ``weight``.

    ``target`` is the clean (users, items) view z+; ``contaminated`` the (users, items) views z-_k."""

    def rows(view: tuple) -> torch.Tensor:
        return torch.cat([view[0][nodes[0]], view[1][nodes[1]]])

    positive = rows(target)
    negatives = [rows(view) for view in contaminated]

    def loss(global_users: torch.Tensor, global_items: torch.Tensor) -> torch.Tensor:
        z = torch.cat([global_users[nodes[0]], global_items[nodes[1]]])
        pos = F.cosine_similarity(z, positive, dim=-1) / temperature
        negs = [F.cosine_similarity(z, negative, dim=-1) / temperature for negative in negatives]
        return weight * (torch.logsumexp(torch.stack([pos, *negs]), 0) - pos).mean()

    return loss
