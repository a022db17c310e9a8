"""Interactions: raw IDs mapped to contiguous indices and a fixed, seeded train/valid/test split per user."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshare.config import DataConfig
from fedshare.data.loading import k_core, load_raw
from fedshare.errors import DataError
from fedshare.storage import atomic_write_parquet


@dataclass
class Interactions:
    """Cleaned interactions with contiguous indices and the per-user split.

    ``table`` has one row per (user, item): ``user``, ``item`` (contiguous indices), ``user_id``,
    ``item_id`` (raw IDs), ``rating``, ``timestamp`` and ``split`` in {train, valid, test}.
    """

    table: pd.DataFrame
    user_ids: np.ndarray   # index -> raw user ID
    item_ids: np.ndarray   # index -> raw item ID

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def part(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def save(self, folder: Path) -> None:
        atomic_write_parquet(self.table, folder / "interactions.parquet")

    @classmethod
    def load(cls, folder: Path) -> "Interactions":
        table = pd.read_parquet(folder / "interactions.parquet")
        user_ids = table.drop_duplicates("user").sort_values("user")["user_id"].to_numpy()
        item_ids = table.drop_duplicates("item").sort_values("item")["item_id"].to_numpy()
        return cls(table, user_ids, item_ids)


def prepare(raw: pd.DataFrame, config: DataConfig, seed: int) -> Interactions:
    """Filter, deduplicate, index and split raw interactions."""
    frame = raw
    if config.min_rating is not None:
        frame = frame[frame["rating"] >= config.min_rating]
    # One interaction per (user, item): keep the latest rating.
    frame = frame.sort_values(["user_id", "item_id", "timestamp"]).drop_duplicates(["user_id", "item_id"], keep="last")
    frame = k_core(frame, config.k_core)
    if frame.empty:
        raise DataError("no interactions left after data.min_rating / data.k_core filtering")
    user_ids = np.sort(frame["user_id"].unique())
    item_ids = np.sort(frame["item_id"].unique())
    table = pd.DataFrame({
        "user": np.searchsorted(user_ids, frame["user_id"].to_numpy()).astype("int64"),
        "item": np.searchsorted(item_ids, frame["item_id"].to_numpy()).astype("int64"),
        "user_id": frame["user_id"].to_numpy(),
        "item_id": frame["item_id"].to_numpy(),
        "rating": frame["rating"].to_numpy(dtype="float32"),
        "timestamp": frame["timestamp"].to_numpy(dtype="int64"),
    })
    table["split"] = split_per_user(table["user"].to_numpy(), config, seed)
    table = table.sort_values(["user", "item"]).reset_index(drop=True)
    return Interactions(table, user_ids, item_ids)


def split_per_user(users: np.ndarray, config: DataConfig, seed: int) -> np.ndarray:
    """Seeded random per-user split, sized like RecBole's ratio split.

    Each user with n >= min_user_interactions gets floor(ratio * n) validation and test
    interactions (at least one each when the ratio is positive) and the rest in train.  Users with
    fewer interactions keep everything in train and are simply not evaluated.
    """
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))          # random order within each user
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, counts)  # rank of each row within its user
    n = np.repeat(counts, counts)
    n_valid = np.where(config.valid_ratio > 0, np.maximum(np.floor(config.valid_ratio * n), 1), 0)
    n_test = np.where(config.test_ratio > 0, np.maximum(np.floor(config.test_ratio * n), 1), 0)
    evaluated = n >= config.min_user_interactions
    labels = np.full(len(users), "train", dtype=object)
    labels[evaluated & (position < n_test)] = "test"
    labels[evaluated & (position >= n_test) & (position < n_test + n_valid)] = "valid"
    out = np.empty(len(users), dtype=object)
    out[order] = labels
    return out


def load_interactions(config: DataConfig, seed: int) -> Interactions:
    return prepare(load_raw(config), config, seed)
