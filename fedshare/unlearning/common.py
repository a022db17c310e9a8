"""What every unlearning method receives (an ``UnlearningJob``) and returns (an ``UnlearningResult``),
and the first step all in-place methods share: the server takes the cleaned graph."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from fedshare.config import UnlearningConfig
from fedshare.data.interactions import Interactions
from fedshare.data.sharing import SharedGraph, global_view_weights, shared_graph
from fedshare.federated.client import ClientStore, client_updates
from fedshare.federated.simulation import Model
from fedshare.unlearning.snapshots import SnapshotStore

if TYPE_CHECKING:
    from fedshare.unlearning.fru import UpdateLog


@dataclass
class UnlearningJob:
    """One unlearning event: the trained model and the state of the data after the requests."""

    model: Model  # changed in place by every method but retrain
    interactions: Interactions  # after the requests (a delete removes the pairs from the devices too)
    new_mask: pd.DataFrame  # the sharing masks after the requests
    pairs: pd.DataFrame  # the accepted (user, item) pairs to forget
    settings: UnlearningConfig  # rounds, weight, hops
    seed: int
    snapshots: SnapshotStore | None = None  # contrastive: the clean round-0 embeddings
    update_log: UpdateLog | None = None  # fru: the log written during training
    options: dict[str, Any] = field(default_factory=dict)  # method-specific extras (fru: calibrated, ...)
    delete: bool = False  # a delete request: the data also left the requesting devices


@dataclass
class UnlearningResult:
    model: Model
    seconds: float
    rounds: int
    affected_users: int
    affected_items: int
    storage_bytes: int | None = 0  # bytes the method keeps for later events; None: the snapshots kept
    carried_snapshot: dict[str, torch.Tensor] | None = None  # a server state to keep as a snapshot
    snapshots_read: list[int] = field(default_factory=list)  # rounds of the snapshots the method used


@dataclass
class CleanedServer:
    """The state after the server took the cleaned graph: what was there before, and who is affected."""

    generator: torch.Generator
    dirty_users: torch.Tensor | None  # the global views before unlearning (the contrastive negatives)
    dirty_items: torch.Tensor | None
    node_users: torch.Tensor  # the affected nodes: ``hops`` around the requesting users and items
    node_items: torch.Tensor

    def result(self, model: Model, rounds: int, **extra: Any) -> UnlearningResult:
        return UnlearningResult(model, 0.0, rounds, len(self.node_users), len(self.node_items), **extra)


def clean_server(job: UnlearningJob) -> CleanedServer:
    """Drop the unshared edges from the server graph (and, for a delete, the pairs from the devices).

    The generator (seed + 1) is the one every in-place method continues with.
    """
    model, interactions = job.model, job.interactions
    generator = torch.Generator(device=model.server.device)
    generator.manual_seed(job.seed + 1)
    old_graph = model.server.graph
    with torch.no_grad():
        dirty_users, dirty_items = model.server.propagate()
    replace_graph(model, job.new_mask, interactions)
    if model.clients is not None:  # a delete request also changes the device's data
        fresh = ClientStore(
            interactions.part("train"),
            model.clients.shares.cpu().numpy(),
            interactions.n_users,
            interactions.n_items,
            model.config.model,
            generator,
            model.server.device,
        )
        fresh.load_state(model.clients.state())
        model.clients = fresh
        if job.delete:
            refit_deleting_devices(model, job.pairs["user"].unique(), generator, job.settings.device_steps)
    node_users, node_items = affected_nodes(old_graph, job.pairs, job.settings.hops)
    return CleanedServer(generator, dirty_users, dirty_items, node_users, node_items)


def refit_deleting_devices(model: Model, users, generator: torch.Generator, steps: int) -> None:
    """The device's own part of a delete: its private user vector was trained on the deleted items and
    still ranks them high on the device (the device-score attack of docs/method.md).  Each deleting
    device redraws that vector and its Adam state, as at the start of training, and fits it again
    with ``steps`` local steps on the data it still holds, against the downloaded tables.  The item
    changes of these steps stay on the device; nothing is uploaded."""
    store, config = model.clients, model.config
    users = torch.as_tensor(users, device=store.user_emb.device)
    with torch.no_grad():
        fresh = torch.randn(len(users), store.user_emb.shape[1], generator=generator, device=users.device)
        store.user_emb[users] = fresh * config.model.init_std
        store.exp_avg[users], store.exp_avg_sq[users], store.steps[users] = 0.0, 0.0, 0
    users = users[store.counts[users] > 0]  # a device left with no data has nothing to fit
    if steps <= 0 or users.numel() == 0:
        return
    broadcast = model.server.broadcast(*model.server.propagate())
    federated = dataclasses.replace(config.federated, local_steps=steps)
    client_updates(store, broadcast, torch.sort(users).values, config.model, federated, generator)


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
