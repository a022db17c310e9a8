"""A state folder's consent: every user's current choice, and the requests that made it.

The masks of the served model hold each user's current choice (which training items they share,
and their ratio ρ_u); the request journal holds, in order, every applied request that changed it
(with its receipt and time).  Together they are the consent store; ``consent_table`` writes it
out as ``state/consent.parquet`` each time the served model changes, versioned with DVC beside
the masks.  A sharing policy (``mixed``, ``uniform``, a file) only initializes the masks of
users a state folder has never served; after that, only requests change a user's choice: a
retraining under another policy or seed keeps every known user's choice.  Every path that trains
for a state folder derives its masks here (``masks_under_consent``), and ``publish`` refuses a run
whose masks share anything more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedshare.data.interactions import Interactions
from fedshare.data.requests import apply_delete, replay_on_mask


@dataclass(frozen=True)
class Consent:
    served: pd.DataFrame | None  # the served model's masks (raw IDs, shared, ratio); None before any model
    applied: pd.DataFrame  # the journal's applied requests in order (request_id, user_id, item_id, mode)
    held: pd.DataFrame | None = None  # every (user_id, item_id) the served model's data still holds


DELETED_COLUMNS = ["request_id", "user_id", "item_id", "user", "item"]


def consent_masks(drawn: pd.DataFrame, consent: Consent) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Freshly drawn masks under a state folder's consent; returns the masks and the deleted pairs.

    First the journal is replayed on the draw, in order, as every request was once resolved on the
    masks of its time: unshared pairs go private, shared ones shared, deleted ones away.  Then users
    the served masks know keep their choice whatever the policy drew: a pair they share stays
    shared, any other pair of theirs is private (never asked about: private), and a pair of theirs
    that the served model's data no longer holds was deleted and goes away too.  Users they do not
    know follow the draw.
    """
    mask, deleted = drawn, pd.DataFrame(columns=DELETED_COLUMNS)
    if not consent.applied.empty:
        mask, deleted = replay_on_mask(mask, consent.applied)
    if consent.served is not None:
        mask, gone = _keep_served_choices(mask, consent.served, consent.held)
        deleted = pd.concat([deleted, gone], ignore_index=True) if not gone.empty else deleted
    return mask, deleted


def masks_under_consent(
    interactions: Interactions, drawn: pd.DataFrame, consent: Consent | None
) -> tuple[Interactions, pd.DataFrame]:
    """``consent_masks``, with deleted pairs also gone from the devices' training data."""
    if consent is None:
        return interactions, drawn
    mask, deleted = consent_masks(drawn, consent)
    if not deleted.empty:
        interactions = apply_delete(interactions, mask, deleted)[0]
    return interactions, mask


def _keep_served_choices(
    mask: pd.DataFrame, served: pd.DataFrame, held: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    served_ratio = served.groupby(served["user_id"].astype(str))["ratio"].first()
    users = mask["user_id"].astype(str)
    known = users.isin(served_ratio.index).to_numpy()
    keys = _pair_keys(mask)
    gone = known & ~keys.isin(set(_pair_keys(held))).to_numpy() if held is not None else np.zeros(len(mask), bool)
    kept = mask.copy()
    kept["shared"] = np.where(known, keys.isin(set(_pair_keys(served[served["shared"]]))), mask["shared"])
    kept["ratio"] = np.where(known, users.map(served_ratio).to_numpy(dtype=float, na_value=0.0), mask["ratio"])
    deleted = mask.loc[gone, ["user_id", "item_id", "user", "item"]].assign(request_id="")[DELETED_COLUMNS]
    return kept[~gone].reset_index(drop=True), deleted.reset_index(drop=True)


def _pair_keys(frame: pd.DataFrame) -> pd.Series:
    return frame["user_id"].astype(str) + "\x1f" + frame["item_id"].astype(str)


CONSENT_COLUMNS = [
    "user_id",
    "training_items",
    "shared_items",
    "ratio",
    "requests",
    "last_request_id",
    "last_mode",
    "changed_at",
    "model",
]


def consent_table(masks: pd.DataFrame, changes: pd.DataFrame, model: str) -> pd.DataFrame:
    """The consent store: one row per user, their current choice and the request that last changed it.

    ``masks`` are the served masks (raw IDs, shared, ratio); ``changes`` the applied requests in
    order (``RequestJournal.changes``: request_id, user_id, mode, time).  A user no request has
    touched has ``requests`` 0 and an empty ``last_request_id``: their choice is still the one the
    sharing policy (or file) initialized.  It holds counts and request IDs, never item IDs, so an
    old version in the DVC cache reveals no withdrawn item.
    """
    users = masks["user_id"].astype(str)
    per_user = pd.DataFrame(
        {
            "training_items": users.value_counts(sort=False),
            "shared_items": users[masks["shared"].to_numpy()].value_counts(sort=False),
        }
    ).fillna({"shared_items": 0})
    # The current choice: the share of the user's training items they share now (a request moves it;
    # the masks' own ratio column keeps the ratio the policy first drew).
    per_user["ratio"] = per_user["shared_items"] / per_user["training_items"]
    changes = changes.assign(user_id=changes["user_id"].astype(str))
    last = changes.groupby("user_id").last()
    per_user["requests"] = changes.groupby("user_id").size().reindex(per_user.index, fill_value=0)
    per_user["last_request_id"] = last["request_id"].reindex(per_user.index).fillna("")
    per_user["last_mode"] = last["mode"].reindex(per_user.index).fillna("")
    per_user["changed_at"] = last["time"].reindex(per_user.index).fillna("")
    per_user["model"] = model
    table = per_user.rename_axis("user_id").reset_index()
    table = table.astype({"training_items": "int64", "shared_items": "int64", "requests": "int64", "ratio": "float64"})
    return table[CONSENT_COLUMNS]
