"""Data checks with Great Expectations: interactions, sharing masks and unsharing requests.

Each ``validate_*`` function builds an expectation suite for one kind of table, runs it on the
DataFrame in memory and returns a :class:`ValidationReport` (one short line per failed
expectation).  :func:`check` turns a failed report into a :class:`ValidationError`, a
:class:`~fedshare.data.DataError` that the CLI prints as one line.

Checks that span rows (a user's shared count against their ratio, a user's training rows, a
request's item against the user's shared items) are computed with pandas into a column of a
derived frame, and Great Expectations checks that column, so every verdict comes from a GE result.

Great Expectations is imported inside the functions: ``import fedshare.validation`` costs nothing,
and the core library works without it.  One ephemeral (in-memory) context serves the whole process.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedshare.data.requests import REQUEST_COLUMNS, as_id
from fedshare.errors import DataError

INTERACTION_COLUMNS = ["user", "item", "user_id", "item_id", "rating", "timestamp", "split"]


MASK_COLUMNS = ["user", "item", "user_id", "item_id", "shared", "ratio"]


SPLITS = ["train", "valid", "test"]


# GE compares pandas dtype names; "int"/"integer" do not match int32 or uint columns.
INTEGER_DTYPES = ["int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"]


MAX_EXAMPLES = 3


@dataclass
class ValidationReport:
    suite: str
    success: bool
    rows: int
    evaluated: int  # number of expectations run
    failures: list[str] = field(default_factory=list)  # one line per failed expectation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: {self.evaluated}/{self.evaluated} expectations passed on {self.rows} rows"
        return (
            f"{self.suite}: {len(self.failures)} of {self.evaluated} expectations failed on {self.rows} rows: "
            + "; ".join(self.failures)
        )


class ValidationError(DataError):
    """A table failed its expectation suite; the message is the report's summary line."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report

    def __reduce__(self):  # picklable (e.g. across a flow runner's processes)
        return (type(self), (self.report,))


def check(report: ValidationReport) -> ValidationReport:
    """Return the report if it passed, else raise :class:`ValidationError`."""
    if not report.success:
        raise ValidationError(report)
    return report


def validate_interactions(table: pd.DataFrame) -> ValidationReport:
    """An ``Interactions.table``: schema, types, nulls, contiguous indices, ratings, splits, unique
    (user, item) pairs, at least one row, and a training row for every user."""
    import great_expectations.expectations as gxe

    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=INTERACTION_COLUMNS, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *[gxe.ExpectColumnValuesToNotBeNull(column=column) for column in INTERACTION_COLUMNS],
        *[
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=INTEGER_DTYPES)
            for column in ("user", "item", "user_id", "item_id", "timestamp")
        ],
        *[_contiguous(gxe, table, column) for column in ("user", "item")],
        gxe.ExpectColumnValuesToBeBetween(
            column="rating",
            min_value=0,
            max_value=float(np.finfo(np.float64).max),
            meta={"problem": "ratings negative or not finite"},
        ),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["user", "item"], meta={"problem": "rows repeat a (user, item) pair"}
        ),
    ]
    results = _run("interactions", table, expectations)
    if {"user_id", "split"} <= set(table.columns):
        per_user = table["split"].eq("train").groupby(table["user_id"]).sum().rename("train_rows").to_frame()
        results += _run(
            "interactions per user",
            per_user,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="train_rows",
                    min_value=1,
                    meta={"subject": "per user", "problem": "users without a training row"},
                ),
            ],
        )
    return _report("interactions", len(table), results)


