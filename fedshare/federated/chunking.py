"""How many interactions (or shared edges) one forward/backward pass takes at most."""

from __future__ import annotations

import torch

from fedshare.config import FederatedConfig

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
