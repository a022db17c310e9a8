"""Synthetic interactions at any scale: power-law users and items, a little latent structure, seeded.

``generate(n_users)`` returns a raw table (user_id, item_id, rating, timestamp) that
``fedshare.data.prepare`` accepts like a MovieLens file.  It exists for scaling benchmarks
(bench/scaling.py), where real datasets of 100k-1M users are not at hand.

How a table is drawn (all numpy, vectorized; one ``np.random.default_rng(seed)`` so a seed gives
the same table on every machine):

* **User activity** is a shifted Pareto (Lomax) draw with tail index ``user_alpha``:
  ``n_u = min_per_user + s * Y_u`` with ``Y_u ~ Lomax(alpha)``, clipped to
  ``[min_per_user, max_per_user]`` (default max: half the catalogue), then stochastically rounded.
  The scale ``s`` is found by bisection so that the mean of the clipped counts is
  ``mean_per_user``.  alpha=2 (default) gives a long tail: with 1M users the most active user has
  thousands of interactions while most have a few.
* **Item popularity** is Zipf-like: the item of popularity rank r has weight ``r ** -item_exponent``
  (default 1.0, close to MovieLens' head).  Item IDs are a random permutation of the ranks, so an
  ID says nothing about popularity.
* **Latent structure**: items and users are spread over ``n_clusters`` taste clusters.  Each draw of a
  user comes, with probability ``affinity``, from the items of the user's own cluster (still by
  popularity within the cluster), else from the whole catalogue.  Items of a cluster co-occur, so a
  recommender has something to learn; ratings are higher inside the user's cluster.
* **Distinct items per user**: draws are made with replacement, de-duplicated per user, and the
  users left short draw again exactly what they miss (up to 12 rounds; the last 6 draw uniformly so
  even the most active users fill up).  A user can end a little short only in extreme settings;
  ``frame.attrs["synthetic"]`` reports ``actual_mean`` and ``short_users``.

The default catalogue is ``n_items = max(1000, n_users // 20)``: it grows with the number of users
(so the mean number of interactions per item stays about ``20 * mean_per_user``, as in a service
whose catalogue grows with its audience) and never drops below 1,000 items.

    >>> frame = generate(10_000, mean_per_user=20, seed=0)
    >>> frame.attrs["synthetic"]["actual_mean"]   # ~20.0
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_MIN_ITEMS = 1000


USERS_PER_ITEM = 20  # default catalogue: one item per 20 users, at least DEFAULT_MIN_ITEMS


TIMESTAMP_START = 1_600_000_000


TIMESTAMP_SPAN = 3 * 365 * 24 * 3600


TOP_UP_ROUNDS = 12  # de-duplication top-up rounds (the last half draw uniformly)


def default_n_items(n_users: int) -> int:
    """The catalogue size used when ``n_items`` is not given: max(1000, n_users // 20)."""
    return max(DEFAULT_MIN_ITEMS, n_users // USERS_PER_ITEM)


def generate(
    n_users: int,
    mean_per_user: float = 20,
    n_items: int | None = None,
    user_alpha: float = 2.0,
    item_exponent: float = 1.0,
    n_clusters: int = 16,
    affinity: float = 0.5,
    min_per_user: int = 3,
    max_per_user: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A raw interaction table with columns user_id, item_id, rating, timestamp (one row per distinct pair).

    ``n_users`` users with on average ``mean_per_user`` distinct items each (at least
    ``min_per_user``, at most ``max_per_user``, default ``n_items // 2``); ``n_items`` defaults to
    ``default_n_items(n_users)``.  The parameters and the achieved mean are in
    ``frame.attrs["synthetic"]``.  Items that nobody drew do not appear in the table.
    """
    n_items = default_n_items(n_users) if n_items is None else int(n_items)
    max_per_user = n_items // 2 if max_per_user is None else int(max_per_user)
    if n_users < 1 or n_items < 2:
        raise ValueError(f"need at least 1 user and 2 items, got {n_users} users and {n_items} items")
    if not min_per_user <= mean_per_user <= max_per_user:
        raise ValueError(
            f"mean_per_user={mean_per_user} must lie in [min_per_user={min_per_user}, "
            f"max_per_user={max_per_user}] (max_per_user defaults to n_items // 2)"
        )
    if user_alpha <= 1:
        raise ValueError(f"user_alpha must be > 1 (a finite mean), got {user_alpha}")
    if not 0.0 <= affinity <= 1.0 or n_clusters < 1:
        raise ValueError("affinity must be in [0, 1] and n_clusters >= 1")
    rng = np.random.default_rng(seed)

    targets = _user_counts(rng, n_users, mean_per_user, user_alpha, min_per_user, max_per_user)
    sampler = _ItemSampler(rng, n_users, n_items, item_exponent, n_clusters, affinity)
    users, items = _distinct_draws(rng, sampler, targets, n_items)

    in_cluster = sampler.item_cluster[items] == sampler.user_cluster[users]
    rating = np.clip(np.rint(3.0 + 1.2 * in_cluster + rng.normal(0.0, 1.0, users.size)), 1, 5).astype(np.float32)
    timestamp = TIMESTAMP_START + rng.integers(0, TIMESTAMP_SPAN, users.size)
    frame = pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": sampler.item_ids[items].astype(np.int64),
            "rating": rating,
            "timestamp": timestamp.astype(np.int64),
        }
    )
    counts = np.bincount(users, minlength=n_users)
    frame.attrs["synthetic"] = {
        "n_users": int(n_users),
        "n_items": int(n_items),
        "items_drawn": int(np.unique(items).size),
        "requested_mean": float(mean_per_user),
        "actual_mean": float(users.size / n_users),
        "min_per_user": int(min_per_user),
        "max_per_user": int(max_per_user),
        "largest_user": int(counts.max()),
        "short_users": int((counts < targets).sum()),
        "user_alpha": float(user_alpha),
        "item_exponent": float(item_exponent),
        "n_clusters": int(n_clusters),
        "affinity": float(affinity),
        "seed": int(seed),
    }
    return frame


def _user_counts(rng: np.random.Generator, n_users: int, mean: float, alpha: float, low: int, high: int) -> np.ndarray:
    """Integer activity per user: low + s * Lomax(alpha), clipped to [low, high], mean ~= ``mean``."""
    tail = rng.pareto(alpha, n_users)  # Lomax: P(Y > y) = (1 + y) ** -alpha
    if mean <= low or tail.max() == 0:
        return np.full(n_users, int(round(mean)), dtype=np.int64)

    def clipped_mean(scale: float) -> float:
        return float(np.minimum(low + scale * tail, high).mean())

    lo_scale, hi_scale = 0.0, (mean - low) / max(tail.mean(), 1e-12)
    while clipped_mean(hi_scale) < mean and hi_scale < 1e12:  # clipping at ``high`` needs a larger scale
        hi_scale *= 2
    for _ in range(60):  # bisection on a monotone function
        middle = 0.5 * (lo_scale + hi_scale)
        lo_scale, hi_scale = (middle, hi_scale) if clipped_mean(middle) < mean else (lo_scale, middle)
    real = np.minimum(low + hi_scale * tail, high)
    counts = np.floor(real + rng.random(n_users)).astype(np.int64)  # stochastic rounding keeps the mean
    return np.clip(counts, low, high)


class _ItemSampler:
    """Zipf-like item draws, optionally restricted to the drawing user's taste cluster."""

    def __init__(
        self, rng: np.random.Generator, n_users: int, n_items: int, exponent: float, n_clusters: int, affinity: float
    ):
        self.n_items, self.affinity = n_items, affinity
        weights = np.arange(1, n_items + 1, dtype=np.float64) ** -exponent  # index = popularity rank
        self.global_cdf = np.cumsum(weights) / weights.sum()
        self.item_ids = rng.permutation(n_items)  # raw ID of each rank
        self.item_cluster = rng.integers(0, n_clusters, n_items)
        self.user_cluster = rng.integers(0, n_clusters, n_users)
        # One sorted array for all clusters: cluster c's items occupy [start_c, end_c) ordered by rank and
        # their CDF values are shifted by c, so a single searchsorted(c + u) draws within cluster c.
        self.by_cluster = np.lexsort((np.arange(n_items), self.item_cluster))
        clusters = self.item_cluster[self.by_cluster]
        cluster_weights = weights[self.by_cluster]
        cumulative = np.cumsum(cluster_weights)
        starts = np.r_[0, np.flatnonzero(np.diff(clusters)) + 1]
        before = np.repeat(np.r_[0.0, cumulative[starts[1:] - 1]], np.diff(np.r_[starts, n_items]))
        totals = np.repeat(np.add.reduceat(cluster_weights, starts), np.diff(np.r_[starts, n_items]))
        self.cluster_cdf = clusters + (cumulative - before) / totals
        self.cluster_cdf[np.r_[starts[1:] - 1, n_items - 1]] = clusters[np.r_[starts[1:] - 1, n_items - 1]] + 1.0
        self.present = np.zeros(n_clusters, dtype=bool)
        self.present[clusters] = True

    def draw(self, rng: np.random.Generator, users: np.ndarray, uniform: bool = False) -> np.ndarray:
        """One item rank per entry of ``users`` (with replacement)."""
        if uniform:
            return rng.integers(0, self.n_items, users.size)
        u = rng.random(users.size)
        items = np.minimum(np.searchsorted(self.global_cdf, u, side="right"), self.n_items - 1)
        local = rng.random(users.size) < self.affinity
        local &= self.present[self.user_cluster[users]]  # a cluster without items falls back to global
        where = np.flatnonzero(local)
        shifted = self.user_cluster[users[where]] + u[where]
        position = np.minimum(np.searchsorted(self.cluster_cdf, shifted, side="right"), self.n_items - 1)
        items[where] = self.by_cluster[position]
        return items


def _distinct_draws(
    rng: np.random.Generator, sampler: _ItemSampler, targets: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(users, items), sorted by user then item rank, with up to ``targets[u]`` distinct items per user.

    Pairs are handled as sorted keys user * n_items + item.  Each round draws exactly the missing
    number of items per user, so nobody ends above target; duplicates (within the round or with what the
    user already holds) are dropped and retried in the next round.  The big first draw is sorted once;
    later rounds sort only their own draws and merge them in with a stable sort (a linear merge of two
    sorted runs).
    """
    n_users = targets.size
    users = np.repeat(np.arange(n_users, dtype=np.int64), targets)
    keys = _sorted_unique(users * n_items + sampler.draw(rng, users))
    del users
    have = np.bincount(keys // n_items, minlength=n_users)
    for attempt in range(TOP_UP_ROUNDS):
        deficit = targets - have
        short = np.flatnonzero(deficit > 0)
        if short.size == 0:
            break
        extra_users = np.repeat(short, deficit[short])
        extra = sampler.draw(rng, extra_users, uniform=attempt >= TOP_UP_ROUNDS // 2)
        fresh = _sorted_unique(extra_users * n_items + extra)
        fresh = fresh[~_is_member(fresh, keys)]
        have += np.bincount(fresh // n_items, minlength=n_users)
        keys = np.concatenate([keys, fresh])
        keys.sort(kind="stable")
    return keys // n_items, keys % n_items


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique by sorting in place (numpy 2's hash-based np.unique is several times slower here)."""
    keys.sort()
    if keys.size == 0:
        return keys
    distinct = np.empty(keys.size, dtype=bool)
    distinct[0] = True
    np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
    return keys[distinct]


def _is_member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.size, dtype=bool)
    position = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[position] == keys
