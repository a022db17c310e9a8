"""Training loop for the three methods on one engine: fedshare, local (nobody shares), central.

* ``fedshare``: clients on all their data + server LightGCN on the shared graph + alignment.
* ``local``: the same clients, no server graph (FedAvg FedRec with private user embeddings).
* ``central``: LightGCN trained centrally on all training data (the ceiling); no clients.

Model selection (best round, early stopping) uses the validation split only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import Config
from .data import Interactions
from .evaluation import rank_metrics, summarize
from .federated import ClientStore, Server, client_round, pick_participants
from .sharing import SharedGraph, global_view_weights, shared_graph


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
        (model.global_weight=ratio; 0 for users who share nothing) or 1 for sharing users (one).
        """
        with torch.no_grad():
            user_parts, item_parts = [], []
            if self.clients is not None:
                user_parts.append(self.local_user_vectors())
                item_parts.append(self.server.item_table.detach())
            global_users, global_items = self.server.propagate()
            if global_users is not None:
                if self.clients is not None:
                    global_users = global_users * self.clients.shares.unsqueeze(1).to(global_users.dtype)
                user_parts.append(global_users)
                item_parts.append(global_items)
            return torch.cat(user_parts, 1), torch.cat(item_parts, 1)

    def local_user_vectors(self) -> torch.Tensor:
        store = self.clients
        if self.config.model.client_encoder == "mf":
            return store.user_emb
        items = self.server.item_table.detach()
        neighbourhood = torch.zeros_like(store.user_emb).index_add_(0, store.users, items[store.items])
        return 0.5 * (store.user_emb + neighbourhood / store.counts.clamp(min=1).sqrt().unsqueeze(1))

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


def build_model(config: Config, interactions: Interactions, mask: pd.DataFrame, device: torch.device) -> tuple[Model, torch.Generator]:
    generator = torch.Generator(device=device)
    generator.manual_seed(config.run.seed)
    method = config.run.method
    train = interactions.part("train")
    if method == "central":
        everything = SharedGraph(torch.tensor(train["user"].to_numpy()), torch.tensor(train["item"].to_numpy()),
                                 interactions.n_users, interactions.n_items)
        server = Server(everything, config.model, config.federated, generator, device,
                        use_graph=True, train_item_table=False)
        return Model(method, server, None, config), generator
    graph = shared_graph(mask, interactions.n_users, interactions.n_items)
    use_graph = method == "fedshare" and config.model.use_server_graph
    if not use_graph:  # local: the server holds no interactions at all
        graph = SharedGraph(graph.users[:0], graph.items[:0], graph.n_users, graph.n_items)
    server = Server(graph, config.model, config.federated, generator, device,
                    use_graph=use_graph, train_item_table=True)
    shares = (global_view_weights(mask, interactions.n_users, config.model.global_weight) if use_graph
              else np.zeros(interactions.n_users, dtype=np.float32))
    clients = ClientStore(train, shares, interactions.n_users, interactions.n_items, config.model, generator, device)
    backend = None
    if config.run.backend == "ray":  # starts nothing yet: Ray comes up at the first round
        from .ray_backend import RayBackend
        backend = RayBackend(config)
    return Model(method, server, clients, config, backend), generator


