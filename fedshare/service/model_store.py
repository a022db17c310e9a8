"""The state folder of the served model: CURRENT, the model folders, promotion and retention."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedshare.config import Config
from fedshare.errors import DataError
from fedshare.mlops.versioning import CONSENT, version_masks
from fedshare.service.journal import APPLIED, RequestJournal, state_lock
from fedshare.storage import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from fedshare.data.consent import Consent


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

    def consent(self) -> Consent:
        """Every user's current choice (the served masks) and the applied requests that made it."""
        from fedshare.data.consent import Consent
        from fedshare.data.sharing import load_mask

        current = self.current()
        applied = self.journal.applied_requests()
        if current is None or not (current / "masks.parquet").exists():
            return Consent(None, applied)
        held = pd.read_parquet(current / "interactions.parquet", columns=["user_id", "item_id"])
        return Consent(load_mask(current / "masks.parquet"), applied, held)

    def version_served(self, served: Path, applying: pd.DataFrame | None = None) -> dict[str, Any] | None:
        """Write the consent store of the model ``served`` (``consent.parquet``: every user's current
        choice and the request that last changed it) and version it with DVC beside its masks.

        ``applying``: journal rows (``RequestJournal.changes`` columns) of requests this model applies
        but the journal does not call applied yet (an event versions before it journals ``applied``).
        """
        from fedshare.data.consent import consent_table
        from fedshare.data.sharing import load_mask

        changes = self.journal.changes()
        if applying is not None and not applying.empty:
            changes = pd.concat([changes, applying[changes.columns]], ignore_index=True)
        table = consent_table(load_mask(served / "masks.parquet"), changes, served.name)
        atomic_write_bytes(self.folder / CONSENT, table.to_parquet(index=False))
        return version_masks(self.folder, served / "masks.parquet")

    def require_current(self) -> Path:
        current = self.current()
        if current is None or not current.exists():
            raise DataError(
                f"{self.folder} holds no model yet; run the training flow (or `fedshare train --state {self.folder}`)"
            )
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
            restore_champion(current)  # killed between the journal's `applied` and moving `champion`
        applied_file = current / "applied.csv" if current else None
        if applied_file is None or not applied_file.exists():
            return
        states = self.journal.states()
        done_here = set(pd.read_csv(applied_file, dtype=str, keep_default_na=False)["request_id"])
        finish = [rid for rid, state in states.items() if state != APPLIED and rid in done_here]
        self.journal.record_applied(finish, current.name)
        if finish:  # killed before the masks were versioned
            self.version_served(current)

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


def publish(config: Config, state: str | Path, run_dir: str | Path) -> bool:
    """Make a training run the served model when it beats CURRENT on the same validation measure.

    Both models are scored now by the same code on the candidate's validation split and user subset
    (``config.eval``): a number stored by another run, such as an unlearned model's test metric, is
    not the same measure.  A candidate that shares a pair its user did not consent to (withdrawn by
    a request, or private in the served masks) is refused (``DataError``), whatever its score.
    """
    store = ModelStore(state)
    with state_lock(store.folder):
        refuse_sharing_beyond_consent(store, Path(run_dir))
        current = store.current()
        if current is not None and current.exists():
            candidate_score, served_score = validation_scores(config, Path(run_dir), current)
            if served_score >= candidate_score:
                return False
        served = store.adopt(Path(run_dir))
        store.version_served(served)
        store.purge_superseded()
        mark_champion(served)
    return True


def mark_champion(model_dir: Path) -> dict[str, Any]:
    """Point MLflow's ``champion`` alias at the registered version of the model a state folder now
    serves (its ``tracking.json``), so that ``champion`` and ``CURRENT`` name the same model.
    Returns the model's tracking record ({} when it was not tracked)."""
    tracking_file = model_dir / "tracking.json"
    if not tracking_file.exists():
        return {}
    tracked = json.loads(tracking_file.read_text())
    if not tracked.get("model_version"):
        return tracked
    from fedshare.config import load_config
    from fedshare.mlops.tracking import mark_served

    # The registered model's name comes from the config the model was logged with.
    mark_served(load_config(model_dir / "config.yaml"), tracked["model_version"], tracked.get("run_id"), model_dir)
    tracked = {**tracked, "champion": True}
    atomic_write_json(tracking_file, tracked)
    return tracked


def restore_champion(model_dir: Path) -> None:
    """Move ``champion`` to the served model if a killed process left it on the one before: the
    served model's tracking record says ``champion`` only once the alias has moved.  A tracking
    server that is away is no reason to stop recovering; the next run tries again."""
    tracking_file = model_dir / "tracking.json"
    if not model_dir.exists() or not tracking_file.exists():
        return
    tracked = json.loads(tracking_file.read_text())
    if tracked.get("model_version") and not tracked.get("champion"):
        try:
            mark_champion(model_dir)
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"could not move MLflow's champion alias to {model_dir.name} ({error}); will retry")


def refuse_sharing_beyond_consent(store: ModelStore, run_dir: Path) -> None:
    """Raise if the run's masks share a pair that the state folder's consent leaves private: one
    its user unshared or deleted (and did not share again since), or one private in the served masks
    (a retraining under another policy must not share what a user never chose to)."""
    from fedshare.data.consent import consent_masks
    from fedshare.data.sharing import load_mask

    consent = store.consent()
    if consent.served is None and consent.applied.empty:
        return
    candidate = load_mask(run_dir / "masks.parquet")
    allowed, _ = consent_masks(candidate, consent)
    shared = candidate.loc[candidate["shared"], ["user", "item", "user_id"]]
    still = shared.merge(allowed.loc[allowed["shared"], ["user", "item"]], how="left", indicator=True)
    again = still[still["_merge"] == "left_only"]
    if not again.empty:
        users = sorted(set(again["user_id"].astype(str)))
        raise DataError(
            f"{run_dir} shares {len(again)} pairs that users of {store.folder} withdrew or never shared "
            f"(users {', '.join(users[:5])}); train it with --state {store.folder} so their consent is kept"
        )


def validation_scores(config: Config, candidate: Path, served: Path) -> tuple[float, float]:
    """``config.eval.metric`` on validation for the candidate and the served model, computed alike."""
    from fedshare.evaluation import evaluate, validation_users
    from fedshare.rundir import load_run

    _, interactions, _, candidate_model = load_run(candidate)
    _, served_interactions, _, served_model = load_run(served)
    same_indices = np.array_equal(interactions.user_ids, served_interactions.user_ids) and np.array_equal(
        interactions.item_ids, served_interactions.item_ids
    )
    if not same_indices:
        raise DataError(f"{served} serves a model of other users or items than {candidate}: they cannot be compared")
    users = validation_users(interactions, config.eval.valid_users, config.run.seed)
    metric = config.eval.metric
    return (
        evaluate(candidate_model, interactions, "valid", users=users)[metric],
        evaluate(served_model, interactions, "valid", users=users)[metric],
    )
