"""Sharing masks: each user's slider rho_u and which of their *training* interactions it shares.

Validation and test interactions are never shared.  All masks of a run live in one Parquet file
(user_id, item_id, user, item, shared) so DVC can version it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedshare.config import SharingConfig
from fedshare.data.interactions import Interactions
from fedshare.errors import DataError
from fedshare.storage import atomic_write_parquet, verify_checksum, write_checksum

POLICIES = ("none", "all", "mixed", "uniform", "file")


@dataclass(frozen=True)
class SharedGraph:
    """What the server may read: the shared (user, item) training interactions and nothing else."""

    users: torch.Tensor  # int64 [E]
    items: torch.Tensor  # int64 [E]
    n_users: int
    n_items: int

    @property
    def n_edges(self) -> int:
        return int(self.users.numel())

    def pairs(self) -> set[tuple[int, int]]:
        return set(zip(self.users.tolist(), self.items.tolist()))


def parse_policy(policy: str) -> str | float:
    if policy in POLICIES:
        return policy
    try:
        ratio = float(policy)
    except ValueError:
        raise DataError(
            f"sharing policy must be one of {', '.join(POLICIES)} or a number in [0,1], got {policy!r}"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise DataError(f"sharing ratio must be in [0,1], got {ratio}")
    return ratio


def user_ratios(policy: str | float, n_users: int, seed: int) -> np.ndarray:
    """rho_u for every user under a named policy (not ``file``)."""
    rng = np.random.default_rng([seed, 1])
    if policy == "none":
        return np.zeros(n_users)
    if policy == "all":
        return np.ones(n_users)
    if policy == "mixed":  # one third each at 0, 0.5 and 1, assigned by a seeded permutation
        levels = np.array([0.0, 0.5, 1.0])
        ratios = np.empty(n_users)
        ratios[rng.permutation(n_users)] = levels[(np.arange(n_users) * 3) // max(n_users, 1)]
        return ratios
    if policy == "uniform":
        return rng.random(n_users)
    return np.full(n_users, float(policy))


def build_mask(interactions: Interactions, config: SharingConfig, seed: int) -> pd.DataFrame:
    """One row per training interaction with a boolean ``shared`` column and the user's ``ratio``."""
    train = interactions.part("train")[["user", "item", "user_id", "item_id"]].reset_index(drop=True)
    policy = parse_policy(config.policy)
    if policy == "file":
        if not config.file:
            raise DataError("sharing.policy=file needs sharing.file")
        return _mask_from_file(train, Path(config.file), interactions.n_users, seed)
    ratios = user_ratios(policy, interactions.n_users, seed)
    return _mask_from_ratios(train, ratios, seed)


def _mask_from_ratios(train: pd.DataFrame, ratios: np.ndarray, seed: int) -> pd.DataFrame:
    """Each user shares round(rho_u * n_u) of their training interactions, chosen at random."""
    rng = np.random.default_rng([seed, 2])
    users = train["user"].to_numpy()
    order = np.lexsort((rng.random(len(train)), users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1] if len(users) else np.array([], dtype=int)
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n_shared = np.floor(ratios[sorted_users] * np.repeat(counts, counts) + 0.5)
    shared = np.empty(len(users), dtype=bool)
    shared[order] = rank < n_shared
    mask = train.copy()
    mask["shared"] = shared
    mask["ratio"] = ratios[users]
    return mask


def _mask_from_file(train: pd.DataFrame, path: Path, n_users: int, seed: int) -> pd.DataFrame:
    """A per-user ratio file (user_id, ratio) or an item-level file (user_id, item_id)."""
    if not path.exists():
        raise DataError(f"sharing file {path} does not exist")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if {"user_id", "ratio"} <= set(table.columns):
        ratio = pd.to_numeric(table["ratio"], errors="coerce")
        if ratio.isna().any() or ((ratio < 0) | (ratio > 1)).any():
            raise DataError(f"{path}: every ratio must be a number in [0,1]")
        raw_to_index = train.drop_duplicates("user").set_index("user_id")["user"]
        ratios = np.zeros(n_users)
        known = table["user_id"].isin(raw_to_index.index)
        ratios[raw_to_index.loc[table.loc[known, "user_id"]].to_numpy()] = ratio[known].to_numpy()
        return _mask_from_ratios(train, ratios, seed)
    if {"user_id", "item_id"} <= set(table.columns):
        chosen = set(zip(table["user_id"].tolist(), table["item_id"].tolist()))
        train_pairs = set(zip(train["user_id"].tolist(), train["item_id"].tolist()))
        unknown = chosen - train_pairs
        if unknown:
            raise DataError(
                f"{path}: {len(unknown)} (user_id, item_id) pairs are not training interactions, "
                f"e.g. {sorted(unknown)[0]}"
            )
        mask = train.copy()
        mask["shared"] = [pair in chosen for pair in zip(train["user_id"].tolist(), train["item_id"].tolist())]
        counts = mask.groupby("user")["shared"].transform("mean")
        mask["ratio"] = counts.to_numpy()
        return mask
    raise DataError(f"{path}: expected columns user_id,ratio or user_id,item_id")


def shared_graph(mask: pd.DataFrame, n_users: int, n_items: int) -> SharedGraph:
    """The server's view: only rows with shared=True cross this function."""
    shared = mask[mask["shared"]]
    return SharedGraph(
        users=torch.tensor(shared["user"].to_numpy(), dtype=torch.long),
        items=torch.tensor(shared["item"].to_numpy(), dtype=torch.long),
        n_users=n_users,
        n_items=n_items,
    )


def sharing_users(mask: pd.DataFrame, n_users: int) -> np.ndarray:
    """Boolean per user: shares at least one interaction."""
    flags = np.zeros(n_users, dtype=bool)
    flags[mask.loc[mask["shared"], "user"].unique()] = True
    return flags


def global_view_weights(mask: pd.DataFrame, n_users: int, mode: str) -> np.ndarray:
    """Per user, the weight of the server's global view in the score (0 for users who share nothing).

    ``ratio``: the share of the user's training interactions that the server graph holds, so the
    global view counts as much as the data it was learned from (a user at rho = 0.25 gets a global
    user embedding trained on a quarter of their items; at weight 1 it drowned the local view).
    ``one``: weight 1 for every sharing user.  The device knows both numbers: it set the slider.
    """
    if mode == "one":
        return sharing_users(mask, n_users).astype(np.float32)
    counts = np.bincount(mask["user"].to_numpy(), minlength=n_users)
    shared = np.bincount(mask.loc[mask["shared"], "user"].to_numpy(), minlength=n_users)
    return (shared / np.maximum(counts, 1)).astype(np.float32)


def save_mask(mask: pd.DataFrame, path: Path) -> None:
    """Atomically, with a SHA-256 sidecar that ``load_mask`` checks."""
    atomic_write_parquet(mask[["user_id", "item_id", "user", "item", "shared", "ratio"]], path)
    write_checksum(Path(path))


def load_mask(path: Path) -> pd.DataFrame:
    verify_checksum(Path(path))
    return pd.read_parquet(path)
