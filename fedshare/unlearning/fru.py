"""FRU baseline (Yuan et al., WSDM 2023): log every round's updates, unlearn by rollback and calibrated replay.

docs/method.md ("FRU baseline") explains the choices. In short:

* **Sources of updates.** Each client is one source (the change of its item-row copies after local
  training, exactly what it uploads); the server is one more source (the gradient of its own loss
  on the shared graph: its LightGCN user and item embeddings, and the item table's alignment part).
* **Log.** Per round and per source, only the top-α rows by L2 norm of the rows that source
  updated (FRU's importance-based selection), written once per round with
  ``storage.save_tensors``: ``clients-RRRRR.pt`` (int32 client, int32 item, float32 change) and
  ``server-RRRRR.pt`` (int32 row, float32 gradient per table), plus the round-0 state
  (``initial-server.pt``, ``initial-clients.pt``). ``bytes_on_disk`` is ``stat`` of these files.
* **Unlearning.** Roll back to round 0 (the shared graph is used from round 1 on, so round 0 is the
  last state without the unshared data) and replay rounds 1..T (T = the kept best round) with the
  server's own FedAdam optimizer, fresh state. Unaffected sources replay their logged update,
  calibrated FedEraser-style per row: stored magnitude, direction of a fresh computation at the
  replayed state. Affected ones are computed fresh: the server rows of the affected nodes (the
  requesting users, the unshared items and their ``hops`` neighbourhood) and, for a delete request,
  the requesting clients.

With α = 1 and no calibration, replaying a log with nothing to forget reproduces the trained server
state (tests/test_fru.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedshare.errors import DataError
from fedshare.federated.client import ClientBatch, local_training, make_batch
from fedshare.federated.messages import Upload
from fedshare.federated.server import SERVER_TABLES
from fedshare.model.sampling import sample_negatives
from fedshare.storage import atomic_write_json, load_tensors, save_tensors
from fedshare.unlearning.common import (
    UnlearningJob,
    UnlearningResult,
    clean_server,
)

if TYPE_CHECKING:
    from fedshare.federated.simulation import Model


def top_share(groups: torch.Tensor, scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Positions of the top ceil(alpha * n_g) scores of each group g (at least one), in ascending order.

    Vectorized: sort by score (descending), then stably by group, and rank inside each segment.
    """
    if groups.numel() == 0:
        return groups.new_zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    segment = torch.repeat_interleave(torch.arange(counts.numel(), device=groups.device), counts)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(order.numel(), device=groups.device) - starts[segment]
    # ceil(alpha * n) with a tolerance, so that 0.3 * 10 keeps 3 rows and not 4
    limit = torch.ceil(counts.to(torch.float64) * alpha - 1e-9).clamp(min=1).long()
    return torch.sort(order[rank < limit[segment]]).values


def row_owners(batch: ClientBatch) -> torch.Tensor:
    """The client (user index) that owns each item-row copy of a batch, in ``row_items`` order."""
    n, k = batch.neg_row.shape
    owner = torch.empty(batch.row_items.numel(), dtype=torch.long, device=batch.row_items.device)
    owner[batch.pos_row] = batch.local_user
    owner[batch.neg_row.reshape(-1)] = batch.local_user.repeat_interleave(k)
    return batch.users[owner]


def row_values(changes: list[torch.Tensor]) -> torch.Tensor:
    dim = changes[0].shape[-1]
    return torch.cat([change.reshape(-1, dim) for change in changes])


