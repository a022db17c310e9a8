import numpy as np
import pandas as pd
import pytest

from fedshare.config import SharingConfig
from fedshare.data.sharing import (
    build_mask,
    load_mask,
    save_mask,
    shared_graph,
    user_ratios,
)
from fedshare.errors import DataError


@pytest.mark.parametrize("policy", ["none", "all", "0.5", "0.25", "mixed", "uniform"])
def test_ratio_respected_within_one_item_and_only_training_rows(tiny_interactions, policy):
    mask = build_mask(tiny_interactions, SharingConfig(policy=policy), seed=3)
    train = tiny_interactions.part("train")
    # one row per training interaction, none from validation or test
    assert len(mask) == len(train)
    held_out = set(zip(*tiny_interactions.table.query("split != 'train'")[["user", "item"]].to_numpy().T))
    assert not held_out & set(zip(mask["user"], mask["item"]))
    per_user = mask.groupby("user").agg(shared=("shared", "sum"), n=("shared", "size"), ratio=("ratio", "first"))
    assert (abs(per_user["shared"] - per_user["ratio"] * per_user["n"]) <= 1).all()


def test_named_policies_give_the_expected_ratios():
    assert (user_ratios("none", 9, 0) == 0).all() and (user_ratios("all", 9, 0) == 1).all()
    mixed = user_ratios("mixed", 9, 0)
    assert sorted(mixed.tolist()) == [0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1]
    uniform = user_ratios("uniform", 1000, 0)
    assert 0 <= uniform.min() and uniform.max() <= 1 and abs(uniform.mean() - 0.5) < 0.05


def test_masks_are_deterministic_by_seed(tiny_interactions):
    a = build_mask(tiny_interactions, SharingConfig(policy="uniform"), seed=1)
    b = build_mask(tiny_interactions, SharingConfig(policy="uniform"), seed=1)
    c = build_mask(tiny_interactions, SharingConfig(policy="uniform"), seed=2)
    assert a.equals(b) and not a["shared"].equals(c["shared"])


def test_item_level_file_shares_exactly_those_items(tiny_interactions, tmp_path):
    train = tiny_interactions.part("train")
    chosen = train.groupby("user").head(2)[["user_id", "item_id"]]
    path = tmp_path / "items.csv"
    chosen.to_csv(path, index=False)
    mask = build_mask(tiny_interactions, SharingConfig(policy="file", file=str(path)), seed=0)
    shared = set(zip(mask.loc[mask["shared"], "user_id"], mask.loc[mask["shared"], "item_id"]))
    assert shared == set(zip(chosen["user_id"], chosen["item_id"]))


def test_ratio_file_and_bad_files(tiny_interactions, tmp_path):
    users = tiny_interactions.user_ids
    path = tmp_path / "ratios.csv"
    pd.DataFrame({"user_id": users, "ratio": np.where(np.arange(len(users)) % 2, 1.0, 0.0)}).to_csv(path, index=False)
    mask = build_mask(tiny_interactions, SharingConfig(policy="file", file=str(path)), seed=0)
    assert mask.groupby("user")["shared"].mean().isin([0.0, 1.0]).all()
    pd.DataFrame({"user_id": [users[0]], "item_id": [-1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="not training interactions"):
        build_mask(tiny_interactions, SharingConfig(policy="file", file=str(path)), seed=0)
    with pytest.raises(DataError, match="sharing policy"):
        build_mask(tiny_interactions, SharingConfig(policy="most"), seed=0)
    with pytest.raises(DataError, match=r"in \[0,1\]"):
        build_mask(tiny_interactions, SharingConfig(policy="1.5"), seed=0)


def test_mask_file_round_trip_and_server_view(tiny_interactions, tmp_path):
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    save_mask(mask, tmp_path / "masks.parquet")
    loaded = load_mask(tmp_path / "masks.parquet")
    assert loaded["shared"].tolist() == mask["shared"].tolist()
    graph = shared_graph(loaded, tiny_interactions.n_users, tiny_interactions.n_items)
    assert graph.pairs() == set(zip(mask.loc[mask["shared"], "user"], mask.loc[mask["shared"], "item"]))


def test_masks_carry_a_checksum_checked_on_load(tiny_interactions, tiny_config, tmp_path):
    from fedshare.data.sharing import build_mask, load_mask, save_mask
    from fedshare.errors import CorruptFileError

    path = tmp_path / "masks.parquet"
    save_mask(build_mask(tiny_interactions, tiny_config.sharing, seed=0), path)
    assert (tmp_path / "masks.parquet.sha256").exists() and len(load_mask(path)) > 0
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(CorruptFileError, match="corrupted"):
        load_mask(path)
