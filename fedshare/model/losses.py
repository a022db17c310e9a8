"""Losses: BPR (with its gradients in closed form), L2 on the rows a batch uses, InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_terms(user_vec: torch.Tensor, pos_vec: torch.Tensor, neg_vec: torch.Tensor) -> torch.Tensor:
    """Per-triple BPR loss -log sigmoid(s_pos - s_neg); neg_vec may hold several negatives [N, n, d]."""
    if neg_vec.shape[1] == 1:  # the common case: one multiply instead of two
        return F.softplus((user_vec * (neg_vec[:, 0] - pos_vec)).sum(-1))
    pos = (user_vec * pos_vec).sum(-1, keepdim=True)
    neg = (user_vec.unsqueeze(1) * neg_vec).sum(-1)
    return F.softplus(neg - pos).mean(-1)


def bpr_gradients(
    user_vec: torch.Tensor, pos_vec: torch.Tensor, neg_vec: torch.Tensor, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``bpr_terms`` and ``scale`` times its gradients with respect to each of the three inputs, in closed form.

    With one negative the loss is softplus(x), x = u . (n - p), so with s = sigmoid(x):
    d/du = s (n - p), d/dp = -s u, d/dn = s u; with k negatives it is the mean over them.  Written
    out because autograd's backward of the same expression makes about twice as many passes over the
    [N, d] tensors, and on a CPU those passes are most of a round.  Returns (terms, d_user, d_pos, d_neg).
    """
    if neg_vec.shape[1] == 1:
        difference = neg_vec[:, 0] - pos_vec
        x = (user_vec * difference).sum(-1)
        s = (torch.sigmoid(x) * scale).unsqueeze(-1)
        d_neg = s * user_vec
        return F.softplus(x), s * difference, -d_neg, d_neg.unsqueeze(1)
    k = neg_vec.shape[1]
    x = (user_vec.unsqueeze(1) * (neg_vec - pos_vec.unsqueeze(1))).sum(-1)  # [N, k]
    s = (torch.sigmoid(x) * (scale / k)).unsqueeze(-1)
    d_neg = s * user_vec.unsqueeze(1)
    d_user = (s * (neg_vec - pos_vec.unsqueeze(1))).sum(1)
    return F.softplus(x).mean(-1), d_user, -d_neg.sum(1), d_neg


def weighted_square_norm(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """sum_k ||table[index[k]]||^2 without a gather: each row's squared norm times its count.

    Same value and gradient as gathering the rows, but the backward pass is elementwise instead of a
    scatter, which matters on CPU for hundreds of thousands of rows.
    """
    counts = torch.bincount(index.reshape(-1), minlength=table.shape[0]).to(table.dtype)
    return (counts * table.square().sum(-1)).sum()


def info_nce(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity: row k of each view is the positive of the other's row k."""
    a = F.normalize(view_a, dim=-1)
    b = F.normalize(view_b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def chunked_mean_bpr(
    user_table: torch.Tensor,
    item_table: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    negatives: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
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
            users_detached.index_select(0, users[part]),
            items_detached.index_select(0, items[part]),
            items_detached.index_select(0, negatives[part]).unsqueeze(1),
            scale=1.0 / n,
        )
        user_gradient.index_add_(0, users[part], user_rows)
        item_gradient.index_add_(0, items[part], positive_rows)
        item_gradient.index_add_(0, negatives[part], negative_rows[:, 0])
        value += terms.sum()
    surrogate = (user_table * user_gradient).sum() + (item_table * item_gradient).sum()
    return surrogate - surrogate.detach() + value / max(n, 1)
