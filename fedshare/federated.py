"""The federated engine: a server that sees only shared data, and clients simulated exactly, in batch.

One round (docs/method.md gives the equations):

1. The server propagates LightGCN once over the shared graph and broadcasts the federated item
   table Q, its global item representations G_I and, to each sharing user only, that user's own
   global representation g_u.
2. Every participating client trains on *all* its own training interactions (shared and private):
   BPR on its private user embedding p_u and on its copy of the item rows it touches, for
   ``local_steps`` steps.  It uploads the change of those item rows.
3. The server receives only the sum of the clients' item-row changes (as with secure aggregation),
   turns it into a pseudo-gradient for Q (FedAdam) and takes one Adam step on Q and on its own
   graph embeddings, whose loss is BPR on the shared edges plus the InfoNCE alignment of local (Q)
   and global (G_I) item views.

The vectorized client round and the per-client loop call the same ``local_training`` function; the
only difference is whether it sees all clients' tensors at once or one client's at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .config import FederatedConfig, ModelConfig
from .models import (adam_update, bpr_gradients, bpr_terms, counter_negatives, draw_round_key, info_nce, lightgcn,
                     normalized_adjacency, sample_negatives, weighted_square_norm)
from .sharing import SharedGraph


# How many interactions (or shared edges) one forward/backward pass takes at most.  A CPU is fastest
# when each [interactions x d] temporary stays in the last-level cache: 8192 x 64 floats is 2 MiB,
# and on ML-1M a round in such chunks is several times faster than one pass over all 0.8 M
# interactions, whose 200 MB temporaries are fresh pages from the kernel on every allocation
# (docs/results.md, table 4).  A GPU wants the largest batch that fits: there the chunk only bounds
# memory.  The chunk size changes no result: updates are sums and negatives are drawn beforehand.
CPU_CHUNK_INTERACTIONS = 8192
GPU_CHUNK_INTERACTIONS = 1_000_000


def interaction_chunk(federated: FederatedConfig, device: torch.device) -> int:
    """``federated.chunk_interactions`` for this device: ``auto`` picks by device type; 0 = no chunks."""
    if federated.chunk_interactions != "auto":
        return int(federated.chunk_interactions)
    return CPU_CHUNK_INTERACTIONS if torch.device(device).type == "cpu" else GPU_CHUNK_INTERACTIONS


# --------------------------------------------------------------------------------------------------
# Server: everything it holds is built from a SharedGraph and from aggregated client uploads.
# --------------------------------------------------------------------------------------------------

@dataclass
class Broadcast:
    """What the server sends down in a round (detached tensors)."""

    item_table: torch.Tensor          # Q, the federated item embeddings
    global_items: torch.Tensor | None  # G_I from LightGCN over the shared graph
    global_users: torch.Tensor | None  # g_u; the simulator hands row u to client u only


class Server:
    """The server's whole state.  Its only interaction data is ``self.graph`` (shared edges)."""

    def __init__(self, graph: SharedGraph, model: ModelConfig, federated: FederatedConfig,
                 generator: torch.Generator, device: torch.device, use_graph: bool, train_item_table: bool):
        self.model = model
        self.device = device
        self.edge_chunk = interaction_chunk(federated, device)  # shared edges per chunk of the graph loss
        self.generator = generator
        self.use_graph = use_graph and graph.n_edges > 0
        self.set_graph(graph)

        def init(rows: int) -> torch.Tensor:
            values = torch.randn(rows, model.dim, generator=generator, device=device) * model.init_std
            return values.requires_grad_()

        self.item_table = init(graph.n_items)      # local view of items, trained by the clients
        self.graph_users = init(graph.n_users)     # server-side embeddings of the LightGCN
        self.graph_items = init(graph.n_items)
        parameters = [self.graph_users, self.graph_items] if self.use_graph else []
        if train_item_table:
            parameters.append(self.item_table)
        self.optimizer = torch.optim.Adam(parameters, lr=federated.server_lr) if parameters else None

    def set_graph(self, graph: SharedGraph) -> None:
        """Take a (new) shared graph: the edges, their keys and the normalized adjacency.

        Used at construction and when unsharing removes edges; the embeddings are kept.
        """
        device = self.device
        self.graph = SharedGraph(graph.users.to(device), graph.items.to(device), graph.n_users, graph.n_items)
        self.shared_keys = torch.sort(self.graph.users * graph.n_items + self.graph.items).values
        self.adjacency = normalized_adjacency(self.graph.users, self.graph.items, graph.n_users, graph.n_items)
        self.items_in_graph = torch.unique(self.graph.items)

    # -- one round -------------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        if not self.use_graph:
            return None, None
        return lightgcn(self.graph_users, self.graph_items, self.adjacency, self.model.server_layers)

    def broadcast(self, global_users: torch.Tensor | None, global_items: torch.Tensor | None) -> Broadcast:
        detach = lambda t: None if t is None else t.detach()  # noqa: E731
        return Broadcast(self.item_table.detach(), detach(global_items), detach(global_users))

    def step(self, client_item_gradient: torch.Tensor | None,
             global_users: torch.Tensor | None, global_items: torch.Tensor | None,
             alignment_weight: float, extra_loss: torch.Tensor | None = None,
             on_gradients: Callable[[dict[str, torch.Tensor | None]], None] | None = None) -> dict[str, float]:
        """One Adam step on the server's parameters; returns the loss terms for logging.

        ``extra_loss`` (e.g. the contrastive unlearning term) is added to the graph loss.
        ``on_gradients`` sees the gradients of the server's own loss, before the clients' part is
        added (the FRU update log records them).
        """
        if self.optimizer is None:
            return {}
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        if self.use_graph:
            loss = self.graph_bpr_loss(global_users, global_items)
            logs["server_bpr"] = loss.item()
            if alignment_weight > 0:
                align = self.alignment_loss(global_items)
                logs["align_items"] = align.item()
                loss = loss + alignment_weight * align
            if extra_loss is not None:
                logs["extra"] = extra_loss.item()
                loss = loss + extra_loss
            loss.backward()
        if on_gradients is not None:
            on_gradients({name: getattr(self, name).grad for name in ("graph_users", "graph_items", "item_table")})
        if client_item_gradient is not None:
            if self.item_table.grad is None:
                self.item_table.grad = client_item_gradient
            else:
                self.item_table.grad += client_item_gradient
        self.optimizer.step()
        return logs

    def graph_bpr_loss(self, global_users: torch.Tensor, global_items: torch.Tensor) -> torch.Tensor:
        """BPR on every shared edge with one sampled negative (not a shared positive of that user)."""
        users, items = self.graph.users, self.graph.items
        negatives = sample_negatives(users, self.graph.n_items, 1, self.shared_keys, self.generator)[:, 0]
        loss = chunked_mean_bpr(global_users, global_items, users, items, negatives, self.edge_chunk)
        # L2 on the layer-0 embeddings of every (user, positive, negative) triple, LightGCN-style.
        l2 = (weighted_square_norm(self.graph_users, users) + weighted_square_norm(self.graph_items, items)
              + weighted_square_norm(self.graph_items, negatives)) / (2 * users.numel())
        return loss + self.model.server_l2 * l2

    def alignment_loss(self, global_items: torch.Tensor) -> torch.Tensor:
        """InfoNCE between each item's local view q_i and global view g_i, on a random item batch."""
        candidates = self.items_in_graph
        if candidates.numel() > self.model.align_batch:
            pick = torch.randperm(candidates.numel(), generator=self.generator, device=self.device)
            candidates = candidates[pick[: self.model.align_batch]]
        global_view = global_items[candidates]
        if self.model.align_direction == "local_to_global":  # the graph view is the teacher
            global_view = global_view.detach()
        return info_nce(self.item_table[candidates], global_view, self.model.temperature)

    def state(self) -> dict[str, torch.Tensor]:
        return {"item_table": self.item_table.detach().clone(), "graph_users": self.graph_users.detach().clone(),
                "graph_items": self.graph_items.detach().clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                getattr(self, name).copy_(value.to(self.device))


def chunked_mean_bpr(user_table: torch.Tensor, item_table: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                     negatives: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean BPR over (user, item, negative) edges in chunks of ``chunk`` (0: one chunk): the same value
    and gradient as all at once.

    Gathering every edge's rows at once costs a few [edges x d] tensors (gigabytes for millions of
    edges).  Here each chunk computes the gradients of its terms with respect to the rows it gathered
    (``bpr_gradients``, in closed form) and scatter-adds them into two gradient tables: the work per
    chunk is proportional to the chunk, not to the tables.  The returned surrogate
    ``<table, gradient>`` (shifted to the true value) carries the summed gradient back through the
    LightGCN propagation in one backward pass.
    """
    users_detached, items_detached = user_table.detach(), item_table.detach()
    user_gradient, item_gradient = torch.zeros_like(users_detached), torch.zeros_like(items_detached)
    n = users.numel()
    step = chunk if 0 < chunk < n else max(n, 1)  # chunk 0: all edges at once
    value = users_detached.new_zeros(())
    for start in range(0, n, step):
        part = slice(start, start + step)
        terms, user_rows, positive_rows, negative_rows = bpr_gradients(
            users_detached.index_select(0, users[part]), items_detached.index_select(0, items[part]),
            items_detached.index_select(0, negatives[part]).unsqueeze(1), scale=1.0 / n)
        user_gradient.index_add_(0, users[part], user_rows)
        item_gradient.index_add_(0, items[part], positive_rows)
        item_gradient.index_add_(0, negatives[part], negative_rows[:, 0])
        value += terms.sum()
    surrogate = (user_table * user_gradient).sum() + (item_table * item_gradient).sum()
    return surrogate - surrogate.detach() + value / max(n, 1)


# --------------------------------------------------------------------------------------------------
# Clients: simulated devices.  The server never receives this object.
# --------------------------------------------------------------------------------------------------

class ClientStore:
    """Each client's device: its training interactions, private user embedding and Adam state."""

    def __init__(self, train: pd.DataFrame, shares: np.ndarray, n_users: int, n_items: int,
                 model: ModelConfig, generator: torch.Generator, device: torch.device):
        order = np.lexsort((train["item"].to_numpy(), train["user"].to_numpy()))
        self.users = torch.as_tensor(train["user"].to_numpy()[order], device=device)
        self.items = torch.as_tensor(train["item"].to_numpy()[order], device=device)
        self.n_users, self.n_items = n_users, n_items
        self.counts = torch.bincount(self.users, minlength=n_users)
        self.pointers = torch.cat([torch.zeros(1, dtype=torch.long, device=device), self.counts.cumsum(0)])
        self.own_keys = self.users * n_items + self.items  # sorted: users then items
        self.shares = torch.as_tensor(shares, device=device)  # each client knows whether it shares
        self.user_emb = torch.randn(n_users, model.dim, generator=generator, device=device) * model.init_std
        self.exp_avg = torch.zeros_like(self.user_emb)
        self.exp_avg_sq = torch.zeros_like(self.user_emb)
        self.steps = torch.zeros(n_users, dtype=torch.long, device=device)
        self.global_ids: torch.Tensor | None = None  # set on a shard: local user index -> user id

    def shard(self, user_ids: torch.Tensor) -> "ClientStore":
        """The devices of the given (sorted) users as a store of their own, numbered 0..len-1 locally.

        What a Ray shard holds: those users' interactions and a copy of their private state.
        """
        user_ids = user_ids.to(self.users.device)
        part = ClientStore.__new__(ClientStore)
        positions = self.interactions_of(user_ids)
        part.users = torch.searchsorted(user_ids, self.users[positions])
        part.items = self.items[positions].clone()
        part.n_users, part.n_items = int(user_ids.numel()), self.n_items
        part.counts = self.counts[user_ids].clone()
        part.pointers = torch.cat([part.counts.new_zeros(1), part.counts.cumsum(0)])
        part.own_keys = part.users * self.n_items + part.items
        part.shares = self.shares[user_ids].clone()
        for name in ("user_emb", "exp_avg", "exp_avg_sq", "steps"):
            setattr(part, name, getattr(self, name)[user_ids].clone())
        part.global_ids = user_ids.clone()
        return part

    def interactions_of(self, users: torch.Tensor) -> torch.Tensor:
        """Positions (into self.users/self.items) of all interactions of the given sorted users."""
        selected = torch.zeros(self.n_users, dtype=torch.bool, device=self.users.device)
        selected[users] = True
        return torch.nonzero(selected[self.users]).squeeze(1)

    def state(self) -> dict[str, torch.Tensor]:
        return {"user_emb": self.user_emb.clone(), "exp_avg": self.exp_avg.clone(),
                "exp_avg_sq": self.exp_avg_sq.clone(), "steps": self.steps.clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value.to(self.user_emb.device))


@dataclass
class ClientBatch:
    """The tensors of one local-training call: one client (loop) or all participants (vectorized)."""

    users: torch.Tensor       # sorted unique user indices of the clients in this batch
    local_user: torch.Tensor  # per interaction: position of its user in ``users``
    row_items: torch.Tensor   # item index of each item-row copy
    pos_row: torch.Tensor     # per interaction: its positive item's row
    neg_row: torch.Tensor     # per interaction: its negatives' rows [n, k]
    separate_rows: bool       # one row per use: positive rows and negative rows are separate tensors

    def initial_rows(self, item_table: torch.Tensor) -> list[torch.Tensor]:
        """The clients' copies of their item rows (one leaf tensor, or [positives, negatives]).

        Keeping positives and negatives in separate tensors when rows are not shared avoids the
        gathers (and their scatter backward) of the general case.
        """
        if not self.separate_rows:
            return [item_table.index_select(0, self.row_items)]
        n, k = self.neg_row.shape
        return [item_table.index_select(0, self.row_items[:n]),
                item_table.index_select(0, self.row_items[n:]).view(n, k, -1)]

    def positives(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return rows[0] if self.separate_rows else rows[0].index_select(0, self.pos_row)

    def negatives(self, rows: list[torch.Tensor]) -> torch.Tensor:
        if self.separate_rows:
            return rows[1]
        n, k = self.neg_row.shape
        return rows[0].index_select(0, self.neg_row.reshape(-1)).view(n, k, -1)

    def add_changes(self, upload: torch.Tensor, changes: list[torch.Tensor]) -> torch.Tensor:
        """Scatter-add each row's change into ``upload`` (the sum over clients, per item)."""
        offset = 0
        for change in changes:
            change = change.reshape(-1, change.shape[-1])
            upload.index_add_(0, self.row_items[offset:offset + change.shape[0]], change)
            offset += change.shape[0]
        return upload


def make_batch(users: torch.Tensor, interaction_users: torch.Tensor, positives: torch.Tensor,
               negatives: torch.Tensor, n_items: int, dedupe: bool) -> ClientBatch:
    """Item-row copies for a set of clients: one row per (client, item) it touches this round.

    With one local step, rows need not be unique per client (the summed update is the same), which
    saves a sort; with several steps each client must update a single copy of each of its items.
    """
    n, k = negatives.shape
    local_user = torch.searchsorted(users, interaction_users)
    row_items = torch.cat([positives, negatives.reshape(-1)])
    if dedupe:
        owners = torch.cat([local_user, local_user.repeat_interleave(k)])
        unique_keys, inverse = torch.unique(owners * n_items + row_items, return_inverse=True)
        row_items = unique_keys % n_items
        pos_row, neg_row = inverse[:n], inverse[n:].view(n, k)
    else:
        pos_row = torch.arange(n, device=positives.device)
        neg_row = n + torch.arange(n * k, device=positives.device).view(n, k)
    return ClientBatch(users, local_user, row_items, pos_row, neg_row, separate_rows=not dedupe)


def encode_users(user_emb: torch.Tensor, rows: list[torch.Tensor], batch: ClientBatch, encoder: str) -> torch.Tensor:
    """Client-side user representation: p_u (mf) or a 1-layer LightGCN over the ego graph.

    The ego-graph variant gives h_u = (p_u + sum_i q_i / sqrt(n_u)) / 2 over the client's own items;
    items keep their own embedding (propagating p_u into positive items would leak the label).
    """
    if encoder == "mf":
        return user_emb
    counts = torch.bincount(batch.local_user, minlength=user_emb.shape[0]).clamp(min=1).to(user_emb.dtype)
    neighbourhood = torch.zeros_like(user_emb).index_add_(0, batch.local_user, batch.positives(rows))
    return 0.5 * (user_emb + neighbourhood / counts.sqrt().unsqueeze(1))


def autograd_client_gradients(user_emb: torch.Tensor, rows: list[torch.Tensor], batch: ClientBatch,
                              model: ModelConfig, total_interactions: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Gradients of the clients' loss with respect to their user embeddings and item-row copies, by autograd.

    The loss: each client's BPR terms plus L2 on the embeddings of each (user, positive, first
    negative) triple, as on the server, divided by ``total_interactions``.
    """
    rows = [tensor.detach().requires_grad_() for tensor in rows]
    user_emb = user_emb.detach().requires_grad_()
    user_vec = encode_users(user_emb, rows, batch, model.client_encoder).index_select(0, batch.local_user)
    pos, neg = batch.positives(rows), batch.negatives(rows)
    loss = bpr_terms(user_vec, pos, neg).sum()
    l2 = weighted_square_norm(user_emb, batch.local_user) + pos.square().sum() + neg[:, 0].square().sum()
    loss = (loss + model.client_l2 * l2 / 2) / total_interactions
    user_grad, *row_grads = torch.autograd.grad(loss, [user_emb, *rows])
    return user_grad, row_grads


def mf_client_gradients(user_emb: torch.Tensor, rows: list[torch.Tensor], batch: ClientBatch,
                        model: ModelConfig, total_interactions: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The same gradients as ``autograd_client_gradients`` for the ``mf`` encoder, in closed form.

    About half the passes over the [interactions x d] tensors (``bpr_gradients``), which is most of a
    round on a CPU.  ``tests/test_engine.py::test_closed_form_client_gradients_match_autograd`` checks it.
    """
    scale, l2 = 1.0 / total_interactions, model.client_l2 / total_interactions
    pos, neg = batch.positives(rows), batch.negatives(rows)
    _, user_terms, pos_grad, neg_grad = bpr_gradients(user_emb.index_select(0, batch.local_user), pos, neg, scale)
    pos_grad.add_(pos, alpha=l2)
    neg_grad[:, 0].add_(neg[:, 0], alpha=l2)
    counts = torch.bincount(batch.local_user, minlength=user_emb.shape[0]).to(user_emb.dtype).unsqueeze(1)
    user_grad = (user_emb * counts * l2).index_add_(0, batch.local_user, user_terms)
    if batch.separate_rows:
        return user_grad, [pos_grad, neg_grad]
    row_grad = torch.zeros_like(rows[0]).index_add_(0, batch.pos_row, pos_grad)
    row_grad.index_add_(0, batch.neg_row.reshape(-1), neg_grad.reshape(-1, neg_grad.shape[-1]))
    return user_grad, [row_grad]


RowsHook = Callable[["ClientBatch", list[torch.Tensor]], None]


def local_training(store: ClientStore, item_table: torch.Tensor, batch: ClientBatch, total_interactions: int,
                   model: ModelConfig, federated: FederatedConfig, on_rows: RowsHook | None = None,
                   upload: torch.Tensor | None = None) -> torch.Tensor:
    """Local BPR training of the clients in ``batch``; returns the sum of their item-row changes.

    Each client's loss is its own BPR terms divided by ``total_interactions`` (a public count that the
    server broadcasts), so the sum of the clients' gradients is the gradient of the mean BPR loss.
    ``on_rows(batch, changes)`` sees each row copy's change before the scatter-add (FRU's client log).
    The changes are scatter-added into ``upload`` when given (a running sum over groups of clients:
    no [items x d] tensor per group), else into a new zero table.
    """
    rows = batch.initial_rows(item_table)
    changes: list[torch.Tensor] | None = None  # sum of the SGD steps = final rows - initial rows
    user_emb = store.user_emb[batch.users].clone()
    exp_avg, exp_avg_sq = store.exp_avg[batch.users], store.exp_avg_sq[batch.users]
    steps = store.steps[batch.users]
    client_gradients = mf_client_gradients if model.client_encoder == "mf" else autograd_client_gradients
    for step_number in range(federated.local_steps):
        user_grad, row_grads = client_gradients(user_emb, rows, batch, model, total_interactions)
        with torch.no_grad():
            steps = steps + 1
            adam_update(user_emb, user_grad, exp_avg, exp_avg_sq, steps, federated.client_lr)
            step = [-federated.local_lr * grad for grad in row_grads]
            changes = step if changes is None else [total + part for total, part in zip(changes, step)]
            if step_number + 1 < federated.local_steps:  # the last step's rows are never read again
                rows = [tensor.detach() + part for tensor, part in zip(rows, step)]
    store.user_emb[batch.users] = user_emb
    store.exp_avg[batch.users], store.exp_avg_sq[batch.users] = exp_avg, exp_avg_sq
    store.steps[batch.users] = steps
    if on_rows is not None:
        on_rows(batch, changes)
    return batch.add_changes(torch.zeros_like(item_table) if upload is None else upload, changes)


def client_round(store: ClientStore, broadcast: Broadcast, participants: torch.Tensor, model: ModelConfig,
                 federated: FederatedConfig, generator: torch.Generator, on_rows: RowsHook | None = None) -> torch.Tensor:
    """All participants' local training; returns the aggregated pseudo-gradient for the item table."""
    upload = client_updates(store, broadcast, participants, model, federated, generator, on_rows)
    # The server turns the summed change into a gradient: change = -local_lr * gradient.
    return -upload / federated.local_lr


def client_updates(store: ClientStore, broadcast: Broadcast, participants: torch.Tensor, model: ModelConfig,
                   federated: FederatedConfig, generator: torch.Generator | None, on_rows: RowsHook | None = None,
                   total: int | None = None, round_key: int | None = None) -> torch.Tensor:
    """Local training of the participants (indices into ``store``); returns the sum of their item-row changes.

    ``total`` is the round's interaction count over *all* participants (the public number the server
    broadcasts; by default this store's), ``round_key`` the key of the counter sampler (by default
    drawn from ``generator``).  A shard passes both, so that it computes exactly its clients' part.
    """
    positions = store.interactions_of(participants)
    interaction_users, positives = store.users[positions], store.items[positions]
    if federated.sampler == "counter":
        key = draw_round_key(generator) if round_key is None else round_key
        slots = positions - store.pointers[interaction_users]  # position among the user's own interactions
        ids = interaction_users if store.global_ids is None else store.global_ids[interaction_users]
        negatives = counter_negatives(ids, slots, store.n_items, federated.negatives, store.own_keys, key,
                                      key_users=interaction_users)
    else:
        negatives = sample_negatives(interaction_users, store.n_items, federated.negatives, store.own_keys, generator)
    total = max(int(positions.numel()), 1) if total is None else total
    dedupe = federated.local_steps > 1
    upload = torch.zeros_like(broadcast.item_table)
    # The upload is a sum over clients, so the clients can be trained in groups without changing it.
    # The vectorized engine takes groups of up to `chunk_interactions` interactions (bounded memory);
    # the reference loop takes one client at a time.  Both call the same `local_training`.
    ends = torch.searchsorted(interaction_users, participants, right=True)
    limit = interaction_chunk(federated, store.users.device) if federated.implementation == "vectorized" else 0
    for first, last in client_groups(ends, limit):
        start = int(ends[first - 1]) if first > 0 else 0
        end = int(ends[last - 1])
        batch = make_batch(participants[first:last], interaction_users[start:end], positives[start:end],
                           negatives[start:end], store.n_items, dedupe)
        local_training(store, broadcast.item_table, batch, total, model, federated, on_rows, upload=upload)
    return upload


def client_groups(ends: torch.Tensor, limit: int) -> list[tuple[int, int]]:
    """Consecutive client ranges [first, last) of at most ``limit`` interactions each (limit 0: one client each).

    ``ends[c]`` is the cumulative interaction count up to and including client c.  A client is never
    split; a client with more than ``limit`` interactions forms a group of its own.
    """
    n = int(ends.numel())
    if n == 0:
        return []
    if limit <= 0:
        return [(c, c + 1) for c in range(n)]
    cumulative = ends.cpu().numpy()
    groups, first, base = [], 0, 0
    while first < n:
        # the last client whose cumulative count stays within base + limit (at least one client)
        last = max(int(np.searchsorted(cumulative, base + limit, side="right")), first + 1)
        groups.append((first, last))
        base, first = int(cumulative[last - 1]), last
    return groups


def pick_participants(store: ClientStore, fraction: float, generator: torch.Generator) -> torch.Tensor:
    active = torch.nonzero(store.counts > 0).squeeze(1)
    if fraction >= 1.0:
        return active
    count = max(1, int(round(fraction * active.numel())))
    pick = torch.randperm(active.numel(), generator=generator, device=active.device)[:count]
    return torch.sort(active[pick]).values
