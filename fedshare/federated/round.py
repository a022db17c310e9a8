"""One federated round (docs/method.md gives the equations):

1. The server propagates LightGCN once over the shared graph and broadcasts the federated item
   table Q, its global item representations G_I and, to each sharing user only, that user's own
   global representation g_u.
2. Every participating client trains on *all* its own training interactions (shared and private):
   BPR on its private user embedding p_u and on its copy of the item rows it touches, for
   ``local_steps`` steps.  It uploads the change of those item rows.
3. The server receives only the sum of the clients' item-row changes (as with secure aggregation);
   the FedAdam strategy turns it into a pseudo-gradient for Q, and the graph learner takes one Adam
   step on its own embeddings, whose loss is BPR on the shared edges plus the InfoNCE alignment of
   the local (Q) and global (G_I) item views.

For ``central`` (no clients) a round is one full-batch epoch of LightGCN on all training data.
"""

from __future__ import annotations

from typing import Callable

import torch

from fedshare.federated.aggregation import pick_participants
from fedshare.federated.client import client_updates
from fedshare.federated.messages import RoundObserver, Upload
from fedshare.federated.simulation import Model

ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_round(
    model: Model, generator: torch.Generator, extra_loss: ExtraLoss | None = None, observer: RoundObserver | None = None
) -> dict[str, float]:
    """One round; returns the server's loss terms (and the Ray backend's traffic) for logging.

    ``extra_loss(global_users, global_items)`` adds a server-side term (used by unlearning).
    ``observer`` (the FRU update log) sees the clients' item-row changes and the server's own
    gradients of this round; the caller flushes it.
    """
    config = model.config
    global_users, global_items = model.server.propagate()  # the one propagation of this round
    upload = None
    if model.clients is not None:
        broadcast = model.server.broadcast(global_users, global_items)
        participants = pick_participants(model.clients, config.federated.client_fraction, generator)
        if model.backend is not None:  # the same client step, run by the shards that hold the clients
            if observer is not None:
                raise ValueError("the FRU update log is not available with run.backend=ray")
            upload = model.backend.client_round(model, broadcast, participants, generator)
        else:
            upload = Upload(
                client_updates(
                    model.clients,
                    broadcast,
                    participants,
                    config.model,
                    config.federated,
                    generator,
                    observer.add_clients if observer is not None else None,
                )
            )
    weight = config.model.contrastive_weight if model.method == "fedshare" else 0.0
    extra = extra_loss(global_users, global_items) if extra_loss is not None else None
    logs = model.server.step(upload, global_users, global_items, weight, extra, observer)
    if model.backend is not None:
        logs.update(model.backend.last_round_stats())
    return logs
