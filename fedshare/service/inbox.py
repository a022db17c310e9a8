"""The served model's state folder and the unsharing inbox (what the unlearning flow runs).

    state/
      CURRENT          name of the model folder in use (replaced atomically)
      models/0003/     a run directory (train_stage or unshare_stage output)
      journal.jsonl    every request: accepted, then applied (fedshare.journal)
      events.json      one entry per unlearning event: metrics, storage, MLflow run
      masks.parquet    the served masks, DVC-versioned (mask_versions.json lists the versions)
      consent.parquet  the consent store: each user's current choice and last request (data.consent)
      .lock            held while a process changes the state
    inbox/
      *.csv            dropped request files (request_id,user_id,item_id); delete*.csv = delete requests,
                       share*.csv = share requests (the slider moved up), any other name unshares
      processed/       handled files, each with <name>.rejections.csv and <name>.validation.json (GE)
      failed/          files that could not be parsed, each with <name>.error.txt

Order of an event, chosen so that a crash at any point loses nothing and applies nothing twice:
journal ``accepted`` (fsync) -> unlearn into ``models/.tmp-N`` -> rename to ``models/N`` ->
CURRENT -> consent store + new DVC version of it and the masks -> journal ``applied`` -> events.json -> move the file to
processed/ -> purge superseded copies.
On start, half-written ``.tmp-*`` folders are removed and requests that CURRENT already applied
but the journal still calls accepted are marked applied (``recover``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedshare.config import Config, load_config
from fedshare.data.requests import REQUEST_COLUMNS, mode_of_file, read_requests, resolve_requests
from fedshare.data.sharing import load_mask
from fedshare.errors import DataError
from fedshare.mlops.tracking import log_events_plot, purge_superseded_models
from fedshare.mlops.validation import validate_requests
from fedshare.mlops.versioning import purge_mask_versions
from fedshare.service.faults import crash_point
from fedshare.service.journal import APPLIED, changes_being_applied, state_lock
from fedshare.service.model_store import ModelStore, mark_champion
from fedshare.service.pending import pending_files
from fedshare.stages import share_more_stage, unshare_stage
from fedshare.storage import atomic_write_json


@dataclass
class Intake:
    """One request file after checking: the rows to apply and the rows rejected with a reason."""

    path: Path
    mode: str
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


class UnparsedFiles(DataError):
    """Some request files could not be parsed (quarantined in failed/); the others were processed.
    Raised at the end of a run, so that a scheduler sees a failed run it can alert on."""

    def __init__(self, outcomes: list[dict[str, Any]]):
        self.outcomes = outcomes
        failed = [o["file"] for o in outcomes if "error" in o]
        super().__init__(
            f"{len(failed)} request file(s) could not be parsed and were moved to failed/ with the reason: "
            + ", ".join(failed)
        )


def check_outcomes(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outcomes, or UnparsedFiles when a file failed (after every other file was handled)."""
    if any("error" in outcome for outcome in outcomes):
        raise UnparsedFiles(outcomes)
    return outcomes


