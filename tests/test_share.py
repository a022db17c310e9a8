"""Share requests (the slider moved up): private training items become shared, the server graph
gains the edges, training continues from the served model; applied exactly once across SIGKILLs,
and replayed in order with unshares by every path that trains for a state folder."""

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import cli, inbox_args, outcome, served_state

from fedshare.config import load_config
from fedshare.data.consent import masks_under_consent
from fedshare.data.requests import replay_on_mask
from fedshare.errors import DataError
from fedshare.service.faults import POINTS
from fedshare.service.inbox import process_inbox
from fedshare.service.model_store import ModelStore, publish
from fedshare.stages import train_stage
from fedshare.storage import load_tensors


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny model served from a state folder (mixed sharing: some users keep items private)."""
    return served_state(tmp_path_factory.mktemp("share"), ("requests.share_rounds=3",))


def fresh(served, tmp_path):
    state, overrides = served
    shutil.copytree(state, tmp_path / "state")
    (tmp_path / "inbox").mkdir()
    mask = pd.read_parquet(tmp_path / "state" / "models" / "0000" / "masks.parquet")
    return tmp_path / "state", tmp_path / "inbox", overrides, mask


def share_requests(mask):
    """Two private items of one user who keeps some private, and 'all' for another (empty item_id)."""
    private = mask[~mask["shared"]]
    first, second = sorted(private["user_id"].unique())[:2]
    items = sorted(private.loc[private["user_id"] == first, "item_id"])[:2]
    rows = [{"request_id": f"s{n}", "user_id": first, "item_id": item} for n, item in enumerate(items)]
    rows.append({"request_id": "s-all", "user_id": second, "item_id": ""})
    return pd.DataFrame(rows), first, items, second


def test_a_share_file_adds_the_edges_and_continues_training_from_the_served_model(served, tmp_path):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    requests, first, items, second = share_requests(mask)
    shared_item = int(mask.loc[mask["shared"], "item_id"].iloc[0])
    bad = pd.DataFrame(
        [
            {"request_id": "b1", "user_id": first, "item_id": shared_item},  # shared already (or not theirs)
            {"request_id": "b2", "user_id": 999999, "item_id": ""},
        ]
    )
    pd.concat([requests, bad]).to_csv(inbox / "share-more.csv", index=False)
    before = load_tensors(ModelStore(state).require_current() / "server.pt")

    [outcome] = process_inbox(load_config(None, overrides), state, inbox, "contrastive")
    assert outcome["applied"] == 3 and outcome["rejected"] == 2
    current = ModelStore(state).require_current()
    new_mask = pd.read_parquet(current / "masks.parquet")
    mine = new_mask[new_mask["user_id"] == first]
    assert mine.loc[mine["item_id"].isin(items), "shared"].all()
    assert new_mask.loc[new_mask["user_id"] == second, "shared"].all()  # "all": every training item now
    assert new_mask["shared"].sum() > mask["shared"].sum()
    unchanged = new_mask[~new_mask["user_id"].isin([first, second])].reset_index(drop=True)
    pd.testing.assert_frame_equal(unchanged, mask[~mask["user_id"].isin([first, second])].reset_index(drop=True))
    after = load_tensors(current / "server.pt")
    assert len(after["shared_users"]) == len(before["shared_users"]) + new_mask["shared"].sum() - mask["shared"].sum()
    assert not np.allclose(after["graph_items"].numpy(), before["graph_items"].numpy())  # it trained on
    event = ModelStore(state).events()[-1]
    assert (event["mode"], event["method"], event["metrics"]["rounds"]) == ("share", "continue", 3)
    reasons = set(pd.read_csv(inbox / "processed" / "share-more.rejections.csv")["reason"])
    assert reasons == {"item is not a private training item of this user", "unknown user"}


def test_replay_takes_unshares_and_shares_in_the_order_they_were_applied(served, tmp_path):
    _, _, _, mask = fresh(served, tmp_path)
    user = int(mask.loc[mask["shared"], "user_id"].iloc[0])
    item = int(mask.loc[mask["shared"] & (mask["user_id"] == user), "item_id"].iloc[0])
    pair = (mask["user_id"] == user) & (mask["item_id"] == item)

    def replayed(*modes):
        applied = pd.DataFrame(
            [
                {"request_id": f"q{n}", "user_id": str(user), "item_id": str(item), "mode": m}
                for n, m in enumerate(modes)
            ]
        )
        return replay_on_mask(mask, applied)

    assert not replayed("unshare")[0].loc[pair.to_numpy(), "shared"].any()
    assert replayed("unshare", "share")[0].loc[pair.to_numpy(), "shared"].all()  # shared again by its owner
    assert not replayed("unshare", "share", "unshare")[0].loc[pair.to_numpy(), "shared"].any()
    masks, deleted = replayed("share", "delete")
    assert len(masks) == len(mask) - 1 and len(deleted) == 1
    masks, deleted = replayed("delete", "share")  # a deleted pair is gone: nothing to share again
    assert len(masks) == len(mask) - 1 and len(deleted) == 1


def test_train_for_a_state_folder_shares_what_was_shared_again_and_nothing_withdrawn(served, tmp_path):
    """After unshare-then-share of one item and an unshare of another, a retraining for the state
    folder (fresh masks from the policy) shares the first, keeps the second private, and serves."""
    state, inbox, overrides, mask = fresh(served, tmp_path)
    config = load_config(None, overrides)
    user = int(mask.loc[mask["shared"], "user_id"].iloc[0])
    again, gone = (int(i) for i in mask.loc[mask["shared"] & (mask["user_id"] == user), "item_id"].iloc[:2])
    steps = [
        ("a-unshare.csv", [("u1", again), ("u2", gone)]),
        ("b-share-again.csv", [("s1", again)]),
    ]
    for name, rows in steps:
        path = inbox / (("share-" if "share-again" in name else "") + name)
        pd.DataFrame([{"request_id": r, "user_id": user, "item_id": i} for r, i in rows]).to_csv(path, index=False)
        [outcome] = process_inbox(config, state, inbox, "contrastive")
        assert outcome["applied"] == len(rows)

    consent = ModelStore(state).consent()
    assert list(consent.applied["mode"]) == ["unshare", "unshare", "share"]
    train_stage(config, tmp_path / "retrained", progress=False, consent=consent)
    retrained = pd.read_parquet(tmp_path / "retrained" / "masks.parquet")
    theirs = retrained[retrained["user_id"] == user].set_index("item_id")["shared"]
    assert theirs[again] and not theirs[gone]
    publish(config, state, tmp_path / "retrained")  # not refused (served or not, on its validation)

    # a run trained without the journal shares `gone` again (the policy draws it): refused
    leaked = load_config(None, overrides)
    train_stage(leaked, tmp_path / "ignores-the-journal", progress=False)
    with pytest.raises(DataError, match="withdrew"):
        publish(leaked, state, tmp_path / "ignores-the-journal")


def test_a_state_folders_consent_is_a_no_op_on_its_served_masks(served, tmp_path):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    requests, *_ = share_requests(mask)
    requests.to_csv(inbox / "share-x.csv", index=False)
    process_inbox(load_config(None, overrides), state, inbox, "contrastive")
    current = ModelStore(state).require_current()
    from fedshare.data.interactions import Interactions

    interactions, served_mask = Interactions.load(current), pd.read_parquet(current / "masks.parquet")
    _, replayed = masks_under_consent(interactions, served_mask, ModelStore(state).consent())
    pd.testing.assert_frame_equal(replayed.reset_index(drop=True), served_mask.reset_index(drop=True))


# -- crashes -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(served, tmp_path_factory):
    state, inbox, overrides, mask = fresh(served, tmp_path_factory.mktemp("share-reference"))
    share_requests(mask)[0].to_csv(inbox / "share-req.csv", index=False)
    assert cli(inbox_args(state, inbox, overrides)).returncode == 0
    return outcome(state)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_a_share_event_then_rerun_equals_an_uninterrupted_run(served, reference, tmp_path, point):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    share_requests(mask)[0].to_csv(inbox / "share-req.csv", index=False)
    crashed = cli(inbox_args(state, inbox, overrides), {"FEDSHARE_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    rerun = cli(inbox_args(state, inbox, overrides))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    mask_now, server, applied = outcome(state)
    ref_mask, ref_server, ref_applied = reference
    pd.testing.assert_frame_equal(mask_now, ref_mask)
    for name in ("item_table", "graph_users", "graph_items", "shared_users", "shared_items"):
        assert np.allclose(server[name].numpy(), ref_server[name].numpy(), atol=1e-6), name
    assert applied == ref_applied and set(applied.values()) == {1}  # each request applied exactly once
    assert (inbox / "processed" / "share-req.csv").exists() and not (inbox / "share-req.csv").exists()