class UpdateLog:
    """FRU's history of updates in ``folder``: per round, the top-α rows of every source's update.

    The per-client files simulate N device-side logs in one file per round (the sum of the devices'
    storage); the server's file is the server's own log.
    """

    PATTERNS = ("clients-*.pt*", "server-*.pt*", "initial-*.pt*", "meta.json")

    def __init__(self, folder: str | Path, alpha: float | None = None, dtype: torch.dtype = torch.float32):
        self.folder = Path(folder)
        meta = self.meta()
        self.alpha = float(alpha if alpha is not None else meta.get("alpha", 1.0))
        if not 0 < self.alpha <= 1:
            raise ValueError(f"FRU alpha must be in (0, 1], got {self.alpha}")
        self.dtype = dtype
        self.n_items = meta.get("n_items")
        self._clients: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._server: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "UpdateLog":
        """The log a training run wrote into ``RUN/fru_log``; a clear error if it wrote none."""
        folder = Path(run_dir) / "fru_log"
        if not (folder / "initial-server.pt").exists():
            raise DataError(f"{run_dir} has no FRU update log: train it with --set unlearning.fru_alpha=0.5")
        return cls(folder)

    # -- files -------------------------------------------------------------------------------------
    def path(self, part: str, round_number: int) -> Path:
        return self.folder / f"{part}-{round_number:05d}.pt"

    def meta(self) -> dict:
        path = self.folder / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def rounds(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("clients-*.pt"))

    def final_round(self) -> int:
        meta = self.meta()
        return int(meta["final_round"]) if "final_round" in meta else max(self.rounds(), default=0)

    def bytes_on_disk(self, part: str | None = None) -> int:
        """Size on disk of the log (checksum sidecars and meta.json included); ``part``: clients or server."""
        if not self.folder.exists():
            return 0
        patterns = self.PATTERNS if part is None else (f"{part}-*.pt*", f"initial-{part}.pt*")
        return sum(p.stat().st_size for pattern in patterns for p in self.folder.glob(pattern))

    def load(self, round_number: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return load_tensors(self.path("clients", round_number)), load_tensors(self.path("server", round_number))

    def initial(self, part: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.folder / f"initial-{part}.pt")

    # -- writing, called by training.train ---------------------------------------------------------
    def start(self, model: "Model") -> None:
        """Round 0: forget any older log in the folder, keep the initial (data-free) state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for pattern in self.PATTERNS:
            for path in self.folder.glob(pattern):
                path.unlink()
        self.n_items = model.server.graph.n_items
        save_tensors(self.folder / "initial-server.pt", model.server.state())
        if model.clients is not None:
            save_tensors(self.folder / "initial-clients.pt", {"user_emb": model.clients.user_emb})
        self._write_meta()

    def add_clients(self, batch: ClientBatch, changes: list[torch.Tensor]) -> None:
        """Each client's change per item it touched (summed over its row copies), top-α rows by norm."""
        with torch.no_grad():
            values = row_values(changes)
            keys, inverse = torch.unique(row_owners(batch) * self.n_items + batch.row_items, return_inverse=True)
            sums = torch.zeros(keys.numel(), values.shape[1], dtype=values.dtype, device=values.device)
            sums.index_add_(0, inverse, values)
            clients = keys // self.n_items
            keep = top_share(clients, sums.norm(dim=1), self.alpha)
            self._clients.append(
                (clients[keep].to(torch.int32), (keys[keep] % self.n_items).to(torch.int32), sums[keep].to(self.dtype))
            )

    def add_server(self, gradients: dict[str, torch.Tensor | None]) -> None:
        """The server's own gradient rows (graph loss and alignment), top-α of the non-zero rows by norm."""
        with torch.no_grad():
            for name, gradient in gradients.items():
                if gradient is None:
                    continue
                norms = gradient.norm(dim=1)
                rows = torch.nonzero(norms > 0).squeeze(1)
                rows = rows[top_share(torch.zeros_like(rows), norms[rows], self.alpha)]
                self._server[name] = (rows.to(torch.int32), gradient.index_select(0, rows).to(self.dtype))

    def flush(self, round_number: int) -> None:
        """Write this round's buffered updates (two files, always, so that a missing file is an error)."""
        if self._clients:
            client, item, value = (torch.cat(parts) for parts in zip(*self._clients))
        else:
            client = item = torch.zeros(0, dtype=torch.int32)
            value = torch.zeros(0, 0, dtype=self.dtype)
        save_tensors(self.path("clients", round_number), {"client": client, "item": item, "value": value})
        server = {}
        for name, (rows, value) in self._server.items():
            server[f"{name}.rows"], server[f"{name}.value"] = rows, value
        save_tensors(self.path("server", round_number), server)
        self._clients, self._server = [], {}

    def finish(self, final_round: int) -> None:
        """Training kept round ``final_round``: drop later rounds (not needed to rebuild it) and record it."""
        for round_number in self.rounds():
            if round_number > final_round:
                for part in ("clients", "server"):
                    for path in self.folder.glob(self.path(part, round_number).name + "*"):
                        path.unlink()
        self._write_meta(final_round)

    def _write_meta(self, final_round: int | None = None) -> None:
        meta = {"alpha": self.alpha, "dtype": str(self.dtype).replace("torch.", ""), "n_items": self.n_items}
        if final_round is not None:
            meta["final_round"] = final_round
        atomic_write_json(self.folder / "meta.json", meta)


def calibrate(stored: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """Per row: the stored update's norm in the fresh update's direction (FedEraser/FRU calibration).

    A row with no stored update stays zero (FRU's truncation); a row the fresh computation did not
    touch keeps its stored update.
    """
    stored_norm = stored.norm(dim=1, keepdim=True)
    fresh_norm = fresh.norm(dim=1, keepdim=True)
    return torch.where(fresh_norm > 0, fresh * (stored_norm / fresh_norm.clamp(min=1e-30)), stored)


def _dense(rows: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(like)
    if rows.numel():
        out.index_copy_(0, rows.long().to(like.device), values.to(like.device, like.dtype))
    return out


def server_gradients(model: "Model") -> dict[str, torch.Tensor]:
    """The server's own loss gradient at the current state on its current (cleaned) graph."""
    server = model.server
    weight = model.config.model.contrastive_weight if model.method == "fedshare" else 0.0
    global_users, global_items = server.propagate()
    loss = server.graph_bpr_loss(global_users, global_items)
    names = ["graph_users", "graph_items"]
    if weight > 0:
        loss = loss + weight * server.alignment_loss(global_items)
        names.append("item_table")
    gradients = torch.autograd.grad(loss, [getattr(server, name) for name in names])
    return dict(zip(names, gradients))


def fresh_client_changes(
    model: "Model", participants: torch.Tensor, dirty: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fresh local training of the participants from the replayed item table.

    Clean clients train on a random ``fraction`` of their interactions (FRU's lambda of the local
    work; their result only gives directions), ``dirty`` ones (delete requests) on all their data.
    Returns the summed item-row changes of the clean and of the dirty clients; updates the clients'
    user embeddings and Adam state, as FRU's replay does.
    """
    store, federated = model.clients, model.config.federated
    item_table = model.server.item_table.detach()
    positions = store.interactions_of(participants)
    total = max(int(positions.numel()), 1)  # the round's public count, as in training
    if fraction < 1:
        draw = torch.rand(positions.numel(), generator=generator, device=positions.device)
        positions = positions[(draw < fraction) | dirty[store.users[positions]]]
    clean = torch.zeros_like(item_table)
    dirty_sum = torch.zeros_like(item_table)
    if positions.numel() == 0:
        return clean, dirty_sum
    users, positives = store.users[positions], store.items[positions]
    negatives = sample_negatives(users, store.n_items, federated.negatives, store.own_keys, generator)
    batch = make_batch(torch.unique(users), users, positives, negatives, store.n_items, federated.local_steps > 1)
    if not bool(dirty.any()):  # the common case (unshare): the plain scatter-add of training
        return local_training(store, item_table, batch, total, model.config.model, federated), dirty_sum
    seen: list[torch.Tensor] = []
    local_training(
        store,
        item_table,
        batch,
        total,
        model.config.model,
        federated,
        on_rows=lambda b, changes: seen.append(row_values(changes)),
    )
    values, owned_by_dirty = seen[0], dirty[row_owners(batch)]
    clean.index_add_(0, batch.row_items[~owned_by_dirty], values[~owned_by_dirty])
    dirty_sum.index_add_(0, batch.row_items[owned_by_dirty], values[owned_by_dirty])
    return clean, dirty_sum


def replay(
    model: "Model",
    log: UpdateLog,
    affected_users: torch.Tensor | None = None,
    affected_items: torch.Tensor | None = None,
    affected_clients: torch.Tensor | None = None,
    calibrated: bool = True,
    calibration_fraction: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Roll the model back to round 0 and replay the log's rounds 1..T in place; returns T.

    ``affected_users``/``affected_items``: server rows recomputed fresh (no logged update used).
    ``affected_clients``: clients whose logged updates are dropped and recomputed fresh (delete).
    ``calibrated``: every other logged update takes its stored per-row norm in the direction of a
    fresh computation (server: its gradient on the current graph; clients: one local training on a
    ``calibration_fraction`` of their interactions). Without calibration and with nothing affected,
    the replay uses the log alone and, at alpha = 1, rebuilds the trained server state.
    """
    server, store = model.server, model.clients
    device = server.device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(model.config.run.seed + 1)

    def mask(size: int, index: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros(size, dtype=torch.bool, device=device)
        if index is not None and len(index):
            out[torch.as_tensor(index, device=device).long()] = True
        return out

    fresh_rows = {
        "graph_users": mask(server.graph.n_users, affected_users),
        "graph_items": mask(server.graph.n_items, affected_items),
        "item_table": mask(server.graph.n_items, affected_items),
    }
    dirty = mask(server.graph.n_users, affected_clients)
    server_fresh = server.use_graph and (calibrated or any(bool(m.any()) for m in fresh_rows.values()))
    clients_run = store is not None and (calibrated or bool(dirty.any()))

    if not (log.folder / "initial-server.pt").exists():
        raise FileNotFoundError(f"{log.folder} holds no FRU update log (train with unlearning.fru_alpha > 0)")
    # Roll back: the round-0 server state with a fresh optimizer of the same kind and settings.
    server.load_state({name: value for name, value in log.initial("server").items() if name in SERVER_TABLES})
    server.reset_optimizers()
    if clients_run:  # the clients that train again start again from their round-0 user embedding
        back = torch.ones_like(dirty) if calibrated else dirty
        store.user_emb[back] = log.initial("clients")["user_emb"].to(device)[back]
        store.exp_avg[back] = 0
        store.exp_avg_sq[back] = 0
        store.steps[back] = 0

    final = log.final_round()
    for round_number in range(1, final + 1):
        logged_clients, logged_server = log.load(round_number)
        gradients: dict[str, torch.Tensor] = {}
        if server.use_graph:
            fresh = server_gradients(model) if server_fresh else {}
            for name in SERVER_TABLES:
                table = getattr(server, name)
                stored = None
                if f"{name}.rows" in logged_server:
                    stored = _dense(logged_server[f"{name}.rows"], logged_server[f"{name}.value"], table.detach())
                if name not in fresh:
                    if stored is not None:
                        gradients[name] = stored
                    continue
                gradient = fresh[name] if stored is None else (calibrate(stored, fresh[name]) if calibrated else stored)
                rows = fresh_rows[name]
                gradient = torch.where(rows.unsqueeze(1), fresh[name], gradient)
                gradients[name] = gradient
        item_gradient = None
        if store is not None:
            client = logged_clients["client"].long().to(device)
            item = logged_clients["item"].long().to(device)
            value = logged_clients["value"].to(device, server.item_table.dtype)
            keep = ~dirty[client]
            change = torch.zeros_like(server.item_table.detach()).index_add_(0, item[keep], value[keep])
            if clients_run:
                participants = torch.unique(client)
                clean, dirty_change = fresh_client_changes(
                    model, participants, dirty, calibration_fraction if calibrated else 0.0, generator
                )
                if calibrated:
                    change = calibrate(change, clean)
                change = change + dirty_change
            item_gradient = server.strategy.pseudo_gradient(Upload(change))
        with torch.no_grad():
            server.zero_grad()
            for name, gradient in gradients.items():
                getattr(server, name).grad = gradient.detach()
        server.apply(item_gradient)
    return final


def unlearn(job: UnlearningJob) -> UnlearningResult:
    """Roll back and replay, with the affected server rows (and, for a delete, clients) computed fresh."""
    cleaned = clean_server(job)
    train = job.interactions.part("train")
    still_on_device = job.pairs.merge(train[["user", "item"]], on=["user", "item"], how="left", indicator=True)
    deleted = still_on_device.loc[still_on_device["_merge"] == "left_only", "user"].unique()
    replayed = replay(
        job.model,
        job.update_log,
        cleaned.node_users,
        cleaned.node_items,
        torch.as_tensor(deleted, dtype=torch.long),
        generator=cleaned.generator,
        **job.options,
    )
    # The log is not carried over: its rounds still hold the unshared edges' influence.
    return cleaned.result(job.model, replayed, storage_bytes=job.update_log.bytes_on_disk())
