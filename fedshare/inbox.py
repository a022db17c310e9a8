"""The served model's state folder and the unsharing inbox (what the unlearning flow runs).

    state/
      CURRENT          name of the model folder in use (replaced atomically)
      models/0003/     a run directory (train_stage or unshare_stage output)
      journal.jsonl    every request: accepted, then applied (fedshare.journal)
      events.json      one entry per unlearning event: metrics, storage, MLflow run
      .lock            held while a process changes the state
    inbox/
      *.csv            dropped request files (request_id,user_id,item_id); delete*.csv = delete requests
      processed/       handled files, each with <name>.rejections.csv and <name>.validation.json (GE)
      failed/          files that could not be parsed, each with <name>.error.txt

Order of an event, chosen so that a crash at any point loses nothing and applies nothing twice:
journal ``accepted`` (fsync) -> unlearn into ``models/.tmp-N`` -> rename to ``models/N`` ->
CURRENT -> new DVC version of the masks -> journal ``applied`` -> events.json -> move the file to
processed/ -> purge superseded copies.
On start, half-written ``.tmp-*`` folders are removed and requests that CURRENT already applied
but the journal still calls accepted are marked applied (``recover``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config, load_config
from .data import DataError
from .faults import crash_point
from .journal import APPLIED, RequestJournal
from .sharing import load_mask
from .storage import atomic_write_bytes, atomic_write_json
from .versioning import purge_mask_versions, version_masks

REQUEST_COLUMNS = ["request_id", "user_id", "item_id"]


class ModelStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.models = self.folder / "models"
        self.journal = RequestJournal(self.folder / "journal.jsonl")
        self.events_file = self.folder / "events.json"

    def current(self) -> Path | None:
        pointer = self.folder / "CURRENT"
        if not pointer.exists():
            return None
        return self.models / pointer.read_text().strip()

    def require_current(self) -> Path:
        current = self.current()
        if current is None or not current.exists():
            raise DataError(f"{self.folder} holds no model yet; run the training flow (or `fedshare train --state {self.folder}`)")
        return current

    def _next_name(self) -> str:
        numbers = [int(p.name) for p in self.models.glob("[0-9]*") if p.name.isdigit()] if self.models.exists() else []
        return f"{max(numbers, default=-1) + 1:04d}"

    def staging(self) -> Path:
        """A fresh temporary folder for the next model (renamed into place by ``commit``)."""
        path = self.models / f".tmp-{self._next_name()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def commit(self, staged: Path) -> Path:
        """Rename a staged model into place and make it CURRENT."""
        final = self.models / staged.name.removeprefix(".tmp-")
        staged.rename(final)
        atomic_write_bytes(self.folder / "CURRENT", final.name.encode())
        return final

    def adopt(self, run_dir: Path) -> Path:
        """Copy a training run in as the new CURRENT model."""
        staged = self.staging()
        shutil.copytree(run_dir, staged, dirs_exist_ok=True)
        return self.commit(staged)

    def recover(self) -> None:
        """Finish what a killed process left: drop half-written models, complete the journal."""
        if self.models.exists():
            for partial in self.models.glob(".tmp-*"):
                shutil.rmtree(partial, ignore_errors=True)
        current = self.current()
        if current is not None:
            self.purge_superseded()  # killed after the switch to CURRENT but before the purge
        applied_file = current / "applied.csv" if current else None
        if applied_file is None or not applied_file.exists():
            return
        states = self.journal.states()
        done_here = set(pd.read_csv(applied_file, dtype=str, keep_default_na=False)["request_id"])
        finish = [rid for rid, state in states.items() if state != APPLIED and rid in done_here]
        self.journal.record_applied(finish, current.name)
        if finish:  # killed before the masks were versioned
            version_masks(self.folder, current / "masks.parquet")

    def purge_superseded(self) -> list[str]:
        """Delete every model folder but CURRENT: older ones hold interactions users have unshared."""
        current = self.current()
        removed = []
        for folder in sorted(self.models.iterdir()) if self.models.exists() else []:
            if folder.is_dir() and (current is None or folder.name != current.name):
                shutil.rmtree(folder)
                removed.append(folder.name)
        return removed

    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.events_file.read_text()) if self.events_file.exists() else []

    def add_event(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        events = self.events() + [event]
        atomic_write_json(self.events_file, events)
        return events


@dataclass
class Intake:
    """One request file after checking: the rows to apply and the rows rejected with a reason."""

    path: Path
    mode: str
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def pending_files(inbox: str | Path) -> list[Path]:
    folder = Path(inbox)
    return sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.endswith(".rejections.csv")) \
        if folder.exists() else []


def intake(store: ModelStore, path: Path, validate: bool = True) -> Intake:
    """Parse and check one request file against the current masks and the journal.

    A file that cannot be parsed raises DataError; each bad row is rejected with a reason.  Rows the
    journal already holds as accepted (a crashed earlier attempt) are taken again as they are.
    """
    from .unlearning import read_requests, resolve_requests

    mode = "delete" if path.name.startswith("delete") else "unshare"
    table = read_requests(path)
    mask = load_mask(store.require_current() / "masks.parquet")
    report: dict[str, Any] = {}
    if validate:
        from .validation import validate_requests

        report = validate_requests(table, mask).to_dict()
    states = store.journal.states()
    leftover = store.journal.accepted()
    leftover_ids = set(leftover["request_id"])
    seen_before = table["request_id"].isin([rid for rid, state in states.items() if state == APPLIED])
    fresh = table[~seen_before & ~table["request_id"].isin(leftover_ids)]
    resolved = resolve_requests(pd.concat([leftover, fresh], ignore_index=True), mask)
    duplicates = table[seen_before].assign(reason="request_id already applied (duplicate or re-sent)")
    rejected = pd.concat([resolved.rejected, duplicates[resolved.rejected.columns]], ignore_index=True)
    good_ids = set(resolved.pairs["request_id"])
    batch = pd.concat([leftover, fresh], ignore_index=True)
    accepted = batch[batch["request_id"].isin(good_ids)].drop_duplicates("request_id")[REQUEST_COLUMNS]
    return Intake(path, mode, accepted.reset_index(drop=True), rejected, report)


def record(store: ModelStore, taken: Intake) -> None:
    """Journal the accepted requests (fsync) before anything changes."""
    already = store.journal.states()
    store.journal.record_accepted(taken.accepted[~taken.accepted["request_id"].isin(already)], taken.path.name, taken.mode)
    crash_point("accepted")


def apply(config: Config, store: ModelStore, taken: Intake, method: str) -> dict[str, Any]:
    """Unlearn the accepted requests from CURRENT into a new model; commit it; journal ``applied``."""
    from .pipeline import unshare_stage

    current = store.require_current()
    staged = store.staging()
    event_number = len(store.events()) + 1
    metrics = unshare_stage(current, staged, method, mode=taken.mode, requests=taken.accepted,
                            seed=config.run.seed + event_number)
    crash_point("unlearned")
    final = store.commit(staged)
    crash_point("committed")
    masks_version = version_masks(store.folder, final / "masks.parquet")
    crash_point("versioned")
    store.journal.record_applied(taken.accepted["request_id"].tolist(), final.name)
    crash_point("applied")
    event = {"event": event_number, "model": final.name, "file": taken.path.name, "method": method,
             "mode": taken.mode, "time": time.time(), "masks_version": masks_version,
             "metrics": {k: v for k, v in metrics.items() if k not in ("tracking", "retrain")},
             "tracking": metrics.get("tracking", {})}
    events = store.add_event(event)
    crash_point("event")
    if config.tracking.enabled:
        from .tracking import log_events_plot

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
    purged = {"models": store.purge_superseded(), "mask_versions": purge_mask_versions(store.folder, retention),
              "mlflow_versions": []}
    events = store.events()
    if config.tracking.enabled and events:
        from .tracking import purge_superseded_models

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
    from .journal import state_lock

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
            outcomes.append({"file": path.name, "applied": len(taken.accepted), "rejected": len(taken.rejected),
                             "event": event})
    return outcomes


def publish(config: Config, state: str | Path, run_dir: str | Path) -> bool:
    """Make a training run the served model when it beats CURRENT on the validation metric."""
    from .journal import state_lock

    store = ModelStore(state)
    metric = config.eval.metric
    new_value = json.loads((Path(run_dir) / "metrics.json").read_text())["valid"][metric]
    with state_lock(store.folder):
        current = store.current()
        if current is not None and (current / "metrics.json").exists():
            old = json.loads((current / "metrics.json").read_text())
            old_value = old.get("valid", {}).get(metric, old.get(metric))
            if old_value is not None and old_value >= new_value:
                return False
        served = store.adopt(Path(run_dir))
        version_masks(store.folder, served / "masks.parquet")
        store.purge_superseded()
    return True
