import pandas as pd
import pytest
from conftest import real_data_dir, synthetic_raw

from fedshare.config import DataConfig, load_config
from fedshare.data.interactions import load_interactions, prepare
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


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id\n", "no interactions"),
    ("user,item\n1,2\n", "column 'user_id' not found"),
    ("user_id,item_id\nalice,2\n", "non-integer or negative user_id"),
    ("user_id,item_id\n1,-3\n", "non-integer or negative item_id"),
])
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
    raw = pd.concat([synthetic_raw(), pd.DataFrame({"user_id": [1], "item_id": [5000], "rating": [3], "timestamp": [0]})])
    interactions = prepare(raw, DataConfig(min_user_interactions=3), seed=0)
    lonely = interactions.table[interactions.table["user_id"] == 1]
    assert (lonely["split"] == "train").all()


def test_min_rating_and_k_core():
    raw = synthetic_raw()
    kept = prepare(raw, DataConfig(min_rating=4), 0).table
    assert len(kept) == (raw["rating"] >= 4).sum()
    cored = prepare(raw, DataConfig(k_core=5), 0).table
    assert cored.groupby("user").size().min() >= 5 and cored.groupby("item").size().min() >= 5