def validate_masks(mask: pd.DataFrame, interactions_table: pd.DataFrame, tolerance_items: int = 1) -> ValidationReport:
    """A sharing mask against its interactions: exactly the training rows, a boolean ``shared``,
    ``ratio`` in [0, 1], and per user |shared count - round(ratio * training rows)| <= tolerance.

    ``ratio`` is the user's rho for the named policies and a per-user ratio file; for an item-level
    file it is the fraction the user actually shares, so the per-user check holds for every policy.
    """
    import great_expectations.expectations as gxe

    table = interactions_table
    n_train = int(table["split"].eq("train").sum()) if "split" in table else 0
    frame = mask.copy()
    if {"user", "item"} <= set(frame.columns) and {"user", "item", "split"} <= set(table.columns):
        splits = table[["user", "item", "split"]].drop_duplicates(["user", "item"])
        merged = frame[["user", "item"]].merge(splits, on=["user", "item"], how="left")
        frame["split"] = merged["split"].fillna("absent").to_numpy()
    if {"user_id", "item_id"} <= set(frame.columns):
        frame = frame.set_index(["user_id", "item_id"], drop=False)  # failure examples name the pair
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=MASK_COLUMNS, exact_match=False),
        gxe.ExpectTableRowCountToEqual(value=n_train, meta={"note": "one per training interaction"}),
        gxe.ExpectColumnValuesToBeInSet(
            column="split",
            value_set=["train"],
            meta={"subject": "mask rows", "problem": "rows that are not training interactions"},
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["user", "item"], meta={"problem": "rows repeat a (user, item) pair"}
        ),
        *[gxe.ExpectColumnValuesToNotBeNull(column=column) for column in MASK_COLUMNS],
        gxe.ExpectColumnValuesToBeOfType(column="shared", type_="bool"),
        gxe.ExpectColumnValuesToBeBetween(column="ratio", min_value=0, max_value=1),
    ]
    results = _run("masks", frame, expectations)
    if {"user_id", "shared", "ratio"} <= set(mask.columns):
        users = mask["user_id"]
        shared = mask["shared"].map({True: 1, False: 0})  # anything else counts as not shared
        ratio = pd.to_numeric(mask["ratio"], errors="coerce")
        n_user = users.groupby(users).transform("size")
        target = np.floor(ratio * n_user + 0.5)  # rounded as sharing.py rounds
        off_by = (shared.groupby(users).transform("sum") - target).abs()
        per_user = pd.DataFrame({"training_rows": n_user, "shared": shared, "ratio": ratio, "off_by": off_by})
        per_user = per_user.groupby(users).agg(
            training_rows=("training_rows", "first"),
            shared=("shared", "sum"),
            ratio=("ratio", "first"),
            off_by=("off_by", "max"),
        )
        per_user = per_user.set_index(["training_rows", "shared", "ratio"], append=True)  # shown in examples
        results += _run(
            "masks per user",
            per_user,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="off_by",
                    min_value=0,
                    max_value=tolerance_items,
                    meta={
                        "subject": "per user",
                        "problem": f"users whose shared count is more than {tolerance_items} away from "
                        f"round(ratio x training rows)",
                    },
                ),
            ],
        )
    return _report("masks", len(mask), results)


def validate_requests(requests: pd.DataFrame, mask: pd.DataFrame, mode: str = "unshare") -> ValidationReport:
    """A request file against the current mask, for information: which requests
    ``resolve_requests`` would reject, and why (it still decides row by row).  A ``share`` file
    asks for items the user keeps private now; the others for items the user shares now."""
    import great_expectations.expectations as gxe

    def cells(name: str) -> list:
        return [_text(value) for value in requests[name].tolist()] if name in requests else [None] * len(requests)

    request_id, user_id, item_id = cells("request_id"), cells("user_id"), cells("item_id")
    sharing_more = mode == "share"
    shared = mask[mask["shared"].eq(not sharing_more)]  # the pairs this mode can act on
    known_users = set(mask["user_id"].tolist())
    sharing_users = set(shared["user_id"].tolist())
    shared_pairs = {f"{u}/{i}" for u, i in zip(shared["user_id"].tolist(), shared["item_id"].tolist())}
    # Derived columns, each None where an earlier check already failed, so a request fails once.
    user = [as_id(text) for text in user_id]
    known_user = [u if u in known_users else None for u in user]
    pair = [f"{u}/{i}" if u in sharing_users and i is not None else None for u, i in zip(user, map(as_id, item_id))]
    raw = {"request_id": request_id, "user_id": user_id, "item_id": item_id}
    frame = pd.DataFrame(
        {
            **{name: values for name, values in raw.items() if name in requests},
            "user": user,
            "known user": known_user,
            "user/item": pair,
        },
        index=pd.Index(request_id, name="request_id", dtype=object),  # examples name the request
        dtype=object,
    )
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=REQUEST_COLUMNS, exact_match=False),
        gxe.ExpectColumnValuesToNotBeNull(column="request_id"),
        gxe.ExpectColumnValuesToBeUnique(column="request_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="user_id", regex=r"^\d+$", meta={"problem": "values are not non-negative integers"}
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="item_id", regex=r"^\d+$", meta={"problem": "values are neither empty nor non-negative integers"}
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="user",
            value_set=sorted(known_users),
            meta={"subject": "user_id", "problem": "requests name an unknown user"},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="known user",
            value_set=sorted(sharing_users),
            meta={
                "subject": "user_id",
                "problem": "requests name a user who shares everything already"
                if sharing_more
                else "requests name a user who shares nothing",
            },
        ),
        # Only the pairs this file asks for go into the value set (a full shared set can be ~10^6 pairs).
        gxe.ExpectColumnValuesToBeInSet(
            column="user/item",
            value_set=sorted(set(pair) & shared_pairs),
            meta={
                "subject": "item_id",
                "problem": "requests name an item that is not a private training item of the user"
                if sharing_more
                else "requests name an item the user does not currently share",
            },
        ),
    ]
    return _report("requests", len(requests), _run("requests", frame, expectations))


def _contiguous(gxe, table: pd.DataFrame, column: str):
    """Indices in [0, n) with n distinct values are exactly 0..n-1."""
    n = int(table[column].nunique()) if column in table else 0
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=0,
        max_value=max(n - 1, 0),
        meta={"problem": f"indices outside [0, {max(n - 1, 0)}] (with {n} distinct values they are not contiguous)"},
    )


