"""Request files: read (with limits), resolve against the current masks, draw at random, and apply
to the masks (unshare, share) or to the devices' data too (delete)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshare.data.interactions import Interactions
from fedshare.errors import DataError

REQUEST_COLUMNS = ["request_id", "user_id", "item_id"]


@dataclass
class Requests:
    """Accepted (user, item) index pairs to unshare, and the rejected rows with their reasons."""

    pairs: pd.DataFrame  # request_id, user_id, item_id, user, item
    rejected: pd.DataFrame  # request_id, user_id, item_id, reason


MAX_REQUEST_BYTES = 64 * 2**20  # ~2 million requests; larger files are a mistake or an attack


def read_requests(path: Path) -> pd.DataFrame:
    """CSV with columns request_id,user_id,item_id (empty item_id = all the user's shared items)."""
    if path.exists() and path.stat().st_size > MAX_REQUEST_BYTES:
        raise DataError(
            f"request file {path} is {path.stat().st_size} bytes; the limit is {MAX_REQUEST_BYTES} "
            "(split it into several files)"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"request file {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - whatever the bytes, the user gets one line, not a traceback
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataError(f"request file {path} cannot be parsed ({first_line})") from None
    missing = {"request_id", "user_id", "item_id"} - set(table.columns)
    if missing:
        raise DataError(f"request file {path} lacks column(s) {', '.join(sorted(missing))}")
    return table[["request_id", "user_id", "item_id"]]


MODES = ("unshare", "delete", "share")  # share: the slider moved up (private training items become shared)


def mode_of_file(path: Path) -> str:
    """Request files say their mode by name: delete*.csv, share*.csv, anything else unshares."""
    name = Path(path).name
    return "delete" if name.startswith("delete") else "share" if name.startswith("share") else "unshare"


def resolve_requests(table: pd.DataFrame, mask: pd.DataFrame, mode: str = "unshare") -> Requests:
    """Check each request against the current masks; expand 'all items' requests.

    ``unshare``/``delete`` take back items the user shares now; ``share`` gives items the user keeps
    private now (its training pairs only: a device cannot share what it does not hold).
    """
    sharing_more = mode == "share"
    candidates = mask[~mask["shared"]] if sharing_more else mask[mask["shared"]]
    by_user = {user_id: group for user_id, group in candidates.groupby("user_id")}
    known_users = set(mask["user_id"].tolist())
    accepted, rejected, seen_ids = [], [], set()
    for row in table.itertuples(index=False):
        reason = None
        user_id = as_id(row.user_id)
        item_id = as_id(row.item_id) if str(row.item_id).strip() else None
        if not str(row.request_id).strip():
            reason = "request_id is empty"
        elif row.request_id in seen_ids:
            reason = "duplicate request_id"
        elif user_id is None or (str(row.item_id).strip() and item_id is None):
            reason = "user_id and item_id must be non-negative integers"
        elif user_id not in known_users:
            reason = "unknown user"
        elif user_id not in by_user:
            reason = "user shares everything already" if sharing_more else "user shares nothing"
        else:
            group = by_user[user_id]
            chosen = group if item_id is None else group[group["item_id"] == item_id]
            if chosen.empty:
                reason = (
                    "item is not a private training item of this user"
                    if sharing_more
                    else "item not currently shared by this user"
                )
            else:
                accepted.append(
                    chosen.assign(request_id=row.request_id)[["request_id", "user_id", "item_id", "user", "item"]]
                )
        seen_ids.add(row.request_id)
        if reason:
            rejected.append(
                {"request_id": row.request_id, "user_id": row.user_id, "item_id": row.item_id, "reason": reason}
            )
    pairs = (
        pd.concat(accepted).drop_duplicates(["user", "item"])
        if accepted
        else pd.DataFrame(columns=["request_id", "user_id", "item_id", "user", "item"])
    )
    return Requests(
        pairs.reset_index(drop=True), pd.DataFrame(rejected, columns=["request_id", "user_id", "item_id", "reason"])
    )


def as_id(value: str | None) -> int | None:
    """A non-negative integer ID from a request cell (surrounding spaces allowed), else None."""
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def draw_requests(mask: pd.DataFrame, fraction: float, scope: str, seed: int) -> pd.DataFrame:
    """A random deletion set among sharing users: all their shared items, or half of them (partial)."""
    rng = np.random.default_rng([seed, 7])
    sharing = np.sort(mask.loc[mask["shared"], "user_id"].unique())
    count = max(1, int(round(fraction * len(sharing))))
    chosen = rng.choice(sharing, size=count, replace=False)
    rows = []
    for number, user_id in enumerate(sorted(chosen.tolist())):
        if scope == "all":
            rows.append({"request_id": f"r{number:05d}", "user_id": user_id, "item_id": ""})
            continue
        items = mask.loc[mask["shared"] & (mask["user_id"] == user_id), "item_id"].to_numpy()
        for k, item_id in enumerate(rng.choice(items, size=max(1, len(items) // 2), replace=False).tolist()):
            rows.append({"request_id": f"r{number:05d}-{k}", "user_id": user_id, "item_id": item_id})
    return pd.DataFrame(rows, columns=["request_id", "user_id", "item_id"])


def apply_to_mask(mask: pd.DataFrame, pairs: pd.DataFrame, shared: bool = False) -> pd.DataFrame:
    """The masks with ``pairs`` made private (an unshare) or, with ``shared=True``, shared."""
    keys = set(zip(pairs["user"].tolist(), pairs["item"].tolist()))
    new = mask.copy()
    hit = [pair in keys for pair in zip(new["user"].tolist(), new["item"].tolist())]
    new.loc[hit, "shared"] = shared
    return new


def apply_delete(
    interactions: Interactions, mask: pd.DataFrame, pairs: pd.DataFrame
) -> tuple[Interactions, pd.DataFrame]:
    """Right to be forgotten: the pairs also leave the device's training data."""
    keys = set(zip(pairs["user"].tolist(), pairs["item"].tolist()))
    keep = [pair not in keys for pair in zip(interactions.table["user"].tolist(), interactions.table["item"].tolist())]
    table = interactions.table[keep].reset_index(drop=True)
    keep_mask = [pair not in keys for pair in zip(mask["user"].tolist(), mask["item"].tolist())]
    return Interactions(table, interactions.user_ids, interactions.item_ids), mask[keep_mask].reset_index(drop=True)


def replay_on_mask(mask: pd.DataFrame, applied: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay applied requests (request_id, user_id, item_id, mode; in the order they were applied)
    on masks: what a user unshared or deleted is private again, what they shared later is shared.
    Returns the masks and the deleted pairs (to remove from the devices' data too).

    Consecutive requests of one mode are resolved together against the masks as they are by then,
    as the inbox resolved them: an unshare after a share takes the item back, a share after an
    unshare gives it again, and a request that had nothing to act on then has nothing now.
    """
    deleted = []
    runs = (applied["mode"] != applied["mode"].shift()).cumsum()
    for _, group in applied.groupby(runs, sort=True):
        mode = group["mode"].iloc[0]
        pairs = resolve_requests(group[REQUEST_COLUMNS], mask, mode).pairs
        mask = apply_to_mask(mask, pairs, shared=mode == "share")
        if mode == "delete" and not pairs.empty:
            keys = set(zip(pairs["user"].tolist(), pairs["item"].tolist()))
            mask = mask[[pair not in keys for pair in zip(mask["user"].tolist(), mask["item"].tolist())]]
            deleted.append(pairs)
    columns = ["request_id", "user_id", "item_id", "user", "item"]
    return mask.reset_index(drop=True), (pd.concat(deleted) if deleted else pd.DataFrame(columns=columns))
