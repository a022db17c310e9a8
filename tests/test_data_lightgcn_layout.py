"""The LightGCN layout (train.txt / test.txt, one line per user): parsing, integrity checks, the
download path (urlopen replaced, tests never touch the network), the validation carve, and the real
Gowalla files from ../shared/data."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, synthetic_raw

from fedshare.config import DataConfig
from fedshare.data import loading
from fedshare.data.interactions import load_interactions, prepare
from fedshare.data.lightgcn_layout import (
    LightGCNDataset,
    PublishedFile,
    pair_digest,
    pair_lines,
    pair_order,
    parse_pairs,
)
from fedshare.data.loading import fetch_dataset, load_raw
from fedshare.errors import DataError


def write_layout(folder: Path, train: dict[int, list[int]], test: dict[int, list[int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", train), ("test.txt", test)):
        (folder / name).write_text("".join(" ".join(map(str, [user, *items])) + "\n" for user, items in lines.items()))
    return folder


def generated_layout(
    n_users: int = 40, n_items: int = 80, n_train: int = 20, n_test: int = 5, seed: int = 0
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Disjoint train and test items per user, as in a published split."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for user in range(n_users):
        items = rng.choice(n_items, size=n_train + n_test, replace=False).tolist()
        train[user], test[user] = items[:n_train], items[n_train:]
    return train, test


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["item_id"].tolist()))


# ----------------------------------------------------------------------------------------------
# the parser


def test_lines_become_pairs_and_a_user_alone_adds_none(tmp_path):
    folder = write_layout(tmp_path / "set", {0: [5, 6], 1: [], 2: [7]}, {0: [8], 1: [], 2: [9, 5]})
    raw = load_raw(DataConfig(dataset=str(folder)))
    assert list(raw.columns) == ["user_id", "item_id", "rating", "timestamp", "split"]
    assert pairs(raw[raw["split"] == "train"]) == {(0, 5), (0, 6), (2, 7)}
    assert pairs(raw[raw["split"] == "test"]) == {(0, 8), (2, 9), (2, 5)}
    assert 1 not in set(raw["user_id"])  # no items anywhere: not part of the data set


@pytest.mark.parametrize("payload", [b"0 1 2\r\n3 4\r\n", b"0\t1  2 \n\n3 4", b"  0 1 2\n3 4\n\n\n", b"0 1 2\r3 4\r"])
def test_whitespace_and_line_endings(payload):
    users, items = parse_pairs(payload, "f")
    assert users.tolist() == [0, 0, 3] and items.tolist() == [1, 2, 4]
    assert users.dtype == np.int64 and items.dtype == np.int64


def test_an_empty_file_has_no_pairs():
    for payload in (b"", b"\n\n", b"7\n8\n"):
        users, items = parse_pairs(payload, "f")
        assert len(users) == len(items) == 0


@pytest.mark.parametrize(
    "train, message",
    [
        ("0 1 2\n1 x 3\n", r"train.txt, line 2: 'x' is not a non-negative integer ID"),
        ("0 1 2\n\n2 -3\n", r"train.txt, line 3: '-3' is not a non-negative integer ID"),
        ("0 1.5\n", r"train.txt, line 1: '1.5'"),
        ("a 1\n", r"train.txt, line 1: 'a'"),
        ("0 1\n1 12345678901234567890\n", r"train.txt, line 2: '12345678901234567890'"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, train, message):
    folder = write_layout(tmp_path / "set", {}, {0: [1]})
    (folder / "train.txt").write_text(train)
    with pytest.raises(DataError, match=message):
        load_raw(DataConfig(dataset=str(folder)))


def test_a_folder_without_the_layout_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.txt").write_text("0 1\n")
    with pytest.raises(DataError, match="without train.txt and test.txt"):
        load_raw(DataConfig(dataset=str(tmp_path / "half")))


def test_pair_lines_and_order_match_the_plain_python_versions():
    rng = np.random.default_rng(0)
    users = np.r_[0, 9, 10, 99, 100, rng.integers(0, 10**6, 500), 123456789012345678]
    items = np.r_[7, 0, 10, 5, 1000, rng.integers(0, 10**4, 500), 3]
    assert pair_lines(users, items) == "".join(f"{u} {i}\n" for u, i in zip(users, items)).encode()
    assert (pair_order(users, items) == np.lexsort((items, users))).all()
    negative = rng.integers(-50, 50, 300)  # pair_order is also used on raw frames
    assert (pair_order(negative, negative[::-1].copy()) == np.lexsort((negative[::-1], negative))).all()
    huge = np.array([2**62, 1, 2**62, 0])  # the combined key would overflow: the lexsort fallback
    assert (pair_order(huge, huge) == np.lexsort((huge, huge))).all()


def test_the_pair_digest_ignores_order_and_spacing():
    users, items = np.array([0, 0, 1]), np.array([5, 3, 2])
    expected = hashlib.sha256(b"0 3\n0 5\n1 2\n").hexdigest()
    assert pair_digest(users, items) == pair_digest(users[::-1], items[::-1]) == expected
    assert pair_digest(*parse_pairs(b"1 2\n0 5 3\n", "f")) == expected


# ----------------------------------------------------------------------------------------------
# the integrity checks, on a small data set registered like gowalla


GOOD_TRAIN = b"0 1 2 3\n1 2 4\n2 0 1\n"
GOOD_TEST = b"0 4\n1 0\n2 3 4\n"


@pytest.fixture
def tiny_layout(monkeypatch, tmp_path):
    """A known LightGCN-layout dataset 'tiny' whose published digests are those of GOOD_*."""
    test_digests = hashlib.sha256(GOOD_TEST).hexdigest(), pair_digest(*parse_pairs(GOOD_TEST, "f"))
    files = {
        "train.txt": PublishedFile(None, pair_digest(*parse_pairs(GOOD_TRAIN, "f"))),
        "test.txt": PublishedFile(*test_digests),
    }
    monkeypatch.setitem(loading.KNOWN_DATASETS, "tiny", LightGCNDataset("tiny", "https://example.invalid/tiny", files))
    monkeypatch.setenv("FEDSHARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDSHARE_DATA_DIR", raising=False)
    return tmp_path


def local_copy(root: Path, train: bytes = GOOD_TRAIN, test: bytes = GOOD_TEST) -> Path:
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "tiny" / "train.txt").write_bytes(train)
    (root / "tiny" / "test.txt").write_bytes(test)
    return root


def test_a_local_copy_with_the_published_pairs_in_another_order_passes(tiny_layout, monkeypatch):
    reordered = b"2 1 0\n0 3 2 1\n1 4 2\n"  # not byte-identical, same pairs (like ../shared/data's train.txt)
    root = local_copy(tiny_layout / "data", train=reordered)
    monkeypatch.setenv("FEDSHARE_DATA_DIR", str(root))
    raw = load_raw(DataConfig(dataset="tiny"))
    assert pairs(raw[raw["split"] == "train"]) == set(zip(*parse_pairs(GOOD_TRAIN, "f")))
    assert len(load_raw(DataConfig(dataset="tiny", data_dir=str(root)))) == len(raw)


@pytest.mark.parametrize(
    "file_name, tampered", [("train.txt", b"0 1 2 3\n1 2 4\n2 0 9\n"), ("test.txt", b"0 4\n1 0\n2 3\n")]
)
def test_a_tampered_local_file_is_refused_with_what_to_do(tiny_layout, monkeypatch, file_name, tampered):
    root = local_copy(tiny_layout / "data", **{file_name.split(".")[0]: tampered})
    monkeypatch.setenv("FEDSHARE_DATA_DIR", str(root))
    with pytest.raises(
        DataError,
        match=rf"tiny/{file_name} is not the published file .*; replace it with the file "
        rf"from https://example.invalid/tiny, or point FEDSHARE_DATA_DIR",
    ) as err:
        load_raw(DataConfig(dataset="tiny"))
    assert "\n" not in str(err.value)


def test_a_missing_local_file_names_it(tiny_layout):
    root = local_copy(tiny_layout / "data")
    (root / "tiny" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"tiny/test.txt not found \(is --data-dir laid out like"):
        load_raw(DataConfig(dataset="tiny", data_dir=str(root)))


# ----------------------------------------------------------------------------------------------
# the download path


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_urlopen(monkeypatch, served: dict[str, bytes]) -> list[str]:
    calls: list[str] = []

    def urlopen(url, timeout):
        calls.append(url)
        return _Response(served[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(loading.urllib.request, "urlopen", urlopen)
    return calls


def test_download_checks_both_files_and_caches_them(tiny_layout, monkeypatch):
    calls = fake_urlopen(monkeypatch, {"train.txt": GOOD_TRAIN, "test.txt": GOOD_TEST})
    raw = load_raw(DataConfig(dataset="tiny"))
    assert sorted(calls) == ["https://example.invalid/tiny/test.txt", "https://example.invalid/tiny/train.txt"]
    cached = tiny_layout / "cache" / "tiny"
    assert (cached / "train.txt").read_bytes() == GOOD_TRAIN and (cached / "test.txt").read_bytes() == GOOD_TEST
    assert load_raw(DataConfig(dataset="tiny")).equals(raw) and len(calls) == 2  # the second load uses the cache


def test_only_the_missing_file_is_downloaded(tiny_layout, monkeypatch):
    (tiny_layout / "cache" / "tiny").mkdir(parents=True)
    (tiny_layout / "cache" / "tiny" / "train.txt").write_bytes(GOOD_TRAIN)
    calls = fake_urlopen(monkeypatch, {"test.txt": GOOD_TEST})
    load_raw(DataConfig(dataset="tiny"))
    assert calls == ["https://example.invalid/tiny/test.txt"]


def test_a_tampered_download_is_refused_and_not_cached(tiny_layout, monkeypatch):
    fake_urlopen(monkeypatch, {"train.txt": b"0 1 2 3\n1 2 4\n2 0 7\n", "test.txt": GOOD_TEST})
    with pytest.raises(
        DataError,
        match=r"tiny: the download from https://example.invalid/tiny/train.txt is not the "
        r"published file .*; try again later, or pass --data-dir",
    ):
        load_raw(DataConfig(dataset="tiny"))
    assert not (tiny_layout / "cache" / "tiny" / "train.txt").exists()


def test_a_bad_download_line_is_refused(tiny_layout, monkeypatch):
    fake_urlopen(monkeypatch, {"train.txt": b"<html>rate limited</html>", "test.txt": GOOD_TEST})
    with pytest.raises(DataError, match=r"download from https://example.invalid/tiny/train.txt, line 1"):
        load_raw(DataConfig(dataset="tiny"))


def test_a_tampered_cache_says_to_delete_it(tiny_layout, monkeypatch):
    fake_urlopen(monkeypatch, {"train.txt": GOOD_TRAIN, "test.txt": GOOD_TEST})
    load_raw(DataConfig(dataset="tiny"))
    (tiny_layout / "cache" / "tiny" / "test.txt").write_bytes(b"0 4\n")
    with pytest.raises(DataError, match=r"test.txt is not the published file .*; delete .*cache/tiny to download it"):
        load_raw(DataConfig(dataset="tiny"))


def test_offline_gives_a_clear_error(tiny_layout, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(loading.urllib.request, "urlopen", offline)
    with pytest.raises(
        DataError,
        match=r"tiny is not available locally and the download from .* failed.*"
        r"--data-dir or set FEDSHARE_DATA_DIR to a folder with tiny/train.txt",
    ):
        load_raw(DataConfig(dataset="tiny"))


def test_fetch_copies_both_checked_files_once(tiny_layout, monkeypatch):
    root = local_copy(tiny_layout / "data")
    target = fetch_dataset("tiny", tiny_layout / "dvc", data_dir=str(root))
    assert target == tiny_layout / "dvc" / "tiny"
    assert (target / "train.txt").read_bytes() == GOOD_TRAIN and (target / "test.txt").read_bytes() == GOOD_TEST
    stamp = (target / "train.txt").stat().st_mtime_ns
    fetch_dataset("tiny", tiny_layout / "dvc", data_dir=str(root))
    assert (target / "train.txt").stat().st_mtime_ns == stamp  # an identical copy is left alone (DVC sees no change)
    (root / "tiny" / "train.txt").write_bytes(b"0 1\n")
    with pytest.raises(DataError, match="is not the published file"):
        fetch_dataset("tiny", tiny_layout / "dvc2", data_dir=str(root))
    assert not (tiny_layout / "dvc2").exists()


# ----------------------------------------------------------------------------------------------
# the published split and the validation carve


@pytest.fixture
def layout_folder(tmp_path):
    train, test = generated_layout()
    train[40] = [1, 2]  # too few training pairs to give one to validation
    test[40] = [3]
    return write_layout(tmp_path / "set", train, test)


def test_test_is_test_txt_and_validation_comes_out_of_train(layout_folder):
    raw = load_raw(DataConfig(dataset=str(layout_folder)))
    interactions = load_interactions(DataConfig(dataset=str(layout_folder)), seed=0)
    table = interactions.table
    assert pairs(table[table["split"] == "test"]) == pairs(raw[raw["split"] == "test"])
    assert pairs(table[table["split"] != "test"]) == pairs(raw[raw["split"] == "train"])
    sizes = table[table["user_id"] < 40].groupby(["user", "split"]).size().unstack()
    assert (sizes["valid"] == 2).all() and (sizes["train"] == 18).all() and (sizes["test"] == 5).all()
    small = table[table["user_id"] == 40]
    assert sorted(small["split"]) == ["test", "train", "train"]  # kept for training, still tested


def test_the_carve_is_seeded_and_ignores_the_file_order(layout_folder, tmp_path):
    config = DataConfig(dataset=str(layout_folder))
    a, b, c = (load_interactions(config, seed) for seed in (0, 0, 1))
    assert a.table.equals(b.table)
    assert not a.table["split"].equals(c.table["split"])
    assert a.table["split"].eq("test").equals(c.table["split"].eq("test"))  # the seed never moves test pairs
    # Lines and items in another order (as the published train.txt is to ../shared/data's): the same split.
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    lines = (layout_folder / "train.txt").read_text().splitlines()
    rng = np.random.default_rng(5)
    rng.shuffle(lines)
    lines = [" ".join([line.split()[0], *rng.permutation(line.split()[1:])]) for line in lines]
    (shuffled / "train.txt").write_text("\n".join(lines) + "\n")
    (shuffled / "test.txt").write_bytes((layout_folder / "test.txt").read_bytes())
    assert load_interactions(DataConfig(dataset=str(shuffled)), seed=0).table.equals(a.table)


def test_the_table_looks_like_any_other_data_set(layout_folder):
    layout = load_interactions(DataConfig(dataset=str(layout_folder)), seed=0)
    other = prepare(synthetic_raw(), DataConfig(), seed=0)
    assert list(layout.table.columns) == list(other.table.columns)
    assert (layout.table.dtypes == other.table.dtypes).all()
    assert set(layout.table["split"]) == {"train", "valid", "test"}
    assert (layout.user_ids[layout.table["user"]] == layout.table["user_id"]).all()
    assert (layout.item_ids[layout.table["item"]] == layout.table["item_id"]).all()


def test_overlaps_and_users_without_training_pairs(tmp_path):
    train, test = generated_layout(n_users=10)
    test[0] = test[0] + [train[0][0]]  # a pair in both files stays in test only
    test[10] = [1, 2, 3]  # test pairs only: nothing to learn from, left out
    folder = write_layout(tmp_path / "set", train, test)
    table = load_interactions(DataConfig(dataset=str(folder)), seed=0).table
    assert not table.duplicated(["user", "item"]).any()
    assert table.loc[(table["user_id"] == 0) & (table["item_id"] == train[0][0]), "split"].tolist() == ["test"]
    assert 10 not in set(table["user_id"])


def test_a_layout_too_small_to_split_is_one_sentence(tmp_path):
    folder = write_layout(tmp_path / "set", {0: [1], 1: [2]}, {0: [3], 1: [4]})
    with pytest.raises(
        DataError,
        match=r"too small to split: .* give no validation interactions .*"
        r"data.min_user_interactions = 3 training pairs",
    ):
        load_interactions(DataConfig(dataset=str(folder)), seed=0)
    write_layout(folder, {0: [1, 2, 3], 1: [2, 3, 4]}, {0: [], 1: []})
    with pytest.raises(DataError, match=r"test.txt has no pairs"):
        load_interactions(DataConfig(dataset=str(folder)), seed=0)


# ----------------------------------------------------------------------------------------------
# the real Gowalla files


def real_gowalla_dir() -> Path:
    if not all((SHARED_DATA / "gowalla" / name).exists() for name in ("train.txt", "test.txt")):
        pytest.skip(f"real Gowalla data not found in {SHARED_DATA} (set FEDSHARE_DATA_DIR)")
    return SHARED_DATA


def test_real_gowalla_passes_the_checks_and_has_the_published_shape(monkeypatch):
    monkeypatch.setenv("FEDSHARE_DATA_DIR", str(real_gowalla_dir()))
    start = time.perf_counter()
    config = DataConfig(dataset="gowalla")
    raw = load_raw(config)  # raises unless both files are the published ones
    interactions = prepare(raw, config, seed=0)
    seconds = time.perf_counter() - start
    table = interactions.table
    assert (interactions.n_users, interactions.n_items) == (29_858, 40_981)
    assert int(table["split"].isin(["train", "valid"]).sum()) == 810_128
    assert int(table["split"].eq("test").sum()) == 217_242
    test = table[table["split"] == "test"]
    assert (
        pair_digest(test["user_id"].to_numpy(), test["item_id"].to_numpy())
        == "9d1add1d4eac36738054fd06efc7fb70acccad526848d78c10fee33498517395"
    )
    kept = table[table["split"] != "test"]
    assert (
        pair_digest(kept["user_id"].to_numpy(), kept["item_id"].to_numpy())
        == "2ddf160a77f38b0018bd6c77cf3dcb40dd98bb50518b17d599732301f8541e75"
    )
    assert table.loc[table["split"] == "train", "user"].nunique() == interactions.n_users
    assert seconds < 60, f"loading and splitting Gowalla took {seconds:.1f}s"  # a few seconds; minutes is a bug
