"""Negative sampling: from one generator stream, or from a counter-based hash that is independent of
how the clients are grouped (the Ray backend's shards draw the same negatives as one process)."""

from __future__ import annotations

import torch


def sample_negatives(
    users: torch.Tensor,
    n_items: int,
    n_negatives: int,
    positive_keys: torch.Tensor,
    generator: torch.Generator,
    tries: int = 4,
) -> torch.Tensor:
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


def counter_negatives(
    users: torch.Tensor,
    slots: torch.Tensor,
    n_items: int,
    n_negatives: int,
    positive_keys: torch.Tensor,
    round_key: int,
    key_users: torch.Tensor | None = None,
    tries: int = 4,
) -> torch.Tensor:
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
    base = splitmix64(
        splitmix64(splitmix64(torch.full(shape, round_key, dtype=torch.long, device=users.device)) + users.unsqueeze(1))
        + slot
    )
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
