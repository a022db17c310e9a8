"""Raw interaction data: the known data sets (local folder or download with an integrity check),
any CSV/TSV/Parquet file, and the checks and filters every source goes through."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshare.config import ColumnsConfig, DataConfig
from fedshare.errors import DataError


@dataclass(frozen=True)
class KnownDataset:
    relative_path: str   # file inside a data folder laid out like ../shared/data
    sep: str
    url: str             # GroupLens archive
    member: str          # the file inside the archive
    checksum: tuple[str, str]  # (algorithm, hex digest) of the extracted member


# ml-100k's u.data: SHA-256 of GroupLens' file (identical to ../shared/data/ml-100k/u.data).
# ml-1m's ratings.dat: the only published digest we could find for GroupLens' file is an MD5
# (FederatedScope's movielens.py), so the download is checked with MD5.  Local folders are not
# checked: ../shared/data's ml-1m has renumbered MovieIDs and a different digest.
KNOWN_DATASETS = {
    "ml-100k": KnownDataset(
        "ml-100k/u.data", "\t", "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "ml-100k/u.data", ("sha256", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490")),
    "ml-1m": KnownDataset(
        "ml-1m/ratings.dat", "::", "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "ml-1m/ratings.dat", ("md5", "a89aa3591bc97d6d4e0c89459ff39362")),
}


RAW_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def cache_dir() -> Path:
    return Path(os.environ.get("FEDSHARE_CACHE_DIR", Path.home() / ".cache" / "fedshare"))


def locate_dataset(name: str, data_dir: str | None) -> Path:
    """Find the file of a known dataset: --data-dir, then $FEDSHARE_DATA_DIR, then the download cache."""
    known = KNOWN_DATASETS[name]
    folder = data_dir or os.environ.get("FEDSHARE_DATA_DIR")  # an explicit --data-dir wins over the variable
    if folder:
        candidate = Path(folder) / known.relative_path
        if candidate.exists():
            return candidate
        source = "--data-dir" if data_dir else "FEDSHARE_DATA_DIR"
        raise DataError(f"{name}: {candidate} not found (is {source} laid out like ../shared/data?)")
    cached = cache_dir() / known.relative_path
    if cached.exists():
        return cached
    return download_dataset(name, cached)


def download_dataset(name: str, target: Path) -> Path:
    known = KNOWN_DATASETS[name]
    try:
        with urllib.request.urlopen(known.url, timeout=60) as response:
            archive = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise DataError(
            f"{name} is not available locally and the download from {known.url} failed ({err}); "
            f"pass --data-dir or set FEDSHARE_DATA_DIR to a folder with {known.relative_path}") from None
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        payload = zf.read(known.member)
    algorithm, expected = known.checksum
    actual = hashlib.new(algorithm, payload).hexdigest()
    if actual != expected:
        raise DataError(f"{name}: downloaded {known.member} has {algorithm} {actual}, expected {expected}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(payload)
    tmp.replace(target)
    return target


def read_known(name: str, data_dir: str | None) -> pd.DataFrame:
    path = locate_dataset(name, data_dir)
    known = KNOWN_DATASETS[name]
    engine = "python" if len(known.sep) > 1 else "c"
    try:
        frame = pd.read_csv(path, sep=known.sep, header=None, names=RAW_COLUMNS, engine=engine)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from None
    return frame


def read_table(path: Path, columns: ColumnsConfig) -> pd.DataFrame:
    """Any CSV/TSV/Parquet file with a column mapping; rating and timestamp are optional."""
    if not path.exists():
        raise DataError(f"{path} does not exist")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix in (".tsv", ".tab", ".data") else ","
            frame = pd.read_csv(path, sep=sep)
    except Exception as err:  # noqa: BLE001 - any reader failure is a data error for the user
        raise DataError(f"{path}: cannot read ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    mapping = {"user_id": columns.user, "item_id": columns.item, "rating": columns.rating, "timestamp": columns.timestamp}
    for name in ("user_id", "item_id"):
        if mapping[name] not in frame.columns:
            raise DataError(f"{path}: column {mapping[name]!r} not found (columns: {', '.join(map(str, frame.columns))}); "
                            f"set data.columns.{name.split('_')[0]}")
    out = pd.DataFrame({"user_id": frame[mapping["user_id"]], "item_id": frame[mapping["item_id"]]})
    out["rating"] = frame[mapping["rating"]] if mapping["rating"] in frame.columns else 1.0
    out["timestamp"] = frame[mapping["timestamp"]] if mapping["timestamp"] in frame.columns else 0
    return out


def load_raw(config: DataConfig) -> pd.DataFrame:
    """Raw interactions with columns user_id, item_id, rating, timestamp (IDs as int64)."""
    if config.dataset in KNOWN_DATASETS:
        frame = read_known(config.dataset, config.data_dir)
        source = config.dataset
    else:
        frame = read_table(Path(config.dataset), config.columns)
        source = config.dataset
    return check_raw(frame, source)


def check_raw(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.empty:
        raise DataError(f"{source}: no interactions")
    for column in ("user_id", "item_id"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() | (numeric != np.floor(numeric)) | (numeric < 0)
        if bad.any():
            example = frame.loc[bad, column].iloc[0]
            raise DataError(f"{source}: {bad.sum()} rows have a non-integer or negative {column} (e.g. {example!r})")
        frame[column] = numeric.astype("int64")
    for column in ("rating", "timestamp"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        if numeric.isna().any():
            raise DataError(f"{source}: {numeric.isna().sum()} rows have a non-numeric {column}")
        frame[column] = numeric
    return frame.reset_index(drop=True)


def k_core(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than k interactions."""
    while k > 0:
        user_counts = frame.groupby("user_id")["item_id"].transform("size")
        item_counts = frame.groupby("item_id")["user_id"].transform("size")
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            break
        frame = frame[keep]
    return frame


def fetch_dataset(name: str, target_dir: str | Path, data_dir: str | None = None) -> Path:
    """Copy a known dataset into ``target_dir`` (laid out like ../shared/data), e.g. DVC's ``data/``.

    The source is found as for training (--data-dir, $FEDSHARE_DATA_DIR, cache, download with checksum);
    an existing identical copy is left alone so that DVC sees no change.
    """
    if name not in KNOWN_DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    source = locate_dataset(name, data_dir)
    target = Path(target_dir) / KNOWN_DATASETS[name].relative_path
    if target.exists() and target.stat().st_size == source.stat().st_size \
            and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)
    return target
