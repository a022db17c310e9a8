"""Raw interaction data: the known data sets (local folder or download with an integrity check),
any CSV/TSV/Parquet file, any folder in the LightGCN layout, and the checks and filters every
source goes through."""

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
from fedshare.data.lightgcn_layout import (
    LAYOUT_FILES,
    LightGCNDataset,
    PublishedFile,
    check_published,
    has_layout,
    parse_pairs,
    read_folder,
)
from fedshare.errors import DataError


@dataclass(frozen=True)
class KnownDataset:
    relative_path: str  # file inside a data folder laid out like ../shared/data
    sep: str
    url: str  # GroupLens archive
    member: str  # the file inside the archive
    checksum: tuple[str, str]  # (algorithm, hex digest) of the extracted member
    titles: str | None = None  # the archive's item-title file, also relative to a data folder
    titles_sep: str = "::"


# ml-100k's u.data: SHA-256 of GroupLens' file (identical to ../shared/data/ml-100k/u.data).
# ml-1m's ratings.dat: the only published digest we could find for GroupLens' file is an MD5
# (FederatedScope's movielens.py), so the download is checked with MD5.  Local folders are not
# checked: ../shared/data's ml-1m has renumbered MovieIDs and a different digest.
# gowalla: NGCF's split as LightGCN-PyTorch publishes it, checked wherever it comes from (local
# folder, cache or download).  test.txt is known by its bytes; train.txt only by its pairs, since
# ../shared/data's copy lists the published pairs in another order (see its README).
KNOWN_DATASETS: dict[str, KnownDataset | LightGCNDataset] = {
    "ml-100k": KnownDataset(
        "ml-100k/u.data",
        "\t",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "ml-100k/u.data",
        ("sha256", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
        titles="ml-100k/u.item",
        titles_sep="|",
    ),
    "ml-1m": KnownDataset(
        "ml-1m/ratings.dat",
        "::",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "ml-1m/ratings.dat",
        ("md5", "a89aa3591bc97d6d4e0c89459ff39362"),
        titles="ml-1m/movies.dat",
    ),
    "gowalla": LightGCNDataset(
        "gowalla",
        "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/gowalla",
        {
            "train.txt": PublishedFile(None, "2ddf160a77f38b0018bd6c77cf3dcb40dd98bb50518b17d599732301f8541e75"),
            "test.txt": PublishedFile(
                "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
                "9d1add1d4eac36738054fd06efc7fb70acccad526848d78c10fee33498517395",
            ),
        },
    ),
}


RAW_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def cache_dir() -> Path:
    return Path(os.environ.get("FEDSHARE_CACHE_DIR", Path.home() / ".cache" / "fedshare"))


def locate_dataset(name: str, data_dir: str | None) -> Path:
    """Find a known dataset: --data-dir, then $FEDSHARE_DATA_DIR, then the download cache, else download it.

    Returns its file, or its folder for a data set in the LightGCN layout.
    """
    return dataset_root(name, data_dir) / KNOWN_DATASETS[name].relative_path


def dataset_root(name: str, data_dir: str | None) -> Path:
    """The folder laid out like ../shared/data that holds a known dataset's files (the cache after a download)."""
    known = KNOWN_DATASETS[name]
    files = relative_files(known)
    folder = data_dir or os.environ.get("FEDSHARE_DATA_DIR")  # an explicit --data-dir wins over the variable
    if folder:
        missing = [Path(folder) / relative for relative in files if not (Path(folder) / relative).exists()]
        if missing:
            source = "--data-dir" if data_dir else "FEDSHARE_DATA_DIR"
            raise DataError(f"{name}: {missing[0]} not found (is {source} laid out like ../shared/data?)")
        return Path(folder)
    root = cache_dir()
    if not all((root / relative).exists() for relative in files):
        if isinstance(known, LightGCNDataset):
            download_layout(name, root / known.relative_path)
        else:
            download_dataset(name, root / known.relative_path)
    return root


def relative_files(known: KnownDataset | LightGCNDataset) -> list[str]:
    """The files of a known dataset, relative to a data folder."""
    if isinstance(known, LightGCNDataset):
        return [f"{known.relative_path}/{name}" for name in LAYOUT_FILES]
    return [known.relative_path]


def download_dataset(name: str, target: Path) -> Path:
    known = KNOWN_DATASETS[name]
    archive = _download(known.url, name, known.relative_path)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        payload = zf.read(known.member)
        titles = zf.read(known.titles) if known.titles in zf.namelist() else None
    algorithm, expected = known.checksum
    actual = hashlib.new(algorithm, payload).hexdigest()
    if actual != expected:
        raise DataError(f"{name}: downloaded {known.member} has {algorithm} {actual}, expected {expected}")
    _write_atomically(target, payload)
    if titles is not None:  # display names only (never trained on), so kept without a digest of their own
        _write_atomically(target.parent.parent / known.titles, titles)
    return target


def download_layout(name: str, folder: Path) -> Path:
    """Download the missing files of a LightGCN-layout dataset into ``folder``; each is checked before it is kept."""
    known = KNOWN_DATASETS[name]
    for file_name, published in known.files.items():
        target = folder / file_name
        if target.exists():
            continue
        url = f"{known.url}/{file_name}"
        payload = _download(url, name, f"{known.relative_path}/{file_name}")
        what = f"{name}: the download from {url}"
        users, items = parse_pairs(payload, what)
        check_published(
            payload,
            users,
            items,
            published,
            what,
            f"try again later, or pass --data-dir or set FEDSHARE_DATA_DIR to a folder with "
            f"{known.relative_path}/{file_name}",
        )
        _write_atomically(target, payload)
    return folder


def _download(url: str, name: str, relative_path: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        raise DataError(
            f"{name} is not available locally and the download from {url} failed ({err}); "
            f"pass --data-dir or set FEDSHARE_DATA_DIR to a folder with {relative_path}"
        ) from None


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(payload)
    tmp.replace(target)


def read_known(name: str, data_dir: str | None) -> pd.DataFrame:
    path = locate_dataset(name, data_dir)
    known = KNOWN_DATASETS[name]
    engine = "python" if len(known.sep) > 1 else "c"
    try:
        frame = pd.read_csv(path, sep=known.sep, header=None, names=RAW_COLUMNS, engine=engine)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from None
    return frame


def read_known_layout(name: str, data_dir: str | None) -> pd.DataFrame:
    """A known LightGCN-layout dataset, checked against the published files wherever it was found."""
    known = KNOWN_DATASETS[name]
    folder = locate_dataset(name, data_dir)
    if data_dir or os.environ.get("FEDSHARE_DATA_DIR"):
        source = "--data-dir" if data_dir else "FEDSHARE_DATA_DIR"
        remedy = f"replace it with the file from {known.url}, or point {source} to a folder with the published {name}"
    else:
        remedy = f"delete {folder} to download it again"
    return read_folder(folder, known.files, remedy)


def read_layout_folder(folder: Path) -> pd.DataFrame:
    """Any folder in the LightGCN layout (Yelp2018, Amazon-Book...): read as it is, with no checksums."""
    if not has_layout(folder):
        raise DataError(
            f"{folder} is a folder without {' and '.join(LAYOUT_FILES)}; pass a folder in the LightGCN "
            f"layout (one line per user: user item item ...) or a CSV/TSV/Parquet file"
        )
    return read_folder(folder)


def read_table(path: Path, columns: ColumnsConfig) -> pd.DataFrame:
    """Any CSV/TSV/Parquet file; its columns come from the mapping or, failing that, from common names.

    Rating and timestamp are optional (every interaction counts 1, at time 0).
    """
    if not path.exists():
        raise DataError(f"{path} does not exist")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix in (".tsv", ".tab", ".data", ".inter") else ","
            frame = pd.read_csv(path, sep=sep)
    except Exception as err:  # noqa: BLE001 - any reader failure is a data error for the user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read ({reason})") from None
    found = resolve_columns(frame, columns, path)
    out = pd.DataFrame({"user_id": frame[found["user"]], "item_id": frame[found["item"]]})
    out["rating"] = frame[found["rating"]] if found["rating"] is not None else 1.0
    out["timestamp"] = frame[found["timestamp"]] if found["timestamp"] is not None else 0
    return out


# Column names common rating files use (MovieLens' userId/movieId, RecBole's user_id:token, Amazon's
# reviewerID/asin...), compared without case, "_", "-", spaces and a ":type" suffix, tried in this order.
COLUMN_ALIASES = {
    "user": ("userid", "user", "uid", "u", "reviewerid", "customerid", "visitorid", "memberid"),
    "item": (
        "itemid",
        "item",
        "iid",
        "i",
        "movieid",
        "movie",
        "productid",
        "product",
        "asin",
        "businessid",
        "bookid",
        "isbn",
        "trackid",
        "songid",
        "artistid",
        "venueid",
        "poiid",
        "locationid",
    ),
    "rating": ("rating", "ratings", "score", "stars", "overall", "preference"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "unixtime"),
}


def resolve_columns(frame: pd.DataFrame, columns: ColumnsConfig, path: Path) -> dict[str, str | None]:
    """The file's column for user, item, rating and timestamp (None: not in the file).

    A configured name present in the file wins.  Only a default name that is absent is replaced by a
    common one, so an explicit mapping to a missing column stays an error (user, item) or absent.
    """
    defaults = ColumnsConfig()
    found: dict[str, str | None] = {}
    for role in COLUMN_ALIASES:
        configured = getattr(columns, role)
        if configured is None or configured in frame.columns:
            found[role] = configured
        elif configured == getattr(defaults, role):
            found[role] = _common_column(frame, role, taken=set(found.values()))
        else:
            found[role] = None
    for role in ("user", "item"):
        if found[role] is None:
            raise DataError(
                f"{path}: column {getattr(columns, role)!r} not found (columns: "
                f"{', '.join(map(str, frame.columns))}); set data.columns.{role}"
            )
    return found


def _common_column(frame: pd.DataFrame, role: str, taken: set[str | None]) -> str | None:
    by_name: dict[str, str] = {}
    for column in frame.columns:
        by_name.setdefault(str(column).split(":")[0].lower().replace("_", "").replace("-", "").replace(" ", ""), column)
    for alias in COLUMN_ALIASES[role]:
        column = by_name.get(alias)
        # A guessed rating or timestamp must be numeric: a "time" column of dates is better left out
        # than turned into an error about a column the user never named.
        if (
            column is not None
            and column not in taken
            and (role in ("user", "item") or pd.api.types.is_numeric_dtype(frame[column]))
        ):
            return column
    return None


def load_raw(config: DataConfig) -> pd.DataFrame:
    """Raw interactions with columns user_id, item_id, rating, timestamp (IDs as int64).

    A source with a published split (the LightGCN layout) adds a ``split`` column, train or test,
    that :func:`fedshare.data.interactions.prepare` keeps.
    """
    known = KNOWN_DATASETS.get(config.dataset)
    if isinstance(known, LightGCNDataset):
        frame = read_known_layout(config.dataset, config.data_dir)
    elif known is not None:
        frame = read_known(config.dataset, config.data_dir)
    elif Path(config.dataset).is_dir():
        frame = read_layout_folder(Path(config.dataset))
    else:
        frame = read_table(Path(config.dataset), config.columns)
    return check_raw(frame, config.dataset)


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

    The source is found as for training (--data-dir, $FEDSHARE_DATA_DIR, cache, download with checksum),
    and a LightGCN-layout one is checked first; an existing identical copy is left alone so that DVC
    sees no change.  Returns the copied file, or folder for the LightGCN layout.
    """
    if name not in KNOWN_DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    known = KNOWN_DATASETS[name]
    if isinstance(known, LightGCNDataset):
        read_known_layout(name, data_dir)  # raises unless the files are the published ones
    source_root = dataset_root(name, data_dir)
    for relative in relative_files(known):
        _copy_if_changed(source_root / relative, Path(target_dir) / relative)
    return Path(target_dir) / known.relative_path


def _copy_if_changed(source: Path, target: Path) -> None:
    payload = source.read_bytes()
    if (
        target.exists()
        and target.stat().st_size == len(payload)
        and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(payload).digest()
    ):
        return
    _write_atomically(target, payload)
