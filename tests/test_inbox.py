"""Unsharing requests are applied exactly once or rejected with a reason, whatever the input and
whatever crashes: hostile request files, SIGKILL at every step, two processes at once."""

import os
import random
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli, inbox_args, outcome, served_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedshare.config import load_config
from fedshare.errors import DataError
from fedshare.service.faults import POINTS
from fedshare.service.inbox import intake, process_inbox
from fedshare.service.journal import LockTimeout, RequestJournal, state_lock
from fedshare.service.model_store import ModelStore, publish
from fedshare.stages import train_stage


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained tiny model served from a state folder (no MLflow), and its config overrides."""
    state, overrides = served_state(tmp_path_factory.mktemp("served"), ("unlearning.snapshot_rounds=[0, 2]",))
    mask = pd.read_parquet(state / "models" / "0000" / "masks.parquet")
    return state, overrides, mask


def fresh(served, tmp_path):
    state, overrides, mask = served
    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    (tmp_path / "inbox").mkdir()
    return copy, tmp_path / "inbox", overrides, mask


def valid_requests(mask, count=3):
    sharing = sorted(mask.loc[mask["shared"], "user_id"].unique())[:count]
    rows = [{"request_id": f"all-{u}", "user_id": u, "item_id": ""} for u in sharing[:-1]]
    last = mask[mask["shared"] & (mask["user_id"] == sharing[-1])]
    rows.append({"request_id": "one", "user_id": sharing[-1], "item_id": int(last["item_id"].iloc[0])})
    return pd.DataFrame(rows)


# -- hostile input -----------------------------------------------------------------------------------

cells = st.one_of(st.text(max_size=8), st.integers(-5, 10**12).map(str), st.sampled_from(["", "1000", "5001", "NaN"]))
headers = st.lists(st.sampled_from(["request_id", "user_id", "item_id", "extra", "", "user"]), min_size=0, max_size=5)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda h, rows: (",".join(h) + "\n" + "\n".join(",".join(r) for r in rows)).encode(),
            headers,
            st.lists(st.lists(cells, min_size=0, max_size=5), max_size=8),
        ),
    )
)
def test_hostile_request_files_never_crash_and_account_for_every_row(served, tmp_path_factory, raw):
    state, _, mask = served
    path = tmp_path_factory.mktemp("hostile") / "req.csv"
    path.write_bytes(raw)
    before = {p: p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}
    try:
        taken = intake(ModelStore(state), path, validate=False)
    except DataError as err:
        assert "\n" not in str(err)
        return
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(taken.accepted) + len(taken.rejected) == len(table)
    assert set(taken.rejected["reason"]) <= {
        "duplicate request_id",
        "user_id and item_id must be non-negative integers",
        "unknown user",
        "user shares nothing",
        "item not currently shared by this user",
        "request_id is empty",
    }
    shared_users = set(mask.loc[mask["shared"], "user_id"].astype(str))
    assert set(taken.accepted["user_id"].astype(str).str.strip().str.lstrip("0").replace("", "0")) <= shared_users
    assert {p: p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()} == before  # nothing written


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    junk=st.lists(
        st.tuples(
            st.text(max_size=4),
            st.one_of(st.integers(-3, 999), st.integers(2000, 10**9)),
            st.sampled_from(["", "5000", "x", "-1"]),
        ),
        max_size=6,
    ),
    seed=st.integers(0, 10**6),
)
def test_valid_requests_are_applied_whatever_junk_surrounds_them(served, tmp_path_factory, junk, seed):
    state, inbox, overrides, mask = fresh(served, tmp_path_factory.mktemp("mixed"))
    good = valid_requests(mask, 2)
    # Junk: user IDs outside the fixture's users (1000-1039), so no junk row is a valid request.
    bad = pd.DataFrame(
        [{"request_id": f"j{i}-{r}", "user_id": u, "item_id": it} for i, (r, u, it) in enumerate(junk)],
        columns=["request_id", "user_id", "item_id"],
    )
    rows = pd.concat([good, bad], ignore_index=True).sample(frac=1, random_state=seed)
    rows.to_csv(inbox / "req.csv", index=False)
    parsed = pd.read_csv(
        inbox / "req.csv", dtype=str, keep_default_na=False
    )  # what the file says (e.g. \r splits rows)
    outcomes = process_inbox(load_config(None, overrides), state, inbox, "contrastive")
    applied_ids = {
        e["request_id"] for e in RequestJournal(state / "journal.jsonl").entries() if e["state"] == "applied"
    }
    assert set(good["request_id"]) <= applied_ids
    rejected = pd.read_csv(inbox / "processed" / "req.rejections.csv", dtype=str, keep_default_na=False)
    assert outcomes[0]["applied"] + len(rejected) == len(parsed)
    assert not set(bad["request_id"]) & applied_ids - set(good["request_id"])  # no junk row was applied
    new_mask = pd.read_parquet(ModelStore(state).require_current() / "masks.parquet")
    all_user = int(good.loc[good["item_id"] == "", "user_id"].iloc[0])
    assert not new_mask.loc[new_mask["user_id"] == all_user, "shared"].any()


def test_unparseable_file_gives_one_line_exit_3_and_changes_nothing(served, tmp_path):
    state, inbox, overrides, _ = fresh(served, tmp_path)
    (inbox / "bad.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    before = {p: p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file() and p.name != ".lock"}
    out = cli(inbox_args(state, inbox, overrides))
    assert out.returncode == 3 and "Traceback" not in out.stderr and "could not be parsed" in out.stderr
    assert "not parsed, moved to failed/" in out.stdout
    assert {p: p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file() and p.name != ".lock"} == before


def test_unshare_cli_on_a_file_without_request_columns_exits_2(served, tmp_path):
    state, _, _, _ = fresh(served, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("who,what\n1,2\n")
    out = cli(
        [
            "unshare",
            "--run",
            str(state / "models" / "0000"),
            "--requests",
            str(bad),
            "--out",
            str(tmp_path / "u"),
            "--set",
            "tracking.enabled=false",
        ]
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "lacks column" in out.stderr


def test_request_ids_are_never_applied_twice_across_files(served, tmp_path):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    config = load_config(None, overrides)
    requests = valid_requests(mask, 2)
    requests.to_csv(inbox / "a.csv", index=False)
    process_inbox(config, state, inbox, "contrastive")
    requests.to_csv(inbox / "b.csv", index=False)  # the same requests, re-sent
    outcomes = process_inbox(config, state, inbox, "contrastive")
    assert outcomes[0]["applied"] == 0 and outcomes[0]["event"] is None
    reasons = pd.read_csv(inbox / "processed" / "b.rejections.csv")["reason"]
    assert (reasons == "request_id already applied (duplicate or re-sent)").all()
    applied = [e["request_id"] for e in RequestJournal(state / "journal.jsonl").entries() if e["state"] == "applied"]
    assert sorted(applied) == sorted(requests["request_id"])


# -- crashes -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(served, tmp_path_factory):
    """The outcome of an uninterrupted run on the same request file."""
    state, inbox, overrides, mask = fresh(served, tmp_path_factory.mktemp("reference"))
    valid_requests(mask).to_csv(inbox / "req.csv", index=False)
    out = cli(inbox_args(state, inbox, overrides))
    assert out.returncode == 0, out.stderr
    return outcome(state)


def assert_same_outcome(state, reference):
    mask, server, applied = outcome(state)
    ref_mask, ref_server, ref_applied = reference
    pd.testing.assert_frame_equal(mask, ref_mask)
    for name in ("item_table", "graph_users", "graph_items", "shared_users", "shared_items"):
        assert np.allclose(server[name].numpy(), ref_server[name].numpy(), atol=1e-6), name
    assert applied == ref_applied and set(applied.values()) == {1}  # each request applied exactly once


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_then_rerun_equals_an_uninterrupted_run(served, reference, tmp_path, point):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    valid_requests(mask).to_csv(inbox / "req.csv", index=False)
    crashed = cli(inbox_args(state, inbox, overrides), {"FEDSHARE_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    rerun = cli(inbox_args(state, inbox, overrides))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_outcome(state, reference)
    assert (inbox / "processed" / "req.csv").exists() and not (inbox / "req.csv").exists()
    assert [p.name for p in (state / "models").iterdir()] == [ModelStore(state).require_current().name]


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(served, reference, tmp_path, trial):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    valid_requests(mask).to_csv(inbox / "req.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fedshare.cli", *inbox_args(state, inbox, overrides)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(random.Random(trial).uniform(1.0, 6.0))
    process.kill()
    process.wait()
    rerun = cli(inbox_args(state, inbox, overrides))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_outcome(state, reference)


# -- concurrency -------------------------------------------------------------------------------------


def test_the_state_lock_excludes_a_second_holder(tmp_path):
    with state_lock(tmp_path):
        failures = []

        def second():
            try:
                with state_lock(tmp_path, timeout=0.5):
                    pass
            except LockTimeout as err:
                failures.append(str(err))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert failures and "another unsharing process" in failures[0]
    with state_lock(tmp_path, timeout=0.5):  # free again once released
        pass


@pytest.mark.slow
def test_two_processes_started_at_once_apply_each_request_once(served, reference, tmp_path):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    valid_requests(mask).to_csv(inbox / "req.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "fedshare.cli", *inbox_args(state, inbox, overrides)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), results
    assert sum("requests applied" in out for out, _ in results) == 1  # the other found the inbox empty
    assert_same_outcome(state, reference)


# -- retraining for a state folder -------------------------------------------------------------------


def test_train_for_a_state_folder_never_reshares_or_keeps_withdrawn_data(served, tmp_path):
    """After one user unshared everything and another deleted an item, `fedshare train --state`
    shares none of it again, trains on none of the deleted pair, and its short (5-round) model does
    not replace the served one, which is better on the same validation measure."""
    state, inbox, overrides, mask = fresh(served, tmp_path)
    sharing = sorted(mask.loc[mask["shared"], "user_id"].unique())
    unsharer, deleter = int(sharing[0]), int(sharing[1])
    deleted_item = int(mask.loc[mask["shared"] & (mask["user_id"] == deleter), "item_id"].iloc[0])
    pd.DataFrame([{"request_id": "u-all", "user_id": unsharer, "item_id": ""}]).to_csv(inbox / "a.csv", index=False)
    pd.DataFrame([{"request_id": "d-one", "user_id": deleter, "item_id": deleted_item}]).to_csv(
        inbox / "delete-b.csv", index=False
    )
    config = load_config(None, overrides)
    process_inbox(config, state, inbox, "contrastive")
    served_before = ModelStore(state).require_current()

    run = tmp_path / "short"
    settings = [x for o in overrides if not o.startswith("federated.rounds") for x in ("--set", o)]
    out = cli(["train", "--rounds", "1", "--state", str(state), "--out", str(run), *settings, "--quiet"])
    assert out.returncode == 0, out.stderr
    new_mask = pd.read_parquet(run / "masks.parquet")
    assert not new_mask.loc[new_mask["user_id"] == unsharer, "shared"].any()
    assert new_mask[(new_mask["user_id"] == deleter) & (new_mask["item_id"] == deleted_item)].empty
    trained_on = pd.read_parquet(run / "interactions.parquet")
    assert trained_on[(trained_on["user_id"] == deleter) & (trained_on["item_id"] == deleted_item)].empty
    assert "kept the current model" in out.stdout
    assert ModelStore(state).require_current() == served_before


def test_a_run_that_reshares_withdrawn_pairs_is_refused(served, tmp_path):
    state, inbox, overrides, mask = fresh(served, tmp_path)
    user = int(sorted(mask.loc[mask["shared"], "user_id"].unique())[0])
    pd.DataFrame([{"request_id": "u-all", "user_id": user, "item_id": ""}]).to_csv(inbox / "a.csv", index=False)
    config = load_config(None, overrides)
    process_inbox(config, state, inbox, "contrastive")
    train_stage(config, tmp_path / "ignores-the-journal", progress=False)  # masks drawn afresh: user shares again
    with pytest.raises(DataError, match="withdrew"):
        publish(config, state, tmp_path / "ignores-the-journal")
