"""LightGCN propagation (He et al., SIGIR 2020): the mean of the layers of D^-1/2 A D^-1/2 powers."""

from __future__ import annotations

import warnings

import torch

# CSR is what we want on CPU and CUDA; torch's "beta" notice would greet every user on every run.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite user-item graph, as a sparse (U+I) x (U+I) tensor.

    Users are nodes 0..U-1, items U..U+I-1.  Isolated nodes (users who share nothing, items nobody
    shared) get no edges, so propagation leaves them at zero beyond layer 0.
    """
    device = users.device
    n_nodes = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n_nodes).to(torch.float32)
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=1).rsqrt(), torch.zeros_like(degree))
    values = inv_sqrt[rows] * inv_sqrt[cols]
    adjacency = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n_nodes, n_nodes), device=device, check_invariants=False
    )
    # CSR times dense is several times faster than COO on CPU and is supported on CUDA too.
    return adjacency.coalesce().to_sparse_csr()


class _SymmetricPropagation(torch.autograd.Function):
    """y = A x for a symmetric sparse A, so the backward pass is again A @ grad (no transpose)."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


def lightgcn(
    user_emb: torch.Tensor, item_emb: torch.Tensor, adjacency: torch.Tensor, layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN: the mean of layer 0..L embeddings, where layer k+1 = A_hat @ layer k."""
    layer = torch.cat([user_emb, item_emb])
    total = layer
    for _ in range(layers):
        layer = _SymmetricPropagation.apply(adjacency, layer)
        total = total + layer
    out = total / (layers + 1)
    return out[: user_emb.shape[0]], out[user_emb.shape[0] :]
