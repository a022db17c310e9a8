"""Aggregation: which clients take part in a round, and the FedAdam strategy that turns their summed
upload into a pseudo-gradient for the federated item table Q and takes an Adam step on it.

A client's upload is the change of its item-row copies after local SGD with step ``local_lr``, so
the sum over clients is ``-local_lr`` times the gradient of the mean client loss (one local step);
FedAdam (Reddi et al., ICLR 2021) feeds ``-sum / local_lr`` to Adam as that gradient.
"""

from __future__ import annotations

import torch

from fedshare.federated.client import ClientStore
from fedshare.federated.messages import Upload


def pick_participants(store: ClientStore, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The sorted indices of this round's clients: every client with data, or a random ``fraction``."""
    active = torch.nonzero(store.counts > 0).squeeze(1)
    if fraction >= 1.0:
        return active
    count = max(1, int(round(fraction * active.numel())))
    pick = torch.randperm(active.numel(), generator=generator, device=active.device)[:count]
    return torch.sort(active[pick]).values


def sum_uploads(uploads: list[Upload]) -> Upload:
    """The uploads of several groups of clients (e.g. Ray shards) added in the given, fixed order."""
    total = torch.zeros_like(uploads[0].item_change_sum)
    for upload in uploads:
        total += upload.item_change_sum
    return Upload(total)


class FedAdam:
    """Server-side Adam on the item table, fed with the clients' aggregate as a pseudo-gradient."""

    def __init__(self, item_table: torch.Tensor, local_lr: float, server_lr: float):
        self.item_table = item_table
        self.local_lr = local_lr
        self.optimizer = torch.optim.Adam([item_table], lr=server_lr)

    def pseudo_gradient(self, upload: Upload) -> torch.Tensor:
        """change = -local_lr * gradient, so gradient = -change / local_lr."""
        return -upload.item_change_sum / self.local_lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, pseudo_gradient: torch.Tensor | None) -> None:
        """Adam on Q with the pseudo-gradient added to whatever gradient Q already has (the alignment's)."""
        if pseudo_gradient is not None:
            if self.item_table.grad is None:
                self.item_table.grad = pseudo_gradient
            else:
                self.item_table.grad += pseudo_gradient
        self.optimizer.step()

    def reset(self) -> None:
        """A fresh optimizer state with the same settings (FRU's rollback)."""
        self.optimizer = type(self.optimizer)([self.item_table], **self.optimizer.defaults)
