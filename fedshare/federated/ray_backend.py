"""``run.backend: ray``: the clients split into shards, one Ray actor per shard, the server in the driver.

Each round (the protocol of docs/method.md, nothing else crosses the network):

* driver -> every shard: the item table ``Q`` and the global item view ``G_I`` (one object each in
  Ray's object store, fetched once per node), the global user rows ``g_u`` of the shard's sharing
  users, the round's public numbers (the counter sampler's key and the total interaction count that
  normalizes every client's loss) and, with ``client_fraction < 1``, which of its clients take part;
* each shard runs the vectorized client step (``federated.client_updates``) on its clients, whose
  interactions, private embeddings and Adam state it keeps in memory across rounds;
* shard -> driver: the sum of its clients' item-row changes (an ``I x d`` table, as a secure
  aggregation node would forward it); the driver adds the shards' sums and takes the server step.

Fault tolerance: with the upload, a shard returns its clients' state after the round; the driver
commits it into its copy of the client store (``model.clients``) once every shard has answered.  A
shard that dies mid-round is re-created from that copy (the state after the last completed round)
and re-runs the round; the counter sampler makes the re-run draw the same negatives, so the result
is unchanged.  The committed copy is also what validation, ``model.state()`` and unlearning read.
Its bytes are reported apart from the protocol's (``net/checkpoint_bytes_per_shard``).

Ray is imported here only, and only when a round is run: the core library does not need it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import torch

from fedshare.config import Config, FederatedConfig, ModelConfig
from fedshare.federated.aggregation import sum_uploads
from fedshare.federated.client import ClientStore, client_updates
from fedshare.federated.messages import Broadcast, Upload
from fedshare.model.sampling import draw_round_key


class ShardWorker:
    """One shard of clients (a plain class: ``RayBackend`` wraps it in ``ray.remote``)."""

    def __init__(self, store: ClientStore, model: ModelConfig, federated: FederatedConfig, threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.store, self.model, self.federated = store, model, federated
        self.active = torch.nonzero(store.counts > 0).squeeze(1)
        self.global_view: tuple | None = None  # G_I and the shard's g_u rows, for on-device scoring

    def train_round(
        self,
        item_table: torch.Tensor,
        global_items: torch.Tensor | None,
        global_users: torch.Tensor | None,
        participants: torch.Tensor | None,
        round_key: int | None,
        total: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The client step of this shard's participants (local indices; None: all active clients).

        Returns the sum of their item-row changes and the shard's client state after the round.
        """
        self.global_view = (global_items, global_users)
        broadcast = Broadcast(item_table, global_items, global_users)
        local = self.active if participants is None else participants
        if local.numel() == 0:  # none of this shard's clients was picked this round
            return torch.zeros_like(item_table), self.store.state()
        upload = client_updates(
            self.store, broadcast, local, self.model, self.federated, None, total=total, round_key=round_key
        )
        return upload, self.store.state()

    def ping(self) -> int:
        return os.getpid()


def split_users(counts: torch.Tensor, shards: int) -> list[torch.Tensor]:
    """Contiguous blocks of user indices with about the same number of interactions each."""
    n_users = counts.numel()
    shards = max(1, min(shards, n_users))
    cumulative = counts.cumsum(0).to(torch.float64)
    total = float(cumulative[-1]) if n_users else 0.0
    bounds = [0]
    for k in range(1, shards):
        cut = int(torch.searchsorted(cumulative, torch.tensor(total * k / shards, dtype=torch.float64)))
        bounds.append(min(max(cut + 1, bounds[-1] + 1), n_users - (shards - k)))
    bounds.append(n_users)
    return [torch.arange(start, end) for start, end in zip(bounds[:-1], bounds[1:])]


def _ray_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as ex

    names = (
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "ObjectLostError",
        "OwnerDiedError",
        "WorkerCrashedError",
        "NodeDiedError",
    )
    return tuple(getattr(ex, name) for name in names if hasattr(ex, name))


def _nbytes(value) -> int:
    if value is None:
        return 0
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 8  # a 64-bit number


