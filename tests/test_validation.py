"""Great Expectations suites: clean data passes, each defect fails the right suite with a clear line."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, real_data_dir

from fedshare.config import DataConfig, SharingConfig
from fedshare.data.interactions import load_interactions
from fedshare.data.requests import draw_requests, read_requests, resolve_requests
from fedshare.data.sharing import build_mask
from fedshare.errors import DataError
from fedshare.mlops.validation import (
    ValidationError,
    ValidationReport,
    check,
    validate_interactions,
    validate_masks,
    validate_requests,
)

POLICIES = ["mixed", "0.5", "all", "none", "uniform"]


def failing(report: ValidationReport, *fragments: str) -> str:
    """The report failed, and one failure line contains every fragment; returns that line."""
    assert not report.success, report.summary()
    for line in report.failures:
        if all(fragment in line for fragment in fragments):
            return line
    raise AssertionError(f"no failure line with {fragments}: {report.failures}")


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, fedshare.mlops.validation; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# -- interactions ----------------------------------------------------------------------------------


def test_clean_interactions_pass_and_the_report_is_plain_data(tiny_interactions):
    report = validate_interactions(tiny_interactions.table)
    assert report.success and report.failures == []
    assert report.rows == len(tiny_interactions.table) and report.evaluated >= 15
    assert (
        report.summary()
        == f"interactions: {report.evaluated}/{report.evaluated} expectations passed on {report.rows} rows"
    )
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    assert check(report) is report


def _null_rating(t):
    t.loc[3, "rating"] = np.nan
    return t


def _bad_ratings(t):
    t.loc[[1, 2], "rating"] = [-1.0, np.inf]
    return t


def _duplicate_pair(t):
    return pd.concat([t, t.iloc[[5]]], ignore_index=True)


def _user_without_train(t):
    first = t["user"] == 0
    return pd.concat([t[~first], t[first & (t["split"] != "train")]], ignore_index=True)


@pytest.mark.parametrize(
    "defect, fragments, n_failures",
    [
        (_null_rating, ("rating", "1 null values"), 1),
        (
            lambda t: t.assign(user_id=t["user_id"].where(t.index != 7)),
            ("user_id", "1 null values"),
            2,
        ),  # + float dtype
        (_bad_ratings, ("rating", "2 ratings negative or not finite", "-1", "inf"), 1),
        (_duplicate_pair, ("user, item", "2 rows repeat a (user, item) pair"), 1),
        (lambda t: t.drop(columns="timestamp"), ("columns: missing ['timestamp']",), 1),
        (lambda t: t.assign(extra=1), ("columns: unexpected ['extra']",), 1),
        (lambda t: t.assign(item=t["item"] * 2), ("item", "indices outside", "not contiguous"), 1),
        (lambda t: t.assign(user=t["user"].astype("float64")), ("user: dtype float64, expected an integer dtype",), 1),
        (lambda t: t.assign(split=t["split"].replace("valid", "val")), ("split", "values not in", "'val'"), 1),
        (lambda t: t.iloc[:0], ("table: 0 rows, expected at least 1",), 1),
        (_user_without_train, ("per user: 1 users without a training row", "user_id=1000 train_rows=0"), 1),
    ],
)
def test_each_interactions_defect_fails_with_a_line_that_names_it(tiny_interactions, defect, fragments, n_failures):
    report = validate_interactions(defect(tiny_interactions.table.copy()))
    failing(report, *fragments)
    assert len(report.failures) == n_failures, report.failures
    assert report.summary().startswith(f"interactions: {n_failures} of {report.evaluated} expectations failed on ")
    with pytest.raises(ValidationError) as raised:
        check(report)
    assert isinstance(raised.value, DataError) and raised.value.report is report
    assert str(raised.value) == report.summary()


def test_validation_error_survives_pickling(tiny_interactions):
    report = validate_interactions(tiny_interactions.table.drop(columns="rating"))
    error = pickle.loads(pickle.dumps(ValidationError(report)))
    assert error.report == report and str(error) == report.summary()


# -- masks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES + ["0.3"])
def test_masks_of_every_named_policy_pass(tiny_interactions, policy):
    mask = build_mask(tiny_interactions, SharingConfig(policy=policy), seed=4)
    report = validate_masks(mask, tiny_interactions.table, tolerance_items=0)
    assert report.success, report.summary()


def test_masks_from_files_pass(tiny_interactions, tmp_path):
    train = tiny_interactions.part("train")
    # item-level file: ratio is the fraction actually shared, e.g. 3 of 7 items
    items = tmp_path / "items.csv"
    train.groupby("user").head(3)[["user_id", "item_id"]].to_csv(items, index=False)
    mask = build_mask(tiny_interactions, SharingConfig(policy="file", file=str(items)), seed=0)
    assert not mask["ratio"].isin([0.0, 0.5, 1.0]).all()
    assert validate_masks(mask, tiny_interactions.table, tolerance_items=0).success
    ratios = tmp_path / "ratios.csv"
    users = tiny_interactions.user_ids
    pd.DataFrame({"user_id": users, "ratio": np.linspace(0, 1, len(users))}).to_csv(ratios, index=False)
    mask = build_mask(tiny_interactions, SharingConfig(policy="file", file=str(ratios)), seed=0)
    assert validate_masks(mask, tiny_interactions.table, tolerance_items=0).success


@pytest.fixture
def mixed_mask(tiny_interactions):
    return build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)


def test_held_out_rows_in_a_mask_fail(tiny_interactions, mixed_mask):
    table = tiny_interactions.table
    held_out = table[table["split"] != "train"].groupby("split").head(1)
    extra = held_out[["user", "item", "user_id", "item_id"]].assign(shared=False, ratio=0.0)
    report = validate_masks(pd.concat([mixed_mask, extra], ignore_index=True), table)
    failing(
        report,
        "mask rows: 2 rows that are not training interactions",
        "split='valid'",
        "split='test'",
        f"user_id={extra['user_id'].iloc[0]} item_id={extra['item_id'].iloc[0]}",
    )
    failing(report, f"{len(mixed_mask) + 2} rows, expected {len(mixed_mask)}")


def test_a_missing_training_row_fails_the_count(tiny_interactions, mixed_mask):
    report = validate_masks(mixed_mask.iloc[1:], tiny_interactions.table, tolerance_items=5)
    assert report.failures == [
        f"table: {len(mixed_mask) - 1} rows, expected {len(mixed_mask)} (one per training interaction)"
    ]


def test_a_user_sharing_against_their_ratio_fails(tiny_interactions, mixed_mask):
    user_id = mixed_mask.loc[mixed_mask["ratio"] == 0, "user_id"].iloc[0]
    mask = mixed_mask.copy()
    mine = mask["user_id"] == user_id
    mask.loc[mine, "shared"] = True
    line = failing(
        validate_masks(mask, tiny_interactions.table),
        "per user: 1 users whose shared count is more than 1 away from round(ratio x training rows)",
    )
    assert f"user_id={user_id} training_rows={mine.sum()} shared={mine.sum()} ratio=0" in line


def test_tolerance_is_in_items(tiny_interactions, mixed_mask):
    mask = mixed_mask.copy()
    row = mask.index[(mask["ratio"] == 0)][0]
    mask.loc[row, "shared"] = True  # off by exactly one item
    assert validate_masks(mask, tiny_interactions.table, tolerance_items=1).success
    failing(validate_masks(mask, tiny_interactions.table, tolerance_items=0), "more than 0 away", "off_by=1")


def test_bad_shared_and_ratio_columns_fail(tiny_interactions, mixed_mask):
    mask = mixed_mask.copy()
    mask["shared"] = mask["shared"].astype(object)
    mask.loc[0, "shared"] = None
    mask.loc[1, "ratio"] = 1.5
    report = validate_masks(mask, tiny_interactions.table, tolerance_items=100)
    failing(report, "shared: 1 null values")
    failing(report, "ratio: 1 values outside [0, 1]", "ratio=1.5")
    failing(validate_masks(mixed_mask.drop(columns="ratio"), tiny_interactions.table), "columns: missing ['ratio']")
    failing(
        validate_masks(mixed_mask.assign(shared=mixed_mask["shared"].astype(int)), tiny_interactions.table),
        "shared: dtype int64, expected bool",
    )


# -- requests --------------------------------------------------------------------------------------


def write_requests(tmp_path, rows):
    path = tmp_path / "requests.csv"
    pd.DataFrame(rows, columns=["request_id", "user_id", "item_id"]).to_csv(path, index=False)
    return read_requests(path)  # strings, empty item_id = all shared items


def test_drawn_and_file_requests_pass(tmp_path, mixed_mask):
    for scope in ("all", "partial"):
        drawn = draw_requests(mixed_mask, 0.3, scope, seed=0)
        assert validate_requests(drawn, mixed_mask).success
        from_file = write_requests(tmp_path, drawn.to_dict("records"))
        report = validate_requests(from_file, mixed_mask)
        assert report.success and report.rows == len(drawn), report.summary()
        assert resolve_requests(from_file, mixed_mask).rejected.empty


def test_each_request_defect_fails_like_resolve_requests_rejects_it(tmp_path, mixed_mask):
    shared = mixed_mask[mixed_mask["shared"]]
    sharer, item = shared["user_id"].iloc[0], shared["item_id"].iloc[0]
    not_shared = mixed_mask.loc[~mixed_mask["shared"] & (mixed_mask["user_id"] == sharer), "item_id"].iloc[0]
    silent = mixed_mask.groupby("user_id")["shared"].sum().loc[lambda s: s == 0].index[0]
    silent_item = mixed_mask.loc[mixed_mask["user_id"] == silent, "item_id"].iloc[0]
    requests = write_requests(
        tmp_path,
        [
            ("r1", sharer, item),  # fine
            ("r1", sharer, ""),  # duplicate request_id
            ("r2", 99999, ""),  # unknown user
            ("r3", sharer, not_shared),  # item not shared
            ("r4", silent, ""),  # user shares nothing
            ("r5", "abc", ""),  # not an integer
            ("r6", silent, silent_item),  # user shares nothing (reported once, not also as an unshared item)
        ],
    )
    report = validate_requests(requests, mixed_mask)
    failing(report, "request_id: 2 duplicate values", "request_id='r1'")
    failing(report, "user_id: 1 requests name an unknown user", "request_id='r2' user=99999")
    failing(report, "item_id: 1 requests name an item the user does not currently share", f"{sharer}/{not_shared}")
    failing(report, "user_id: 2 requests name a user who shares nothing", f"request_id='r4' known user={silent}")
    failing(report, "user_id: 1 values are not non-negative integers", "'abc'")
    assert len(report.failures) == 5 and report.rows == 7
    reasons = resolve_requests(requests, mixed_mask).rejected["reason"].tolist()
    assert reasons == [
        "duplicate request_id",
        "unknown user",
        "item not currently shared by this user",
        "user shares nothing",
        "user_id and item_id must be non-negative integers",
        "user shares nothing",
    ]


def test_missing_request_columns_and_ids_fail(mixed_mask):
    failing(
        validate_requests(pd.DataFrame({"request_id": ["a"], "user_id": ["1"]}), mixed_mask),
        "columns: missing ['item_id']",
    )
    sharer = str(mixed_mask.loc[mixed_mask["shared"], "user_id"].iloc[0])
    report = validate_requests(
        pd.DataFrame({"request_id": ["", "b"], "user_id": [sharer, " "], "item_id": ["", ""]}), mixed_mask
    )
    failing(report, "request_id: 1 null values")
    failing(report, "user_id: 1 null values", "request_id='b'")


# -- one process, many calls -----------------------------------------------------------------------


def test_validators_can_run_repeatedly_in_one_process(tiny_interactions, mixed_mask):
    table = tiny_interactions.table
    requests = draw_requests(mixed_mask, 0.2, "all", seed=1)
    for _ in range(2):
        assert validate_interactions(table).success
        assert validate_masks(mixed_mask, table).success
        assert validate_requests(requests, mixed_mask).success
        assert not validate_interactions(table.drop(columns="split")).success
        assert not validate_masks(mixed_mask.iloc[:-1], table).success
        assert not validate_requests(pd.concat([requests, requests]), mixed_mask).success


# -- real data -------------------------------------------------------------------------------------


def test_real_ml100k_and_its_masks_pass():
    interactions = load_interactions(DataConfig(dataset="ml-100k", data_dir=str(real_data_dir())), seed=0)
    report = check(validate_interactions(interactions.table))
    assert report.rows == 100_000
    for policy in POLICIES:
        mask = build_mask(interactions, SharingConfig(policy=policy), seed=0)
        assert check(validate_masks(mask, interactions.table)).rows == len(interactions.part("train"))
