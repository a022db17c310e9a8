"""Building blocks shared by the server, the clients and the baselines.

Everything is plain tensor code so the same functions run on CPU and CUDA, and so the vectorized
engine and the per-client reference loop compute exactly the same things.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

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
    adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_nodes, n_nodes), device=device,
                                        check_invariants=False)
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


def lightgcn(user_emb: torch.Tensor, item_emb: torch.Tensor, adjacency: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN: the mean of layer 0..L embeddings, where layer k+1 = A_hat @ layer k."""
    layer = torch.cat([user_emb, item_emb])
    total = layer
    for _ in range(layers):
        layer = _SymmetricPropagation.apply(adjacency, layer)
        total = total + layer
    out = total / (layers + 1)
    return out[: user_emb.shape[0]], out[user_emb.shape[0]:]


def bpr_terms(user_vec: torch.Tensor, pos_vec: torch.Tensor, neg_vec: torch.Tensor) -> torch.Tensor:
    """Per-triple BPR loss -log sigmoid(s_pos - s_neg); neg_vec may hold several negatives [N, n, d]."""
    if neg_vec.shape[1] == 1:  # the common case: one multiply instead of two
        return F.softplus((user_vec * (neg_vec[:, 0] - pos_vec)).sum(-1))
    pos = (user_vec * pos_vec).sum(-1, keepdim=True)
    neg = (user_vec.unsqueeze(1) * neg_vec).sum(-1)
    return F.softplus(neg - pos).mean(-1)


def bpr_gradients(user_vec: torch.Tensor, pos_vec: torch.Tensor, neg_vec: torch.Tensor,
                  scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


def adam_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                step: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """In-place Adam on rows whose step counts may differ (one count per client row).

    ``step`` has one entry per row and is already incremented.  The same formula as torch.optim.Adam,
    written out because each client keeps its own optimizer state on its device.
    """
    beta1, beta2 = betas
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = step.to(param.dtype).unsqueeze(-1)
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    denom = (exp_avg_sq / bias2).sqrt().add_(eps)
    param.sub_(lr * (exp_avg / bias1) / denom)


def sample_negatives(users: torch.Tensor, n_items: int, n_negatives: int, positive_keys: torch.Tensor,
                     generator: torch.Generator, tries: int = 4) -> torch.Tensor:
    """Uniform negatives per (user, positive), re-drawn a few times when they hit a known positive.

    ``positive_keys`` is the sorted tensor of user * n_items + item for the interactions the sampler
    may not return (a client's own training data, or the server's shared edges).
    """
    shape = (users.shape[0], n_negatives)
    negatives = torch.randint(0, n_items, shape, generator=generator, device=users.device)
    owners = users.unsqueeze(1).expand(shape)
    hit = torch.nonzero(is_member(owners * n_items + negatives, positive_keys), as_tuple=True)
    for _ in range(tries):  # only the draws that hit a positive are checked again
        if hit[0].numel() == 0:
            break
        redraw = torch.randint(0, n_items, (hit[0].numel(),), generator=generator, device=users.device)
        negatives[hit] = redraw
        still = is_member(owners[hit] * n_items + redraw, positive_keys)
        hit = (hit[0][still], hit[1][still])
    return negatives


def is_member(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[position] == keys


# --------------------------------------------------------------------------------------------------
# Counter-based negatives (``federated.sampler: counter``): each draw is a hash of its coordinates,
# so a client's negatives do not depend on which other clients are simulated in the same batch,
# process or machine.  Used by the Ray backend, where clients are split into shards.
# --------------------------------------------------------------------------------------------------

def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= (1 << 63) else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> on int64 is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 (Steele, Lea & Flood 2014) on int64 tensors; int64 products wrap like uint64."""
    z = x + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def _uniform_index(h: torch.Tensor, n: int) -> torch.Tensor:
    """An index in [0, n) from the top 53 bits of a hash (bias below n / 2^53)."""
    return _shift_right(h, 11) % n


def draw_round_key(generator: torch.Generator) -> int:
    """The round's public sampling key: one draw from the run's generator (seeded with run.seed), so
    it is a function of (seed, round).  The server draws it and broadcasts it with the item table."""
    return int(torch.randint(0, 1 << 62, (1,), generator=generator, device=generator.device).item())


def counter_negatives(users: torch.Tensor, slots: torch.Tensor, n_items: int, n_negatives: int,
                      positive_keys: torch.Tensor, round_key: int, key_users: torch.Tensor | None = None,
                      tries: int = 4) -> torch.Tensor:
    """Uniform negatives, negative k of interaction ``slot`` of ``user`` = hash(round_key, user, slot, k, attempt).

    ``users`` are global user ids (what the hash sees), ``slots`` each interaction's position among its
    user's own interactions (sorted by item), so the result depends only on the user's own data.
    ``positive_keys``/``key_users`` are what ``sample_negatives`` checks against (a store may number
    its users locally).  Draws that hit a positive are re-drawn with attempt + 1, up to ``tries`` times,
    like the stream sampler.
    """
    key_users = users if key_users is None else key_users
    shape = (users.shape[0], n_negatives)
    slot = slots.unsqueeze(1) * n_negatives + torch.arange(n_negatives, device=users.device)
    base = splitmix64(splitmix64(splitmix64(torch.full(shape, round_key, dtype=torch.long, device=users.device))
                                 + users.unsqueeze(1)) + slot)
    negatives = _uniform_index(splitmix64(base), n_items)
    owners = key_users.unsqueeze(1).expand(shape)
    hit = torch.nonzero(is_member(owners * n_items + negatives, positive_keys), as_tuple=True)
    for attempt in range(1, tries + 1):
        if hit[0].numel() == 0:
            break
        redraw = _uniform_index(splitmix64(base[hit] + attempt), n_items)
        negatives[hit] = redraw
        still = is_member(owners[hit] * n_items + redraw, positive_keys)
        hit = (hit[0][still], hit[1][still])
    return negatives
