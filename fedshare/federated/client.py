"""Clients: simulated devices, trained exactly but in batch.  The server never receives this object.

The vectorized client round and the per-client loop call the same ``local_training`` function; the
only difference is whether it sees all clients' tensors at once or one client's at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from fedshare.config import FederatedConfig, ModelConfig
from fedshare.federated.chunking import interaction_chunk
from fedshare.federated.messages import Broadcast
from fedshare.model.losses import bpr_gradients, bpr_terms, weighted_square_norm
from fedshare.model.optim import adam_update
from fedshare.model.sampling import counter_negatives, draw_round_key, sample_negatives


class ClientStore:
    """Each client's device: its training interactions, private user embedding and Adam state."""

    def __init__(
        self,
        train: pd.DataFrame,
        shares: np.ndarray,
        n_users: int,
        n_items: int,
        model: ModelConfig,
        generator: torch.Generator,
        device: torch.device,
    ):
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
        return {
            "user_emb": self.user_emb.clone(),
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "steps": self.steps.clone(),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value.to(self.user_emb.device))


@dataclass
class ClientBatch:
    """The tensors of one local-training call: one client (loop) or all participants (vectorized)."""

    users: torch.Tensor  # sorted unique user indices of the clients in this batch
    local_user: torch.Tensor  # per interaction: position of its user in ``users``
    row_items: torch.Tensor  # item index of each item-row copy
    pos_row: torch.Tensor  # per interaction: its positive item's row
    neg_row: torch.Tensor  # per interaction: its negatives' rows [n, k]
    separate_rows: bool  # one row per use: positive rows and negative rows are separate tensors

    def initial_rows(self, item_table: torch.Tensor) -> list[torch.Tensor]:
        """The clients' copies of their item rows (one leaf tensor, or [positives, negatives]).

        Keeping positives and negatives in separate tensors when rows are not shared avoids the
        gathers (and their scatter backward) of the general case.
        """
        if not self.separate_rows:
            return [item_table.index_select(0, self.row_items)]
        n, k = self.neg_row.shape
        return [
            item_table.index_select(0, self.row_items[:n]),
            item_table.index_select(0, self.row_items[n:]).view(n, k, -1),
        ]

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
            upload.index_add_(0, self.row_items[offset : offset + change.shape[0]], change)
            offset += change.shape[0]
        return upload


def make_batch(
    users: torch.Tensor,
    interaction_users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    n_items: int,
    dedupe: bool,
) -> ClientBatch:
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
    counts = torch.bincount(batch.local_user, minlength=user_emb.shape[0])
    return ego_graph_users(user_emb, batch.local_user, batch.positives(rows), counts)


def ego_graph_users(
    user_emb: torch.Tensor, owners: torch.Tensor, item_rows: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """h_u = (p_u + sum_i q_i / sqrt(n_u)) / 2: ``item_rows[k]`` is an item row of user ``owners[k]``."""
    neighbourhood = torch.zeros_like(user_emb).index_add_(0, owners, item_rows)
    return 0.5 * (user_emb + neighbourhood / counts.clamp(min=1).to(user_emb.dtype).sqrt().unsqueeze(1))


def autograd_client_gradients(
    user_emb: torch.Tensor, rows: list[torch.Tensor], batch: ClientBatch, model: ModelConfig, total_interactions: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
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


def mf_client_gradients(
    user_emb: torch.Tensor, rows: list[torch.Tensor], batch: ClientBatch, model: ModelConfig, total_interactions: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
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


def local_training(
    store: ClientStore,
    item_table: torch.Tensor,
    batch: ClientBatch,
    total_interactions: int,
    model: ModelConfig,
    federated: FederatedConfig,
    on_rows: RowsHook | None = None,
    upload: torch.Tensor | None = None,
) -> torch.Tensor:
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


def client_updates(
    store: ClientStore,
    broadcast: Broadcast,
    participants: torch.Tensor,
    model: ModelConfig,
    federated: FederatedConfig,
    generator: torch.Generator | None,
    on_rows: RowsHook | None = None,
    total: int | None = None,
    round_key: int | None = None,
) -> torch.Tensor:
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
        negatives = counter_negatives(
            ids, slots, store.n_items, federated.negatives, store.own_keys, key, key_users=interaction_users
        )
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
        batch = make_batch(
            participants[first:last],
            interaction_users[start:end],
            positives[start:end],
            negatives[start:end],
            store.n_items,
            dedupe,
        )
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
