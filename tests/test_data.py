import numpy as np
import pandas as pd
import pytest
from conftest import real_data_dir, synthetic_raw

from fedshare.config import DataConfig, load_config
from fedshare.data.interactions import load_interactions, prepare, split_per_user
from fedshare.data.loading import load_raw
from fedshare.errors import DataError


def test_real_ml100k_loads_with_the_documented_shape():
    config = DataConfig(dataset="ml-100k", data_dir=str(real_data_dir()))
    raw = load_raw(config)
    assert len(raw) == 100_000 and raw["user_id"].nunique() == 943 and raw["item_id"].nunique() == 1682
    interactions = prepare(raw, config, seed=0)
    assert (interactions.n_users, interactions.n_items) == (943, 1682)


def test_csv_with_a_column_mapping_and_raw_ids_kept(tmp_path):
    raw = synthetic_raw().rename(columns={"user_id": "uid", "item_id": "iid"}).drop(columns=["timestamp"])
    path = tmp_path / "inter.csv"
    raw.to_csv(path, index=False)
    config = load_config(None, [f"data.dataset={path}", "data.columns.user=uid", "data.columns.item=iid"]).data
    interactions = load_interactions(config, seed=0)
    table = interactions.table
    assert set(table["user_id"]) == set(raw["uid"]) and set(table["item_id"]) == set(raw["iid"])
    # contiguous indices map back to the raw IDs
    assert (interactions.user_ids[table["user"]] == table["user_id"]).all()
    assert (interactions.item_ids[table["item"]] == table["item_id"]).all()


def test_parquet_and_tsv_load(tmp_path):
    raw = synthetic_raw()
    raw.to_parquet(tmp_path / "a.parquet")
    raw.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    for name in ("a.parquet", "a.tsv"):
        assert len(load_raw(DataConfig(dataset=str(tmp_path / name)))) == len(raw)


@pytest.mark.parametrize(
    "content, message",
    [
        ("user_id,item_id\n", "no interactions"),
        ("person,thing\n1,2\n", "column 'user_id' not found"),  # no common name to fall back on
        ("user_id,item_id\nalice,2\n", "non-integer or negative user_id"),
        ("user_id,item_id\n1,-3\n", "non-integer or negative item_id"),
    ],
)
def test_bad_tables_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_raw(DataConfig(dataset=str(path)))


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_raw(DataConfig(dataset=str(tmp_path / "nope.csv")))
    with pytest.raises(DataError, match="not found"):
        load_raw(DataConfig(dataset="ml-1m", data_dir=str(tmp_path)))


def test_split_is_disjoint_per_user_sized_and_seeded():
    config = DataConfig()
    raw = synthetic_raw(n_users=30, per_user=20)
    a, b, c = prepare(raw, config, 0), prepare(raw, config, 0), prepare(raw, config, 1)
    table = a.table
    assert not table.duplicated(["user", "item"]).any()  # each interaction in exactly one split
    sizes = table.groupby(["user", "split"]).size().unstack()
    assert (sizes["valid"] == 2).all() and (sizes["test"] == 2).all() and (sizes["train"] == 16).all()
    assert a.table.equals(b.table)
    assert not a.table["split"].equals(c.table["split"])


def test_users_with_too_few_interactions_are_train_only():
    lonely_row = pd.DataFrame({"user_id": [1], "item_id": [5000], "rating": [3], "timestamp": [0]})
    raw = pd.concat([synthetic_raw(), lonely_row])
    interactions = prepare(raw, DataConfig(min_user_interactions=3), seed=0)
    lonely = interactions.table[interactions.table["user_id"] == 1]
    assert (lonely["split"] == "train").all()


def test_min_rating_and_k_core():
    raw = synthetic_raw()
    kept = prepare(raw, DataConfig(min_rating=4), 0).table
    assert len(kept) == (raw["rating"] >= 4).sum()
    cored = prepare(raw, DataConfig(k_core=5), 0).table
    assert cored.groupby("user").size().min() >= 5 and cored.groupby("item").size().min() >= 5