def outcome_rows(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per file, for a report table (a Prefect artifact)."""
    return [
        {
            "file": o["file"],
            "outcome": "failed: " + o["error"] if "error" in o else "processed",
            "applied": o.get("applied", 0),
            "rejected": o.get("rejected", 0),
            "model": (o.get("event") or {}).get("model", ""),
        }
        for o in outcomes
    ]


def intake(store: ModelStore, path: Path, validate: bool = True) -> Intake:
    """Parse and check one request file against the current masks and the journal.

    A file that cannot be parsed raises DataError; each bad row is rejected with a reason.  Rows the
    journal already holds as accepted (a crashed earlier attempt) are taken again as they are.
    """

    mode = mode_of_file(path)
    table = read_requests(path)
    mask = load_mask(store.require_current() / "masks.parquet")
    report: dict[str, Any] = {}
    if validate:
        report = validate_requests(table, mask, mode).to_dict()
    states = store.journal.states()
    leftover = store.journal.accepted()
    leftover_ids = set(leftover["request_id"])  # of any mode: none is taken from this file again
    leftover = leftover.loc[leftover["mode"] == mode, REQUEST_COLUMNS]  # the others wait for their own file
    seen_before = table["request_id"].isin([rid for rid, state in states.items() if state == APPLIED])
    fresh = table[~seen_before & ~table["request_id"].isin(leftover_ids)]
    resolved = resolve_requests(pd.concat([leftover, fresh], ignore_index=True), mask, mode)
    duplicates = table[seen_before].assign(reason="request_id already applied (duplicate or re-sent)")
    rejected = pd.concat([resolved.rejected, duplicates[resolved.rejected.columns]], ignore_index=True)
    good_ids = set(resolved.pairs["request_id"])
    batch = pd.concat([leftover, fresh], ignore_index=True)
    accepted = batch[batch["request_id"].isin(good_ids)].drop_duplicates("request_id")[REQUEST_COLUMNS]
    return Intake(path, mode, accepted.reset_index(drop=True), rejected, report)


def record(store: ModelStore, taken: Intake) -> None:
    """Journal the accepted requests (fsync) before anything changes."""
    already = store.journal.states()
    store.journal.record_accepted(
        taken.accepted[~taken.accepted["request_id"].isin(already)], taken.path.name, taken.mode
    )
    crash_point("accepted")


def apply(config: Config, store: ModelStore, taken: Intake, method: str) -> dict[str, Any]:
    """Unlearn the accepted requests from CURRENT into a new model; commit it; journal ``applied``."""

    current = store.require_current()
    staged = store.staging()
    event_number = len(store.events()) + 1
    seed = config.run.seed + event_number
    if taken.mode == "share":  # the slider moved up: new edges, training continued from the served model
        method = "continue"
        metrics = share_more_stage(current, staged, taken.accepted, seed=seed)
    else:
        metrics = unshare_stage(current, staged, method, mode=taken.mode, requests=taken.accepted, seed=seed)
    crash_point("unlearned")
    final = store.commit(staged)
    crash_point("committed")
    masks_version = store.version_served(final, applying=changes_being_applied(taken.accepted, taken.mode, final.name))
    crash_point("versioned")
    store.journal.record_applied(taken.accepted["request_id"].tolist(), final.name)
    crash_point("applied")
    tracked = mark_champion(final)  # the event is applied and measured: champion = the served model
    event = {
        "event": event_number,
        "model": final.name,
        "file": taken.path.name,
        "method": method,
        "mode": taken.mode,
        "time": time.time(),
        "masks_version": masks_version,
        "metrics": {k: v for k, v in metrics.items() if k not in ("tracking", "retrain")},
        "tracking": tracked,
    }
    events = store.add_event(event)
    crash_point("event")
    if config.tracking.enabled:
        log_events_plot(config, events)
    return event


def finish(config: Config, store: ModelStore, taken: Intake) -> dict[str, list[str]]:
    """Move the file to processed/ next to its rejections, then purge what retention allows."""
    processed = taken.path.parent / "processed"
    processed.mkdir(exist_ok=True)
    taken.rejected.to_csv(processed / f"{taken.path.stem}.rejections.csv", index=False)
    if taken.report:  # the Great Expectations report on the file as a whole
        atomic_write_json(processed / f"{taken.path.stem}.validation.json", taken.report)
    taken.path.replace(processed / taken.path.name)
    crash_point("moved")
    return purge(config, store.folder)


def purge(config: Config, state: str | Path) -> dict[str, list[str]]:
    """Remove superseded copies that still hold withdrawn interactions or their influence:
    old model folders (at once: the state keeps only CURRENT), DVC mask versions and MLflow
    model versions from before the last unlearning event, once older than requests.retention_days."""
    store = ModelStore(state)
    retention = config.requests.retention_days * 86400
    purged = {
        "models": store.purge_superseded(),
        "mask_versions": purge_mask_versions(store.folder, retention),
        "mlflow_versions": [],
    }
    events = store.events()
    if config.tracking.enabled and events:
        # The registered model is named by the config the served model was trained with (what
        # unshare_stage registered under), not by this caller's config, which may lack its overrides.
        current = store.current()
        served = load_config(current / "config.yaml") if current and (current / "config.yaml").exists() else config
        purged["mlflow_versions"] = purge_superseded_models(served, events[-1]["time"], retention)
    return purged


def quarantine(path: Path, error: Exception) -> Path:
    """A file that cannot be parsed: move it to failed/ with the reason."""
    failed = path.parent / "failed"
    failed.mkdir(exist_ok=True)
    (failed / f"{path.stem}.error.txt").write_text(f"{error}\n")
    target = failed / path.name
    path.replace(target)
    return target


def process_inbox(config: Config, state: str | Path, inbox: str | Path, method: str) -> list[dict[str, Any]]:
    """Handle every pending request file, one unlearning event per file (the CLI's and cron's entry)."""

    store = ModelStore(state)
    outcomes = []
    with state_lock(store.folder):
        store.recover()
        for path in pending_files(inbox):
            try:
                taken = intake(store, path)
            except DataError as err:
                quarantine(path, err)
                outcomes.append({"file": path.name, "error": str(err)})
                continue
            record(store, taken)
            event = apply(config, store, taken, method) if not taken.accepted.empty else None
            finish(config, store, taken)
            outcomes.append(
                {"file": path.name, "applied": len(taken.accepted), "rejected": len(taken.rejected), "event": event}
            )
    return outcomes