def _text(value: Any) -> str | None:
    """A request cell as stripped text; empty and missing cells are None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value).strip() or None


_LOCK = threading.Lock()


_BATCH_DEFINITION = None  # whole-DataFrame batch definition of the process's ephemeral context


def _batch_definition():
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")  # never a FileDataContext from a gx/ folder in the cwd
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _BATCH_DEFINITION = (
            context.data_sources.add_pandas("fedshare")
            .add_dataframe_asset(name="frame")
            .add_batch_definition_whole_dataframe("whole")
        )
    return _BATCH_DEFINITION


def _run(name: str, frame: pd.DataFrame, expectations: list) -> list:
    """Validate ``frame`` against a suite of ``expectations``; the results come back in their order.

    Expectations on a column the frame lacks are left out (the suite's column-set expectation
    reports the missing column once).  The suite is not registered with the context, so repeated
    calls with the same name are fine.
    """
    import great_expectations as gx

    present = set(frame.columns)
    kept = []
    for position, expectation in enumerate(expectations):
        if expectation.expectation_type != "expect_column_to_exist" and not _columns(expectation) <= present:
            continue
        expectation.meta = {**(expectation.meta or {}), "position": position}
        kept.append(expectation)
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx.ExpectationSuite(name=name, expectations=kept), result_format="SUMMARY")
    return sorted(result.results, key=lambda r: r.expectation_config.meta["position"])


def _columns(expectation) -> set[str]:
    column = getattr(expectation, "column", None)
    return {column} if column else set(getattr(expectation, "column_list", None) or [])


def _report(suite: str, rows: int, results: list) -> ValidationReport:
    failures = [_failure_line(result) for result in results if not result.success]
    return ValidationReport(
        suite=suite, success=not failures, rows=int(rows), evaluated=len(results), failures=failures
    )


def _failure_line(result) -> str:
    """One readable line from a failed GE result."""
    config = result.expectation_config
    kind, kwargs, meta, details = config.type, config.kwargs, config.meta or {}, result.result or {}
    subject = meta.get("subject") or kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or "table"
    error = _exception_message(result.exception_info)
    if error:
        return f"{subject}: could not be checked ({error})"
    if kind == "expect_column_to_exist":
        return f"columns: missing [{kwargs.get('column')!r}]"
    if kind == "expect_table_columns_to_match_set":
        mismatched = (details.get("details") or {}).get("mismatched") or {}
        parts = [f"missing {sorted(mismatched['missing'])}"] if mismatched.get("missing") else []
        if kwargs.get("exact_match", True) and mismatched.get("unexpected"):  # GE drops exact_match=True from kwargs
            parts.append(f"unexpected {sorted(mismatched['unexpected'])}")
        return "columns: " + ", ".join(parts or [f"observed {details.get('observed_value')}"])
    if kind == "expect_table_row_count_to_equal":
        note = f" ({meta['note']})" if "note" in meta else ""
        return f"table: {details.get('observed_value')} rows, expected {kwargs.get('value')}{note}"
    if kind == "expect_table_row_count_to_be_between":
        return f"table: {details.get('observed_value')} rows, expected at least {kwargs.get('min_value')}"
    if kind in ("expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"):
        type_list = kwargs.get("type_list")
        expected = kwargs.get("type_") or ("an integer dtype" if list(type_list or []) == INTEGER_DTYPES else type_list)
        return f"{subject}: dtype {details.get('observed_value')}, expected {expected}"
    problem = meta.get("problem") or _default_problem(kind, kwargs)
    line = f"{subject}: {details.get('unexpected_count')} {problem}"
    examples = _examples(details, kwargs.get("column"))
    return f"{line}, e.g. [{', '.join(examples)}]" if examples else line


def _default_problem(kind: str, kwargs: dict) -> str:
    if kind == "expect_column_values_to_not_be_null":
        return "null values"
    if kind == "expect_column_values_to_be_between":
        return f"values outside [{_number(kwargs.get('min_value'))}, {_number(kwargs.get('max_value'))}]"
    if kind == "expect_column_values_to_be_in_set":
        return f"values not in {kwargs.get('value_set')}"
    if kind == "expect_column_values_to_be_unique":
        return "duplicate values"
    if kind == "expect_compound_columns_to_be_unique":
        return "rows with a duplicate combination"
    if kind == "expect_column_values_to_match_regex":
        return f"values not matching {kwargs.get('regex')}"
    return f"unexpected values ({kind})"


def _examples(details: dict, column: str | None) -> list[str]:
    """A few failing values; with a named index, the rows' keys first (user_id=3 item_id=7 split='valid')."""
    by_index = [entry for entry in details.get("partial_unexpected_index_list") or [] if isinstance(entry, dict)]
    if by_index:
        return [
            " ".join(f"{k}={_show(v)}" for k, v in sorted(entry.items(), key=lambda kv: kv[0] == column))
            for entry in by_index[:MAX_EXAMPLES]
        ]
    return [_show(value) for value in (details.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]


def _exception_message(info: dict | None) -> str | None:
    """GE reports exceptions flat or keyed by metric; return the first message, if any."""
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else _number(value)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)