class RayBackend:
    """Runs the client step of ``run_round`` on ``run.shards`` Ray actors; see the module docstring."""

    max_retries = 3
    # Test hook (a staticmethod on the class): called as hook(backend, round_index) after a round was
    # sent to the shards and before their answers are collected; the fault test kills an actor there.
    before_collect: Callable[["RayBackend", int], None] | None = None

    def __init__(self, config: Config):
        self.config = config
        self.shards = config.run.shards
        self.address = config.run.ray_address
        self.store: ClientStore | None = None  # the driver's committed copy the shards were built from
        self.actors: list = []
        self.shard_users: list[torch.Tensor] = []
        self.started_ray = False
        self.restarts = 0
        self.rounds = 0
        self.stats: dict[str, float] = {}
        self.shard_bytes: list[dict[str, int]] = []

    # -- life cycle --------------------------------------------------------------------------------
    def _start(self, clients: ClientStore) -> None:
        import ray

        if not ray.is_initialized():
            options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            if self.address:
                ray.init(address=self.address, **options)
            else:  # a local instance of our own, even if RAY_ADDRESS names another
                ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), **options)
            self.started_ray = True
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.cpus_per_actor = min(1.0, cpus / self.shards)
        self.store = clients
        self.shard_users = split_users(clients.counts.cpu(), self.shards)
        self.actors = [self._spawn(k) for k in range(len(self.shard_users))]

    def _spawn(self, shard: int):
        """A shard actor holding the committed state of its clients."""
        import ray

        remote = ray.remote(ShardWorker).options(num_cpus=self.cpus_per_actor, max_restarts=0)
        ids = self.shard_users[shard].to(self.store.users.device)
        part = self.store.shard(ids)
        part = _to_cpu(part)
        return remote.remote(part, self.config.model, self.config.federated, max(1, int(self.cpus_per_actor)))

    def close(self) -> None:
        """Stop the shard actors (and Ray, if this backend started it).  A later round restarts them
        from the driver's committed copy of the client state."""
        if self.actors:
            import ray

            for actor in self.actors:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        self.actors, self.store = [], None
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False

    # -- one round -----------------------------------------------------------------------------------
    def client_round(
        self, model, broadcast: Broadcast, participants: torch.Tensor, generator: torch.Generator
    ) -> Upload:
        """The same client step as ``round.run_round`` runs locally: the sum of the participants' uploads."""
        import ray

        clients: ClientStore = model.clients
        if self.store is not clients:  # first round, or unlearning gave the model a new client store
            if self.actors:
                for actor in self.actors:
                    ray.kill(actor)
            self._start(clients)
        started = time.perf_counter()
        round_key = draw_round_key(generator)  # the same single draw as the local counter sampler
        total = max(int(clients.counts[participants].sum()), 1)  # public: broadcast to every shard
        device = broadcast.item_table.device
        item_table = broadcast.item_table.cpu()
        global_items = None if broadcast.global_items is None else broadcast.global_items.cpu()
        table_ref, items_ref = ray.put(item_table), ray.put(global_items)
        active = clients.counts > 0
        all_active = participants.numel() == int(active.sum())
        participants_cpu = participants.cpu()
        shares = clients.shares.cpu().bool()
        arguments = []
        for ids in self.shard_users:
            if all_active:
                part = None
            else:
                inside = participants_cpu[(participants_cpu >= ids[0]) & (participants_cpu <= ids[-1])]
                part = torch.searchsorted(ids, inside)
            users = None
            if broadcast.global_users is not None:  # each sharing client gets its own g_u, nobody else's
                users = broadcast.global_users.cpu()[ids[shares[ids]]]
            arguments.append((users, part))

        def call(shard: int):
            users, part = arguments[shard]
            return self.actors[shard].train_round.remote(table_ref, items_ref, users, part, round_key, total)

        results = self._collect({k: call(k) for k in range(len(self.actors))}, call)
        # in shard order: the same sum whatever order the shards finish in
        upload = sum_uploads([Upload(results[k][0]) for k in range(len(self.actors))])
        for ids, (_, state) in zip(self.shard_users, (results[k] for k in range(len(self.actors)))):
            ids = ids.to(clients.users.device)
            for name, value in state.items():  # commit: the state after this completed round
                getattr(clients, name)[ids] = value.to(clients.users.device)
        self.rounds += 1
        self._account(item_table, global_items, arguments, results, time.perf_counter() - started)
        return Upload(upload.item_change_sum.to(device))

    def _collect(self, refs: dict, call) -> dict:
        """Answers of every shard; a shard whose actor died is re-created from the committed state
        and runs the round again (up to ``max_retries`` times)."""
        import ray

        if self.before_collect is not None:
            self.before_collect(self, self.rounds)
        errors = _ray_errors()
        results = {}
        for attempt in range(self.max_retries + 1):
            failed = []
            for shard, ref in refs.items():
                try:
                    results[shard] = ray.get(ref)
                except errors:
                    failed.append(shard)
            if not failed:
                return results
            if attempt == self.max_retries:
                break
            refs = {}
            for shard in failed:
                try:
                    ray.kill(self.actors[shard])
                except Exception:  # noqa: BLE001 - already gone
                    pass
                self.actors[shard] = self._spawn(shard)
                self.restarts += 1
                refs[shard] = call(shard)
        raise RuntimeError(
            f"ray backend: shard(s) {failed} failed {self.max_retries + 1} times in round {self.rounds + 1}"
        )

    def _account(self, item_table, global_items, arguments, results, seconds: float) -> None:
        """Bytes of the protocol per shard this round (payloads; Ray adds a small fixed framing)."""
        common = _nbytes(item_table) + _nbytes(global_items) + 16  # Q, G_I, round key, total count
        self.shard_bytes = []
        for k, (users, part) in enumerate(arguments):
            upload, state = results[k]
            self.shard_bytes.append(
                {"down": common + _nbytes(users) + _nbytes(part), "up": _nbytes(upload), "checkpoint": _nbytes(state)}
            )
        n = len(self.shard_bytes)
        self.stats = {
            "net/shards": float(n),
            "net/down_bytes_per_shard": sum(b["down"] for b in self.shard_bytes) / n,
            "net/up_bytes_per_shard": sum(b["up"] for b in self.shard_bytes) / n,
            "net/checkpoint_bytes_per_shard": sum(b["checkpoint"] for b in self.shard_bytes) / n,
            "net/client_step_seconds": seconds,
            "net/restarts": float(self.restarts),
        }

    def last_round_stats(self) -> dict[str, float]:
        return dict(self.stats)


def _to_cpu(store: ClientStore) -> ClientStore:
    for name, value in list(vars(store).items()):
        if isinstance(value, torch.Tensor):
            setattr(store, name, value.cpu())
    return store
