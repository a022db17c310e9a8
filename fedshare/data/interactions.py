"""Interactions: raw IDs mapped to contiguous indices and a fixed, seeded train/valid/test split per user."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshare.config import DataConfig
from fedshare.data.lightgcn_layout import pair_order
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
    user_ids: np.ndarray  # index -> raw user ID
    item_ids: np.ndarray  # index -> raw item ID

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def part(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def save(self, folder: Path) -> None:
        # The index maps travel in the file's metadata: a delete can remove an item's (or a user's)
        # last pair, and indices must not shift or shrink for the tables trained on them.
        frame = self.table.copy(deep=False)
        frame.attrs = {"user_ids": self.user_ids.tolist(), "item_ids": self.item_ids.tolist()}
        atomic_write_parquet(frame, folder / "interactions.parquet")

    @classmethod
    def load(cls, folder: Path) -> "Interactions":
        table = pd.read_parquet(folder / "interactions.parquet")
        maps, table.attrs = table.attrs, {}  # attrs would be copied along with every derived frame
        if "user_ids" in maps and "item_ids" in maps:
            user_ids = pd.Series(maps["user_ids"], dtype=table["user_id"].dtype).to_numpy()
            item_ids = pd.Series(maps["item_ids"], dtype=table["item_id"].dtype).to_numpy()
        else:  # written before the maps were kept: rebuilt from the rows (an index without rows: None)
            user_ids, item_ids = index_map(table, "user"), index_map(table, "item")
        return cls(table, user_ids, item_ids)


def index_map(table: pd.DataFrame, kind: str) -> np.ndarray:
    """index -> raw ID of ``kind`` (user or item) from the rows; an index left without rows maps to None."""
    first = table.drop_duplicates(kind).sort_values(kind)
    size = int(table[kind].max()) + 1 if len(table) else 0
    if len(first) == size:
        return first[f"{kind}_id"].to_numpy()
    ids = np.full(size, None, dtype=object)
    ids[first[kind].to_numpy()] = first[f"{kind}_id"].to_numpy()
    return ids


def prepare(raw: pd.DataFrame, config: DataConfig, seed: int) -> Interactions:
    """Filter, deduplicate, index and split raw interactions.

    A raw frame with a ``split`` column (a published train/test split, such as the LightGCN layout)
    keeps its test part as it is and has its validation part carved out of its train part
    (:func:`carve_validation`); otherwise :func:`split_per_user` draws all three parts.
    """
    published = "split" in raw.columns
    frame = raw
    if config.min_rating is not None:
        frame = frame[frame["rating"] >= config.min_rating]
    frame = deduplicate(frame)
    frame = k_core(frame, config.k_core)
    if published:
        frame = drop_users_without_training(frame)
    if frame.empty:
        raise DataError("no interactions left after data.min_rating / data.k_core filtering")
    table, user_ids, item_ids = index(frame)
    if published:
        table["split"] = carve_validation(table["user"].to_numpy(), frame["split"].to_numpy(), config, seed)
    else:
        table["split"] = split_per_user(table["user"].to_numpy(), config, seed)
    check_splittable(table, config, published)
    table = table.iloc[pair_order(table["user"].to_numpy(), table["item"].to_numpy())].reset_index(drop=True)
    return Interactions(table, user_ids, item_ids)


def deduplicate(frame: pd.DataFrame) -> pd.DataFrame:
    """One interaction per (user, item): the latest rating; in a published split, the test copy.

    A pair listed in both train and test would otherwise be trained on and tested on; keeping it in
    test keeps the published test set whole.  The result is sorted by (user_id, item_id), so the
    seeded split does not depend on the order of the rows in the file.
    """
    if "split" in frame.columns:
        wins_last = frame["split"].eq("test").to_numpy()
    else:
        wins_last = frame["timestamp"].to_numpy()
    # A stable sort by the tie-break, then a stable one by (user, item): the order of a stable
    # sort_values(["user_id", "item_id", tie-break]), several times faster on a million rows.
    by_tiebreak = np.argsort(wins_last, kind="stable")
    users, items = frame["user_id"].to_numpy()[by_tiebreak], frame["item_id"].to_numpy()[by_tiebreak]
    by_pair = pair_order(users, items)
    users, items = users[by_pair], items[by_pair]
    last_of_pair = np.r_[(users[1:] != users[:-1]) | (items[1:] != items[:-1]), True]
    return frame.iloc[by_tiebreak[by_pair][last_of_pair]]


def drop_users_without_training(frame: pd.DataFrame) -> pd.DataFrame:
    """A user of a published split with test pairs only is left out: nothing to learn a profile from,
    and every user of an Interactions has a training row (the data checks require it)."""
    trains = frame["split"].eq("train").groupby(frame["user_id"]).transform("any")
    return frame[trains]


def index(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The table without its split (contiguous ``user``/``item`` indices next to the raw IDs), and
    the raw user and item IDs of each index."""
    user_ids = np.sort(frame["user_id"].unique())
    item_ids = np.sort(frame["item_id"].unique())
    table = pd.DataFrame(
        {
            "user": np.searchsorted(user_ids, frame["user_id"].to_numpy()).astype("int64"),
            "item": np.searchsorted(item_ids, frame["item_id"].to_numpy()).astype("int64"),
            "user_id": frame["user_id"].to_numpy(),
            "item_id": frame["item_id"].to_numpy(),
            "rating": frame["rating"].to_numpy(dtype="float32"),
            "timestamp": frame["timestamp"].to_numpy(dtype="int64"),
        }
    )
    return table, user_ids, item_ids