@pytest.mark.parametrize(
    "header, suffix",
    [
        (["userId", "movieId", "rating", "timestamp"], ".csv"),  # MovieLens' ratings.csv
        (["user", "item", "rating", "timestamp"], ".csv"),
        (["uid", "iid", "score", "ts"], ".csv"),
        (["UserID", "MovieID", "Rating", "Timestamp"], ".csv"),
        (["user_id:token", "item_id:token", "rating:float", "timestamp:float"], ".inter"),  # RecBole
    ],
)
def test_common_column_names_need_no_mapping(tmp_path, header, suffix):
    raw = synthetic_raw()
    path = tmp_path / f"ratings{suffix}"
    raw.to_csv(path, sep="\t" if suffix == ".inter" else ",", index=False, header=header)
    loaded = load_raw(DataConfig(dataset=str(path)))
    assert (loaded[["user_id", "item_id", "rating", "timestamp"]].to_numpy() == raw.to_numpy()).all()


def test_without_rating_and_timestamp_every_interaction_counts_once(tmp_path):
    path = tmp_path / "pairs.csv"
    synthetic_raw()[["user_id", "item_id"]].rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(
        path, index=False
    )
    loaded = load_raw(DataConfig(dataset=str(path)))
    assert (loaded["rating"] == 1).all() and (loaded["timestamp"] == 0).all()


def test_configured_columns_win_over_common_names(tmp_path):
    path = tmp_path / "both.csv"
    pd.DataFrame({"user_id": [1, 2], "user": [7, 8], "uid": [5, 6], "item": [3, 4]}).to_csv(path, index=False)
    assert load_raw(DataConfig(dataset=str(path)))["user_id"].tolist() == [1, 2]  # the configured default
    config = load_config(None, [f"data.dataset={path}", "data.columns.user=uid"]).data
    assert load_raw(config)["user_id"].tolist() == [5, 6]  # an explicit mapping
    config = load_config(None, [f"data.dataset={path}", "data.columns.user=person"]).data
    with pytest.raises(DataError, match="column 'person' not found"):  # is never guessed around
        load_raw(config)


def test_a_guessed_timestamp_must_be_numeric(tmp_path):
    path = tmp_path / "dates.csv"
    pd.DataFrame({"user": [1, 2], "item": [3, 4], "time": ["2020-01-01", "2020-01-02"]}).to_csv(path, index=False)
    assert (load_raw(DataConfig(dataset=str(path)))["timestamp"] == 0).all()


def test_a_data_set_too_small_to_split_is_one_sentence(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("user_id,item_id,rating\n1,10,5\n2,10,4\n3,11,3\n")
    with pytest.raises(
        DataError,
        match=r"tiny.csv is too small to split: its 3 interactions of 3 users give no "
        r"validation and no test interactions \(a user needs at least "
        r"data.min_user_interactions = 3 interactions",
    ) as err:
        load_interactions(DataConfig(dataset=str(path)), seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="data.valid_ratio is 0"):
        prepare(synthetic_raw(), DataConfig(valid_ratio=0), seed=0)


def test_split_order_is_the_lexsort_one():
    """split_per_user sorts with two stable argsorts for speed; the draws must stay np.lexsort's
    (published results depend on them)."""
    users = np.random.default_rng(1).integers(0, 50, 2000)
    config = DataConfig()
    rng = np.random.default_rng(7)
    order = np.lexsort((rng.random(len(users)), users))
    starts = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    position = np.empty(len(users), dtype=np.int64)
    position[order] = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.bincount(users)[users]
    n_held = np.maximum(np.floor(0.1 * n), 1)
    expected = np.where(position < n_held, "test", np.where(position < 2 * n_held, "valid", "train"))
    assert (split_per_user(users, config, seed=7) == expected).all()
