"""What crosses the network in a round, as typed messages: the server's broadcast down, the clients'
upload up, and the observer seam through which the FRU baseline logs both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from fedshare.federated.client import ClientBatch


@dataclass
class Broadcast:
    """What the server sends down in a round (detached tensors)."""

    item_table: torch.Tensor  # Q, the federated item embeddings
    global_items: torch.Tensor | None  # G_I from LightGCN over the shared graph
    global_users: torch.Tensor | None  # g_u; the simulator hands row u to client u only


@dataclass
class Upload:
    """What reaches the server from a round's clients: only the sum over clients of their item-row
    changes, per item (an I x d table, as secure aggregation would deliver it)."""

    item_change_sum: torch.Tensor


class RoundObserver(Protocol):
    """Sees a round's updates before they are summed (the FRU baseline's update log)."""

    def add_clients(self, batch: ClientBatch, changes: list[torch.Tensor]) -> None:
        """Each item-row copy's change of the clients in ``batch``, before the scatter-add."""

    def add_server(self, gradients: dict[str, torch.Tensor | None]) -> None:
        """The gradients of the server's own loss (graph BPR, alignment), per table."""