def run_round(model: Model, generator: torch.Generator,
              extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
              update_log=None) -> dict[str, float]:
    """One federated round (or one full-batch epoch for ``central``).

    ``extra_loss(global_users, global_items)`` adds a server-side term (used by unlearning).
    ``update_log`` (a ``fru.UpdateLog``) records the clients' item-row changes and the server's own
    gradients of this round; the caller flushes it.
    """
    config = model.config
    global_users, global_items = model.server.propagate()  # the one propagation of this round
    item_gradient = None
    if model.clients is not None:
        broadcast = model.server.broadcast(global_users, global_items)
        participants = pick_participants(model.clients, config.federated.client_fraction, generator)
        if model.backend is not None:  # the same client step, run by the shards that hold the clients
            if update_log is not None:
                raise ValueError("the FRU update log is not available with run.backend=ray")
            item_gradient = model.backend.client_round(model, broadcast, participants, generator)
        else:
            item_gradient = client_round(model.clients, broadcast, participants, config.model, config.federated,
                                         generator, update_log.add_clients if update_log is not None else None)
    weight = config.model.contrastive_weight if model.method == "fedshare" else 0.0
    extra = extra_loss(global_users, global_items) if extra_loss is not None else None
    logs = model.server.step(item_gradient, global_users, global_items, weight, extra,
                             update_log.add_server if update_log is not None else None)
    if model.backend is not None:
        logs.update(model.backend.last_round_stats())
    return logs


@dataclass
class TrainResult:
    model: Model
    best_round: int
    best_validation: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    rounds_run: int = 0


def evaluate(model: Model, interactions: Interactions, split: str, groups: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Full-ranking metrics on ``valid`` (train masked) or ``test`` (train and valid masked)."""
    table = interactions.table
    truth = table[table["split"] == split]
    seen = table[table["split"] == "train"] if split == "valid" else table[table["split"] != "test"]
    user_vectors, item_vectors = model.scoring_vectors()
    per_user = rank_metrics(user_vectors, item_vectors, truth["user"].to_numpy(), truth["item"].to_numpy(),
                            seen["user"].to_numpy(), seen["item"].to_numpy(), model.config.eval.ks,
                            model.config.eval.batch_users)
    return summarize(per_user, groups)


def train(config: Config, interactions: Interactions, mask: pd.DataFrame, progress: bool = True,
          on_round: Callable[[int, Model], None] | None = None, update_log=None) -> TrainResult:
    """Train until ``federated.rounds`` or until validation stops improving; keeps the best round.

    ``update_log`` (a ``fru.UpdateLog``, off by default) logs every round's updates for FRU unlearning.
    """
    device = pick_device(config.run.device)
    torch.manual_seed(config.run.seed)
    model, generator = build_model(config, interactions, mask, device)
    metric, every, patience = config.eval.metric, config.eval.every, config.eval.patience
    best = {"round": 0, "value": -1.0, "metrics": {}, "state": model.state()}
    history: list[dict[str, float]] = []
    waited = 0
    started = time.perf_counter()
    bar = tqdm(range(1, config.federated.rounds + 1), desc=f"{config.run.method} rounds", disable=not progress,
               dynamic_ncols=True, leave=False)
    rounds_run = 0
    if on_round is not None:
        on_round(0, model)  # the state before any training (snapshot round 0)
    if update_log is not None:
        update_log.start(model)
    for round_number in bar:
        logs = run_round(model, generator, update_log=update_log)
        rounds_run = round_number
        if update_log is not None:
            update_log.flush(round_number)
        if on_round is not None:
            on_round(round_number, model)
        if round_number % every and round_number != config.federated.rounds:
            continue
        validation = evaluate(model, interactions, "valid")
        history.append({"round": round_number, **{f"valid/{k}": v for k, v in validation.items()}, **logs})
        if validation[metric] > best["value"]:
            best = {"round": round_number, "value": validation[metric], "metrics": validation, "state": model.state()}
            waited = 0
        else:
            waited += 1
        bar.set_postfix({f"val {metric}": f"{validation[metric]:.4f}", "best": f"{best['value']:.4f}@{best['round']}"})
        if waited >= patience:
            break
    bar.close()
    if model.backend is not None:  # stop the shards (and Ray, if this run started it); restarts if used again
        model.backend.close()
    model.load_state(best["state"])
    if update_log is not None:
        update_log.finish(best["round"])  # the kept model is the best round's: later rounds are not needed
    return TrainResult(model, best["round"], best["metrics"], history, time.perf_counter() - started, rounds_run)
