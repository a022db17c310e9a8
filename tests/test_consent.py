"""The consent store of a state folder: after a model is served, only requests change a user's
choice. A retraining under another policy keeps every known user's choice; new users follow
the policy; a run that shares more than users chose is refused."""

import shutil

import pandas as pd
import pytest
from conftest import cli, served_state

from fedshare.config import load_config
from fedshare.data.consent import Consent, consent_masks
from fedshare.errors import DataError
from fedshare.service.model_store import ModelStore, publish
from fedshare.stages import train_stage


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return served_state(tmp_path_factory.mktemp("consent"))


def test_a_retraining_under_another_policy_keeps_every_users_choice(served, tmp_path):
    source, overrides = served
    state = tmp_path / "state"
    shutil.copytree(source, state)
    served_mask = pd.read_parquet(ModelStore(state).require_current() / "masks.parquet")
    assert 0 < served_mask["shared"].sum() < len(served_mask)  # mixed: some users keep items private
    short = [x for o in overrides if not o.startswith("federated.rounds") for x in ("--set", o)]
    run = tmp_path / "everyone"
    out = cli(
        ["train", "--rounds", "1", "--sharing", "all", "--state", str(state), "--out", str(run)] + short + ["--quiet"]
    )
    assert out.returncode == 0, out.stderr
    drawn = pd.read_parquet(run / "masks.parquet")
    keys = ["user_id", "item_id"]
    both = served_mask.merge(drawn, on=keys, suffixes=("_served", "_drawn"))
    assert len(both) == len(served_mask) == len(drawn)
    assert (both["shared_served"] == both["shared_drawn"]).all()  # 'all' shared nothing a user kept private
    assert (both["ratio_served"] == both["ratio_drawn"]).all()

    # The same policy without the state folder shares everyone's items: publishing it is refused.
    everyone = load_config(None, [*overrides, "sharing.policy=all"])
    train_stage(everyone, tmp_path / "no-state", progress=False)
    with pytest.raises(DataError, match="never shared"):
        publish(everyone, state, tmp_path / "no-state")


def test_new_users_follow_the_draw_known_users_keep_theirs_and_deleted_pairs_go():
    served = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [10, 11, 10], "shared": [True, False, False], "ratio": [0.5, 0.5, 0.0]}
    )
    # What the served model's data still holds: (1, 12) was a validation pair then; (2, 11) was deleted.
    held = pd.DataFrame({"user_id": [1, 1, 1, 2, 3], "item_id": [10, 11, 12, 10, 10]})
    drawn = pd.DataFrame(  # the policy of this retraining: everyone shares everything
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": [10, 11, 12, 10, 11, 10],
            "user": [0, 0, 0, 1, 1, 2],
            "item": [0, 1, 2, 0, 1, 0],
            "shared": True,
            "ratio": 1.0,
        }
    )
    empty = pd.DataFrame(columns=["request_id", "user_id", "item_id", "mode"])
    mask, deleted = consent_masks(drawn, Consent(served, empty, held))
    assert list(zip(mask["user_id"], mask["item_id"], mask["shared"])) == [
        (1, 10, True),  # shared by its user
        (1, 11, False),  # kept private by its user, whatever the policy says
        (1, 12, False),  # never asked about: private
        (2, 10, False),
        (3, 10, True),  # a user the state folder never served: the policy decides
    ]
    assert mask["ratio"].tolist() == [0.5, 0.5, 0.5, 0.0, 1.0]
    assert list(zip(deleted["user_id"], deleted["item_id"])) == [(2, 11)]
    assert consent_masks(drawn, Consent(None, empty))[0].equals(drawn)  # no served model yet: the policy decides
