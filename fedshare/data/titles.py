"""Item titles for display (ML-1M's movies.dat, ML-100K's u.item), where the data set has them.

Titles are never trained on: they only turn the raw item IDs of a recommendation into something a
person can read.  They are looked up where the data was read from (--data-dir, $FEDSHARE_DATA_DIR,
the download cache) and never downloaded on their own; a data set without them gives no titles.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedshare.data.loading import KNOWN_DATASETS, KnownDataset, cache_dir


def item_titles(dataset: str, data_dir: str | None) -> dict[str, str]:
    """Raw item ID (as a string) -> title; empty when the data set has no title file here."""
    known = KNOWN_DATASETS.get(dataset)
    if not isinstance(known, KnownDataset) or known.titles is None:
        return {}
    for folder in (data_dir, os.environ.get("FEDSHARE_DATA_DIR"), cache_dir()):
        if folder and (Path(folder) / known.titles).is_file():
            return read_titles(Path(folder) / known.titles, known.titles_sep)
    return {}


def read_titles(path: Path, sep: str) -> dict[str, str]:
    """``ID<sep>Title<sep>…`` per line; GroupLens' files are Latin-1, ../shared/data's ML-1M is UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    titles = {}
    for line in text.splitlines():
        fields = line.split(sep)
        if len(fields) >= 2 and fields[0].strip():
            titles[fields[0].strip()] = fields[1].strip()
    return titles
