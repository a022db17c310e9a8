"""The server: a LightGCN graph learner over the shared graph, and the federated item table Q that the
clients train through the aggregation strategy.  Everything it holds is built from a SharedGraph and from
aggregated client uploads."""

from __future__ import annotations

import torch

from fedshare.config import FederatedConfig, ModelConfig
from fedshare.data.sharing import SharedGraph
from fedshare.federated.aggregation import FedAdam
from fedshare.federated.chunking import interaction_chunk
from fedshare.federated.messages import Broadcast, RoundObserver, Upload
from fedshare.model.lightgcn import lightgcn, normalized_adjacency
from fedshare.model.losses import chunked_mean_bpr, info_nce, weighted_square_norm
from fedshare.model.sampling import sample_negatives

SERVER_TABLES = ("graph_users", "graph_items", "item_table")  # everything the server learns
MENDED_EDGES = ("mended_users", "mended_items")  # graph mending's predicted edges (model.mend_edges > 0)


class Server:
    """The server's whole state.  Its only interaction data is ``self.graph`` (shared edges)."""

    def __init__(
        self,
        graph: SharedGraph,
        model: ModelConfig,
        federated: FederatedConfig,
        generator: torch.Generator,
        device: torch.device,
        use_graph: bool,
        train_item_table: bool,
    ):
        self.model = model
        self.device = device
        self.edge_chunk = interaction_chunk(federated, device)  # shared edges per chunk of the graph loss
        self.batch_edges = federated.server_batch  # shared edges per graph-learner step; 0 = all
        self.steps_per_round = federated.server_steps  # graph-learner steps per round; 0 = a whole epoch
        self.sample_users = federated.server_sampling == "users"  # uniform users, then one of their edges
        self.mend_edges = model.mend_edges  # predicted edges per sharing user (graph mending); 0 = off
        self.generator = generator
        self.use_graph = use_graph and graph.n_edges > 0
        self.set_graph(graph)

        def init(rows: int) -> torch.Tensor:
            values = torch.randn(rows, model.dim, generator=generator, device=device) * model.init_std
            return values.requires_grad_()

        self.item_table = init(graph.n_items)  # local view of items, trained by the clients
        self.graph_users = init(graph.n_users)  # server-side embeddings of the LightGCN
        self.graph_items = init(graph.n_items)
        # Two learners: Adam on the graph learner's own embeddings (at graph_lr, by default server_lr),
        # and the aggregation strategy on Q (which the alignment term also reaches through Q's gradient).
        self.graph_optimizer = (
            torch.optim.Adam([self.graph_users, self.graph_items], lr=federated.graph_lr or federated.server_lr)
            if self.use_graph
            else None
        )
        self.strategy = FedAdam(self.item_table, federated.local_lr, federated.server_lr) if train_item_table else None

    def set_graph(self, graph: SharedGraph) -> None:
        """Take a (new) shared graph: the edges, their keys and the normalized adjacency.

        Used at construction and when unsharing removes edges; the embeddings are kept.
        """
        device = self.device
        self.graph = SharedGraph(graph.users.to(device), graph.items.to(device), graph.n_users, graph.n_items)
        self.shared_keys = torch.sort(self.graph.users * graph.n_items + self.graph.items).values
        no_edges = self.graph.users[:0]
        self.set_mended(no_edges, no_edges)  # a new graph drops the predicted edges until the next mending
        self.items_in_graph = torch.unique(self.graph.items)
        # For user-uniform sampling: the edges grouped by user (positions), and where each user's start.
        self.edges_by_user = torch.argsort(self.graph.users, stable=True)
        self.edge_counts = torch.bincount(self.graph.users, minlength=graph.n_users)
        self.edge_starts = torch.cumsum(self.edge_counts, 0) - self.edge_counts
        self.users_with_edges = torch.nonzero(self.edge_counts).flatten()

    def set_mended(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Propagate over the shared edges plus these predicted ones (graph mending; none by default).

        The predicted edges only densify the graph that LightGCN propagates over: the BPR loss, its
        negatives and the alignment still read the shared edges alone.
        """
        graph = self.graph
        self.mended_users, self.mended_items = users.to(self.device), items.to(self.device)
        self.adjacency = normalized_adjacency(
            torch.cat([graph.users, self.mended_users]),
            torch.cat([graph.items, self.mended_items]),
            graph.n_users,
            graph.n_items,
        )

    def mend(self, chunk_users: int = 1024) -> None:
        """Graph mending (after CDCGNNFed): give every user with shared edges ``model.mend_edges``
        predicted edges, their best-scored items under the server's current LightGCN that they did
        not share.  The graph learner is itself trained to predict held-out shared edges (BPR on
        them), so its scores are the link predictor; everything read here is the server's own state.
        """
        if not self.use_graph or self.mend_edges <= 0:
            return
        with torch.no_grad():
            global_users, global_items = self.propagate()  # the model as it scores now
            users = self.users_with_edges
            picked = [self.best_unshared_items(chunk, global_users, global_items) for chunk in users.split(chunk_users)]
            items = torch.cat(picked) if picked else users[:0].reshape(0, self.mend_edges)
            self.set_mended(users.repeat_interleave(items.shape[1]), items.flatten())

    def best_unshared_items(
        self, users: torch.Tensor, global_users: torch.Tensor, global_items: torch.Tensor
    ) -> torch.Tensor:
        """The ``mend_edges`` highest-scored items of each of ``users`` among those they did not share."""
        scores = global_users[users] @ global_items.T
        row_of = torch.full((self.graph.n_users,), -1, dtype=torch.long, device=self.device)
        row_of[users] = torch.arange(users.numel(), device=self.device)
        rows = row_of[self.graph.users]
        own = rows >= 0
        scores[rows[own], self.graph.items[own]] = -torch.inf
        return scores.topk(min(self.mend_edges, self.graph.n_items), dim=1).indices

    # -- one round -------------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        if not self.use_graph:
            return None, None
        return lightgcn(self.graph_users, self.graph_items, self.adjacency, self.model.server_layers)

    def broadcast(self, global_users: torch.Tensor | None, global_items: torch.Tensor | None) -> Broadcast:
        detach = lambda t: None if t is None else t.detach()  # noqa: E731
        return Broadcast(self.item_table.detach(), detach(global_items), detach(global_users))

    def step(
        self,
        upload: Upload | None,
        global_users: torch.Tensor | None,
        global_items: torch.Tensor | None,
        alignment_weight: float,
        extra_loss: torch.Tensor | None = None,
        observer: RoundObserver | None = None,
    ) -> dict[str, float]:
        """One FedAdam step on Q and one epoch of the graph learner; returns the loss terms for logging.

        The graph learner's epoch is one Adam step on all shared edges (``federated.server_batch: 0``)
        or one step per mini-batch of that many edges, in a random order, each on a fresh
        propagation (LightGCN's own regime: far more steps per pass over the data).  The first step
        reuses this round's propagation and carries the alignment and ``extra_loss`` (e.g. the
        contrastive unlearning term) and Q's step.  ``federated.server_steps: N`` takes only the
        first N mini-batches of the shuffled epoch, so that a round with a small fraction of clients
        (a mini-batch of users) is matched by a few graph steps (a mini-batch of shared edges).
        The ``observer`` sees the gradients of that first step's loss, before the clients' part is
        added (the FRU update log records them).
        """
        if self.graph_optimizer is None and self.strategy is None:
            return {}
        batches = self.edge_batches()
        logs = self.first_step(batches[0], upload, global_users, global_items, alignment_weight, extra_loss, observer)
        for edges in batches[1:]:
            self.graph_optimizer.zero_grad(set_to_none=True)
            global_users, global_items = self.propagate()
            self.graph_bpr_loss(global_users, global_items, edges).backward()
            self.graph_optimizer.step()
        return logs

    def edge_batches(self) -> list[torch.Tensor | None]:
        """The shared edges of this epoch's steps: ``[None]`` (all at once) or a split of a shuffled epoch.

        An epoch is every shared edge once (``federated.server_sampling: edges``) or as many draws
        of a uniform user and then one of their edges (``users``, LightGCN-PyTorch's sampler: a user
        with few edges weighs as much as one with many, as in the per-user mean of Recall@K).
        """
        size, n_edges = self.batch_edges, self.graph.n_edges
        if size <= 0 or size >= n_edges or not self.use_graph:
            return [None]
        if self.sample_users:
            order = self.user_uniform_edges()
        else:
            order = torch.randperm(n_edges, generator=self.generator, device=self.device)
        batches = list(order.split(size))
        return batches[: self.steps_per_round] if self.steps_per_round > 0 else batches

    def user_uniform_edges(self) -> torch.Tensor:
        """Positions of ``n_edges`` shared edges, each drawn as a uniform user and a uniform edge of theirs."""
        n_edges, device = self.graph.n_edges, self.device
        wanted = n_edges if self.steps_per_round <= 0 else min(n_edges, self.steps_per_round * self.batch_edges)
        pick = torch.randint(len(self.users_with_edges), (wanted,), generator=self.generator, device=device)
        users = self.users_with_edges[pick]
        counts = self.edge_counts[users]
        offset = (torch.rand(wanted, generator=self.generator, device=device) * counts).long().clamp(max=counts - 1)
        return self.edges_by_user[self.edge_starts[users] + offset]

    def first_step(
        self,
        edges: torch.Tensor | None,
        upload: Upload | None,
        global_users: torch.Tensor | None,
        global_items: torch.Tensor | None,
        alignment_weight: float,
        extra_loss: torch.Tensor | None,
        observer: RoundObserver | None,
    ) -> dict[str, float]:
        self.zero_grad()
        logs: dict[str, float] = {}
        if self.use_graph:
            loss = self.graph_bpr_loss(global_users, global_items, edges)
            logs["server_bpr"] = loss.item()
            if alignment_weight > 0:
                align = self.alignment_loss(global_items)
                logs["align_items"] = align.item()
                loss = loss + alignment_weight * align
            if extra_loss is not None:
                logs["extra"] = extra_loss.item()
                loss = loss + extra_loss
            loss.backward()
        if observer is not None:
            observer.add_server({name: getattr(self, name).grad for name in SERVER_TABLES})
        pseudo_gradient = None
        if upload is not None and self.strategy is not None:
            pseudo_gradient = self.strategy.pseudo_gradient(upload)
        self.apply(pseudo_gradient)
        return logs

    def zero_grad(self) -> None:
        if self.graph_optimizer is not None:
            self.graph_optimizer.zero_grad(set_to_none=True)
        if self.strategy is not None:
            self.strategy.zero_grad()

    def apply(self, item_pseudo_gradient: torch.Tensor | None) -> None:
        """Step both learners on the gradients their tables hold (plus the clients' pseudo-gradient on Q)."""
        if self.graph_optimizer is not None:
            self.graph_optimizer.step()
        if self.strategy is not None:
            self.strategy.step(item_pseudo_gradient)

    def reset_optimizers(self) -> None:
        """Fresh Adam states with the same settings (FRU's rollback to round 0)."""
        if self.graph_optimizer is not None:
            optimizer = self.graph_optimizer
            self.graph_optimizer = type(optimizer)(optimizer.param_groups[0]["params"], **optimizer.defaults)
        if self.strategy is not None:
            self.strategy.reset()

    def graph_bpr_loss(
        self, global_users: torch.Tensor, global_items: torch.Tensor, edges: torch.Tensor | None = None
    ) -> torch.Tensor:
        """BPR on the shared edges (all, or the positions ``edges``) with one sampled negative each
        (not a shared positive of that user)."""
        users, items = self.graph.users, self.graph.items
        if edges is not None:
            users, items = users[edges], items[edges]
        negatives = sample_negatives(users, self.graph.n_items, 1, self.shared_keys, self.generator)[:, 0]
        loss = chunked_mean_bpr(global_users, global_items, users, items, negatives, self.edge_chunk)
        # L2 on the layer-0 embeddings of every (user, positive, negative) triple, LightGCN-style.
        l2 = (
            weighted_square_norm(self.graph_users, users)
            + weighted_square_norm(self.graph_items, items)
            + weighted_square_norm(self.graph_items, negatives)
        ) / (2 * users.numel())
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
        """The learned tables (and, with graph mending on, the predicted edges they are scored over)."""
        names = ("item_table", "graph_users", "graph_items") + (MENDED_EDGES if self.mend_edges > 0 else ())
        return {name: getattr(self, name).detach().clone() for name in names}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name in SERVER_TABLES:
                if name in state:
                    getattr(self, name).copy_(state[name].to(self.device))
        if all(name in state for name in MENDED_EDGES):
            self.set_mended(*(state[name] for name in MENDED_EDGES))