def split_per_user(users: np.ndarray, config: DataConfig, seed: int) -> np.ndarray:
    """Seeded random per-user split, sized like RecBole's ratio split.

    Each user with n >= min_user_interactions gets floor(ratio * n) validation and test
    interactions (at least one each when the ratio is positive) and the rest in train.  Users with
    fewer interactions keep everything in train and are simply not evaluated.
    """
    rng = np.random.default_rng(seed)
    draws = rng.random(len(users))
    by_draw = np.argsort(draws, kind="stable")
    order = by_draw[np.argsort(users[by_draw], kind="stable")]  # random order within each user (np.lexsort's, faster)
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


def carve_validation(users: np.ndarray, published: np.ndarray, config: DataConfig, seed: int) -> np.ndarray:
    """Split labels for a published train/test split: test stays test, validation comes out of train.

    Per user, seeded, with :func:`split_per_user`'s rule and no test part: a user with
    n >= data.min_user_interactions training pairs gives floor(valid_ratio * n) of them (at least one)
    to validation.  Users with fewer keep them all for training, and are still tested (the test set
    is the publisher's).  At least two training pairs are needed, so that one stays in training.
    data.test_ratio does not apply.
    """
    carve = dataclasses.replace(config, test_ratio=0.0, min_user_interactions=max(config.min_user_interactions, 2))
    labels = published.astype(object)
    train = labels == "train"
    labels[train] = split_per_user(users[train], carve, seed)
    return labels


PART_NAMES = {"valid": "validation", "test": "test"}


def check_splittable(table: pd.DataFrame, config: DataConfig, published: bool) -> None:
    """One clear sentence now rather than an empty tensor deep in training: training selects on the
    validation part and reports on the test part, so neither may be empty."""
    present = set(table["split"].unique())
    missing = [part for part in PART_NAMES if part not in present]
    if not missing:
        return
    for part in missing:
        ratio = f"{part}_ratio"
        if getattr(config, ratio) == 0 and not (part == "test" and published):
            raise DataError(f"data.{ratio} is 0, but training needs a {PART_NAMES[part]} part; set it above 0")
    if missing == ["test"] and published:
        raise DataError(f"{config.dataset}: test.txt has no pairs of users with training pairs, so nothing to test on")
    needs = "training pairs to give one to validation" if published else "interactions to be validated and tested"
    raise DataError(
        f"{config.dataset} is too small to split: its {len(table)} interactions of "
        f"{table['user'].nunique()} users give no {' and no '.join(PART_NAMES[p] for p in missing)} "
        f"interactions (a user needs at least data.min_user_interactions = {config.min_user_interactions} "
        f"{needs}); use more data or lower data.min_user_interactions"
    )


def load_interactions(config: DataConfig, seed: int) -> Interactions:
    return prepare(load_raw(config), config, seed)
