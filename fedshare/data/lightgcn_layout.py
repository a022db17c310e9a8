"""The LightGCN layout: a folder with ``train.txt`` and ``test.txt``, one line per user, ``user item item …``.

The layout of the NGCF/LightGCN splits (Gowalla, Yelp2018, Amazon-Book), used unchanged by SGL,
SimGCL and most graph-recommendation papers since: 0-based integer IDs, whitespace-separated, the
split fixed by the publisher.  A line may hold a user alone (no items): it adds no pair, so a
user with no items in either file is not part of the data set.

This module parses the files and checks them against published digests; finding, downloading and
caching them is :mod:`fedshare.data.loading`'s job, as for the other known data sets.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshare.errors import DataError

# The two files of the layout and the split each one holds.
LAYOUT_FILES = {"train.txt": "train", "test.txt": "test"}
SPLITS = list(LAYOUT_FILES.values())


@dataclass(frozen=True)
class PublishedFile:
    """What the published file is known by: a file passes if either digest matches."""

    sha256: str | None  # of the published bytes (None: unknown, only the pairs are checked)
    pairs_sha256: str  # pair_digest() of its pairs: the same pairs in any order or spacing


@dataclass(frozen=True)
class LightGCNDataset:
    """A known data set in the LightGCN layout (an entry of ``loading.KNOWN_DATASETS``)."""

    relative_path: str  # folder inside a data folder laid out like ../shared/data
    url: str  # folder the two files are downloaded from
    files: dict[str, PublishedFile]  # train.txt / test.txt -> their digests


def has_layout(folder: Path) -> bool:
    return all((folder / name).is_file() for name in LAYOUT_FILES)


def read_folder(folder: Path, published: dict[str, PublishedFile] | None = None, remedy: str = "") -> pd.DataFrame:
    """Both files as one raw frame (user_id, item_id, rating 1, timestamp 0, split train/test).

    With ``published``, each file must be the published one; ``remedy`` (what the user should do)
    ends the error sentence.
    """
    parts = []
    for name, split in LAYOUT_FILES.items():
        path = folder / name
        try:
            payload = path.read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
        users, items = parse_pairs(payload, str(path))
        if published is not None:
            check_published(payload, users, items, published[name], str(path), remedy)
        codes = np.full(len(users), SPLITS.index(split), dtype=np.int8)  # a categorical: strings cost a second
        parts.append(
            pd.DataFrame(
                {
                    "user_id": users,
                    "item_id": items,
                    "rating": 1.0,
                    "timestamp": 0,
                    "split": pd.Categorical.from_codes(codes, categories=SPLITS),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


WHITESPACE = np.frombuffer(b" \t\n\x0b\x0c", dtype=np.uint8)
MAX_DIGITS = 18  # larger IDs do not fit in int64


def parse_pairs(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) pairs of one file as two int64 arrays, in file order.

    Vectorized over the bytes (a Python loop over 800k pairs would take seconds): find the tokens,
    give each its line, the first token of a line is the user, the others its items.
    """
    text = np.frombuffer(payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), dtype=np.uint8)
    digit = (text >= ord("0")) & (text <= ord("9"))
    bad = np.flatnonzero(~digit & ~np.isin(text, WHITESPACE))
    if len(bad):  # a sign, a decimal point, a letter: not a non-negative integer ID
        raise DataError(_bad_token_message(text, int(bad[0]), where))
    edges = np.diff(np.r_[0, digit.view(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    too_long = np.flatnonzero(ends - starts > MAX_DIGITS)
    if len(too_long):
        raise DataError(_bad_token_message(text, int(starts[too_long[0]]), where))
    values = _token_values(text, starts, ends)
    line = np.cumsum(text == ord("\n"))[starts]  # line (0-based) of each token
    is_user = np.diff(line, prepend=-1) != 0  # the first token of each line
    user_of_token = values[is_user][np.cumsum(is_user) - 1]
    return user_of_token[~is_user], values[~is_user]


def _token_values(text: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The integer value of each digit run text[starts[k]:ends[k]], one digit position at a time."""
    values = np.zeros(len(starts), dtype=np.int64)
    for position in range(int((ends - starts).max(initial=0))):
        longer = ends - starts > position
        values[longer] = values[longer] * 10 + (text[starts[longer] + position] - ord("0"))
    return values


def _bad_token_message(text: np.ndarray, position: int, where: str) -> str:
    payload = text.tobytes()
    line_number = payload.count(b"\n", 0, position) + 1
    start = payload.rfind(b"\n", 0, position) + 1
    end = payload.find(b"\n", position)
    line = payload[start:] if end < 0 else payload[start:end]
    token = next(t for t in line.split() if not re.fullmatch(rb"[0-9]{1,%d}" % MAX_DIGITS, t))
    return (
        f"{where}, line {line_number}: {token.decode(errors='replace')!r} is not a non-negative integer ID "
        f"(the LightGCN layout is one line per user: user item item ..., with 0-based integer IDs)"
    )


def check_published(
    payload: bytes, users: np.ndarray, items: np.ndarray, published: PublishedFile, what: str, remedy: str
) -> None:
    """Raise a DataError unless the file has the published bytes or, failing that, the published pairs."""
    if published.sha256 is not None and hashlib.sha256(payload).hexdigest() == published.sha256:
        return
    actual = pair_digest(users, items)
    if actual != published.pairs_sha256:
        raise DataError(
            f"{what} is not the published file (the SHA-256 of its sorted (user, item) pairs is "
            f"{actual[:12]}..., expected {published.pairs_sha256[:12]}...); {remedy}"
        )


def pair_digest(users: np.ndarray, items: np.ndarray) -> str:
    """SHA-256 of all pairs, sorted, each written as "{user} {item}\\n": the same for any order of lines or items."""
    order = pair_order(users, items)
    return hashlib.sha256(pair_lines(users[order], items[order])).hexdigest()


def pair_order(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The stable order of rows by (user, item), like ``np.lexsort((items, users))``.

    One argsort of a combined int64 key where it fits: np.lexsort takes ~15 times as long on a
    million rows.
    """
    if len(users) == 0 or users.dtype.kind not in "iu" or items.dtype.kind not in "iu":
        return np.lexsort((items, users))
    user_low, item_low = int(users.min()), int(items.min())
    span = int(items.max()) - item_low + 1
    if int(users.max()) - user_low >= np.iinfo(np.int64).max // span:
        return np.lexsort((items, users))
    return np.argsort((users.astype(np.int64) - user_low) * span + (items.astype(np.int64) - item_low), kind="stable")


def pair_lines(users: np.ndarray, items: np.ndarray) -> bytes:
    """The bytes of "{user} {item}\\n" for each pair (non-negative IDs).

    Built with numpy as a matrix of fixed-width rows whose leading zeros are then dropped:
    formatting 800k pairs in a Python loop would take most of the loading time.
    """
    n = len(users)
    user_digits, user_keep = _digits(users)
    item_digits, item_keep = _digits(items)
    space, newline = np.full((n, 1), ord(" "), dtype=np.uint8), np.full((n, 1), ord("\n"), dtype=np.uint8)
    matrix = np.hstack([user_digits, space, item_digits, newline])
    keep = np.hstack([user_keep, np.ones((n, 1), bool), item_keep, np.ones((n, 1), bool)])
    return matrix[keep].tobytes()


def _digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ASCII digits right-aligned in one width, and a mask that drops the leading zeros (keeping a lone 0)."""
    width = len(str(int(values.max(initial=0))))
    digits = values[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64) % 10
    keep = digits.cumsum(axis=1) > 0
    keep[:, -1] = True
    return (digits + ord("0")).astype(np.uint8), keep
