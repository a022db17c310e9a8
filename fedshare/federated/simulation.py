"""A simulation: the server and (except for ``central``) the simulated clients, and how to score with them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fedshare.config import Config
from fedshare.data.interactions import Interactions
from fedshare.data.sharing import SharedGraph, global_view_weights, shared_graph
from fedshare.federated.client import ClientStore, ego_graph_users
from fedshare.federated.ray_backend import RayBackend
from fedshare.federated.server import Server


@dataclass
class Model:
    """A server and (except for ``central``) the simulated clients, plus how to score with them."""

    method: str
    server: Server
    clients: ClientStore | None
    config: Config
    backend: object | None = None  # run.backend=ray: a ray_backend.RayBackend runs the client step on shards

    def scoring_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) whose dot product is the recommendation score.

        fedshare scores s(u,i) = <h_u, q_i> + w_u * <g_u, g_i>: the local view for everyone, plus the
        global LightGCN view weighted by w_u, the share of u's training data the server holds
        (model.global_weight=ratio; 0 for users who share nothing) or 1 for sharing users (one);
        with model.device_view = a > 0, plus a (1 - w_u) <d_u, g_i> (``weighted_global_users``).
        """
        with torch.no_grad():
            user_parts, item_parts = [], []
            if self.clients is not None:
                user_parts.append(self.local_user_vectors())
                item_parts.append(self.server.item_table.detach())
            global_users, global_items = self.server.propagate()
            if global_users is not None:
                if self.clients is not None:
                    global_users = self.weighted_global_users(global_users, global_items)
                user_parts.append(global_users)
                item_parts.append(global_items)
            return torch.cat(user_parts, 1), torch.cat(item_parts, 1)

    def weighted_global_users(self, global_users: torch.Tensor, global_items: torch.Tensor) -> torch.Tensor:
        """w_u g_u, plus a (1 - w_u) d_u with ``model.device_view = a > 0``.

        d_u is the device-built global view: the mean of the downloaded G_I over *all* the device's
        own training items, computed on the device, so a user who shares nothing (w_u = 0) still
        scores with the graph's item representations, and nothing leaves the device.
        """
        shares = self.clients.shares.unsqueeze(1).to(global_users.dtype)
        weighted = global_users * shares
        weight = self.config.model.device_view
        if weight > 0:
            store = self.clients
            summed = torch.zeros_like(global_users).index_add_(0, store.users, global_items[store.items])
            device_view = summed / store.counts.clamp(min=1).unsqueeze(1).to(summed.dtype)
            weighted = weighted + weight * (1 - shares) * device_view
        return weighted

    def local_user_vectors(self) -> torch.Tensor:
        store = self.clients
        if self.config.model.client_encoder == "mf":
            return store.user_emb
        items = self.server.item_table.detach()
        return ego_graph_users(store.user_emb, store.users, items[store.items], store.counts)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"server": self.server.state(), "clients": self.clients.state() if self.clients else {}}

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.server.load_state(state["server"])
        if self.clients is not None:
            self.clients.load_state(state["clients"])


def pick_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def build_model(
    config: Config, interactions: Interactions, mask: pd.DataFrame, device: torch.device
) -> tuple[Model, torch.Generator]:
    generator = torch.Generator(device=device)
    generator.manual_seed(config.run.seed)
    method = config.run.method
    train = interactions.part("train")
    if method == "central":
        everything = SharedGraph(
            torch.tensor(train["user"].to_numpy()),
            torch.tensor(train["item"].to_numpy()),
            interactions.n_users,
            interactions.n_items,
        )
        server = Server(
            everything, config.model, config.federated, generator, device, use_graph=True, train_item_table=False
        )
        return Model(method, server, None, config), generator
    graph = shared_graph(mask, interactions.n_users, interactions.n_items)
    use_graph = method == "fedshare" and config.model.use_server_graph
    if not use_graph:  # local: the server holds no interactions at all
        graph = SharedGraph(graph.users[:0], graph.items[:0], graph.n_users, graph.n_items)
    server = Server(
        graph, config.model, config.federated, generator, device, use_graph=use_graph, train_item_table=True
    )
    shares = (
        global_view_weights(mask, interactions.n_users, config.model.global_weight)
        if use_graph
        else np.zeros(interactions.n_users, dtype=np.float32)
    )
    clients = ClientStore(train, shares, interactions.n_users, interactions.n_items, config.model, generator, device)
    backend = None
    if config.run.backend == "ray":  # starts nothing yet: Ray comes up at the first round
        backend = RayBackend(config)
    return Model(method, server, clients, config, backend), generator
