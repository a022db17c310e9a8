"""Stages: each is one function that the CLI, a DVC stage and a Prefect task all call."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fedshare.config import Config, save_config
from fedshare.data.consent import Consent, masks_under_consent
from fedshare.data.interactions import Interactions, load_interactions
from fedshare.data.requests import (
    Requests,
    apply_delete,
    apply_to_mask,
    draw_requests,
    read_requests,
    resolve_requests,
)
from fedshare.data.sharing import build_mask, load_mask, save_mask, sharing_users
from fedshare.errors import ConfigError, DataError
from fedshare.evaluation import embedding_distance, evaluate, unlearning_metrics
from fedshare.federated.round import run_round
from fedshare.federated.simulation import Model, pick_device
from fedshare.mlops.tracking import LiveCurve, log_training, log_unlearning
from fedshare.mlops.validation import check, validate_interactions, validate_masks
from fedshare.rundir import final_metrics, load_run, save_model
from fedshare.storage import atomic_write_json
from fedshare.training import TrainResult, train
from fedshare.unlearning.common import UnlearningJob, replace_graph
from fedshare.unlearning.fru import UpdateLog
from fedshare.unlearning.registry import METHODS, unlearn
from fedshare.unlearning.snapshots import SnapshotStore


def prepare_stage(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Load the raw data, map IDs, split per user; writes interactions.parquet and prepare.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = load_interactions(config.data, config.run.seed)
    interactions.save(out)
    counts = interactions.table["split"].value_counts()
    summary = {
        "dataset": config.data.dataset,
        "seed": config.run.seed,
        "n_users": interactions.n_users,
        "n_items": interactions.n_items,
        **{f"n_{split}": int(counts.get(split, 0)) for split in ("train", "valid", "test")},
    }
    atomic_write_json(out / "prepare.json", summary)
    return summary


def validate_stage(prepared_dir: str | Path, report_path: str | Path | None = None) -> dict[str, Any]:
    """Great Expectations suite on the prepared interactions; raises ValidationError when it fails."""

    report = validate_interactions(Interactions.load(Path(prepared_dir)).table)
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(report_path), report.to_dict())
    check(report)
    return report.to_dict()


def share_stage(
    config: Config, prepared_dir: str | Path, out_dir: str | Path, consent: Consent | None = None
) -> dict[str, Any]:
    """Draw the sharing masks, keep a state folder's consent (``fedshare/data/consent.py``), validate,
    write masks.parquet."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = Interactions.load(Path(prepared_dir))
    mask = build_mask(interactions, config.sharing, config.run.seed)
    if consent is not None:
        _, mask = masks_under_consent(interactions, mask, consent)
    else:
        check(validate_masks(mask, interactions.table))  # users' own choices may differ from the policy on purpose
    save_mask(mask, out / "masks.parquet")
    summary = {
        "policy": config.sharing.policy,
        "n_train": len(mask),
        "n_shared": int(mask["shared"].sum()),
        "sharing_users": int(sharing_users(mask, interactions.n_users).sum()),
        "mean_sharing_ratio": float(mask.groupby("user")["ratio"].first().mean()),
        "consent_of_served_users": consent is not None and consent.served is not None,
        "replayed_requests": 0 if consent is None else len(consent.applied),
    }
    atomic_write_json(out / "sharing.json", summary)
    return summary


def without_deleted_pairs(interactions: Interactions, mask: pd.DataFrame) -> Interactions:
    """The masks hold one row per training pair that still exists: a training pair they lack was
    deleted (``masks_under_consent`` in the share stage), so it leaves the device's data too."""
    train = interactions.part("train")[["user", "item"]]
    if len(train) == len(mask):  # the common case: nothing was deleted, no merge needed
        return interactions
    present = train.merge(mask[["user", "item"]], how="left", indicator=True)
    missing = present[present["_merge"] == "left_only"][["user", "item"]]
    return interactions if missing.empty else apply_delete(interactions, mask, missing)[0]


def train_stage(
    config: Config,
    out_dir: str | Path,
    progress: bool = True,
    prepared_dir: str | Path | None = None,
    masks_path: str | Path | None = None,
    track: bool | None = None,
    consent: Consent | None = None,
    live_curve: bool | None = None,
) -> dict[str, Any]:
    """Train, evaluate on test and write the run directory; returns the metrics.

    With ``prepared_dir``/``masks_path`` (the DVC and Prefect stages) it starts from their outputs,
    otherwise it loads, splits and masks the data itself (one-shot ``fedshare train``).
    ``consent``: a state folder's consent, which the masks keep (``fedshare/data/consent.py``).
    ``track``: log to MLflow and register at the end (default ``tracking.enabled``); ``live_curve``:
    open the MLflow run before the first round and send the validation curve as it is measured
    (default: as ``track``; the flow sends the curve live and logs the model in its own retried task).
    """
    pick_device(config.run.device)  # a device that is not there fails here, before anything is written or tracked
    track = config.tracking.enabled if track is None else track
    live_curve = track if live_curve is None else live_curve
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = (
        Interactions.load(Path(prepared_dir)) if prepared_dir else load_interactions(config.data, config.run.seed)
    )
    mask = load_mask(Path(masks_path)) if masks_path else build_mask(interactions, config.sharing, config.run.seed)
    interactions, mask = masks_under_consent(interactions, mask, consent)
    interactions = without_deleted_pairs(interactions, mask)
    save_config(config, out / "config.yaml")
    interactions.save(out)
    save_mask(mask, out / "masks.parquet")

    snapshots = SnapshotStore(out / "snapshots")
    wanted = set(config.unlearning.snapshot_rounds)

    def keep_snapshot(round_number: int, model) -> None:
        if round_number in wanted and config.run.method != "central":
            snapshots.save(round_number, model.server.state())

    update_log = None
    if config.unlearning.fru_alpha > 0 and config.run.method == "fedshare":  # the FRU baseline's log (large)
        update_log = UpdateLog(out / "fru_log", alpha=config.unlearning.fru_alpha)
    curve = LiveCurve(config, out) if live_curve else None
    try:
        result = train(
            config, interactions, mask, progress, on_round=keep_snapshot, update_log=update_log, on_validation=curve
        )
    except BaseException:
        if curve is not None:
            curve.failed()
        raise
    metrics = final_metrics(result, interactions, mask)
    metrics["snapshot_bytes"] = snapshots.bytes_on_disk() if snapshots.folder.exists() else 0
    metrics["fru_log_bytes"] = update_log.bytes_on_disk() if update_log is not None else 0
    save_model(result, out)
    atomic_write_json(out / "history.json", result.history)
    atomic_write_json(out / "metrics.json", metrics)
    if track:
        metrics["tracking"] = track_training(config, out, result.model, metrics, result.history, interactions, mask)
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


def track_stage(run_dir: str | Path) -> dict[str, Any]:
    """Log a finished run directory to MLflow and register its model (the flow's separate step)."""
    run = Path(run_dir)
    config, interactions, mask, model = load_run(run)
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    metrics["tracking"] = track_training(config, run, model, metrics, history, interactions, mask)
    atomic_write_json(run / "metrics.json", metrics)
    return metrics["tracking"]


def track_training(
    config: Config,
    run_dir: Path,
    model: Model,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    interactions: Interactions,
    mask,
) -> dict[str, Any]:

    _, item_vectors = model.scoring_vectors()
    tracked = log_training(
        config, run_dir, metrics, history, item_vectors, interactions.item_ids, interactions.table, mask
    ).to_dict()
    atomic_write_json(run_dir / "tracking.json", tracked)
    return tracked


def make_requests_stage(run_dir: str | Path, fraction: float, scope: str, seed: int, out: str | Path) -> pd.DataFrame:
    """Draw a random unsharing request file among the run's sharing users."""

    if not 0 < fraction <= 1:
        raise ConfigError("--fraction must be in (0, 1]")
    if scope not in ("all", "partial"):
        raise ConfigError("--scope must be all or partial")
    mask = load_mask(Path(run_dir) / "masks.parquet")
    if not mask["shared"].any():
        raise DataError(f"{run_dir}: nobody shares anything, so there is nothing to unshare")
    requests = draw_requests(mask, fraction, scope, seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    requests.to_csv(out, index=False)
    return requests


def unshare_stage(
    run_dir: str | Path,
    out_dir: str | Path,
    method: str,
    requests_file: str | Path | None = None,
    fraction: float | None = None,
    scope: str = "all",
    mode: str = "unshare",
    compare_retrain: bool = False,
    seed: int | None = None,
    requests: pd.DataFrame | None = None,
    track: bool | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Apply unshare (or delete) requests to a trained run, unlearn, measure, write a new run directory.

    The requests come from a CSV file, a table (the unlearning flow), or are drawn (``fraction``).
    """
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}")
    if mode not in ("unshare", "delete"):
        raise ConfigError("--mode must be unshare or delete")
    config, interactions, mask, model = load_run(run_dir, overrides)
    if config.run.method != "fedshare":
        raise ConfigError(f"{run_dir} was trained with --method {config.run.method}; unsharing needs a fedshare run")
    seed = config.run.seed if seed is None else seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if requests is None:
        requests = request_table(mask, requests_file, fraction, scope, seed)
    accepted, new_mask, new_interactions = accept_requests(requests, mask, interactions, mode, out)

    snapshots = SnapshotStore(Path(run_dir) / "snapshots")
    delete = mode == "delete"  # the data leaves the devices too (and their own score is attacked)
    job = UnlearningJob(
        model,
        new_interactions,
        new_mask,
        accepted.pairs,
        config.unlearning,
        seed,
        snapshots,
        UpdateLog.of_run(run_dir) if METHODS[method].needs_update_log else None,
        delete=delete,
    )
    result = unlearn(job, method)
    metrics = unlearning_metrics(result.model, new_interactions, new_mask, accepted.pairs, seed, delete)
    metrics.update(
        {
            "method": method,
            "mode": mode,
            "seconds": round(result.seconds, 3),
            "rounds": result.rounds,
            "requests": int(accepted.pairs["request_id"].nunique()),
            "rejected": len(accepted.rejected),
            "unshared_interactions": len(accepted.pairs),
            "users_affected": int(accepted.pairs["user"].nunique()),
            "affected_nodes": {"users": result.affected_users, "items": result.affected_items},
            "snapshots_read": result.snapshots_read,
            "snapshot_bytes_read": snapshots.bytes_on_disk(result.snapshots_read),
        }
    )
    kept = carry_snapshots(snapshots, SnapshotStore(out / "snapshots"), result.carried_snapshot)
    # Bytes kept for unlearning: the snapshots (contrastive) or the update log (fru), as the method says.
    metrics["storage_bytes"] = kept.bytes_on_disk() if result.storage_bytes is None else result.storage_bytes
    if compare_retrain:
        reference = unlearn(
            UnlearningJob(
                result.model if method == "retrain" else model,
                new_interactions,
                new_mask,
                accepted.pairs,
                config.unlearning,
                seed,
            ),
            "retrain",
        )
        metrics["retrain"] = unlearning_metrics(
            reference.model, new_interactions, new_mask, accepted.pairs, seed, delete
        )
        metrics["retrain"]["seconds"] = round(reference.seconds, 3)
        metrics["embedding_distance_to_retrain"] = embedding_distance(result.model, reference.model)

    save_config(config, out / "config.yaml")
    new_interactions.save(out)
    save_mask(new_mask, out / "masks.parquet")
    save_model(TrainResult(result.model, 0, {}), out)
    atomic_write_json(out / "unlearning.json", metrics)
    if config.tracking.enabled if track is None else track:
        metrics["tracking"] = track_unlearning(
            config, Path(run_dir), out, result.model, metrics, new_interactions, new_mask
        )
        atomic_write_json(out / "unlearning.json", metrics)
    return metrics


def share_more_stage(
    run_dir: str | Path,
    out_dir: str | Path,
    requests: pd.DataFrame,
    seed: int | None = None,
    track: bool | None = None,
) -> dict[str, Any]:
    """Share requests (the slider moved up): add the accepted private pairs to the server graph and
    continue training the served model for ``requests.share_rounds`` rounds; writes a new run folder.

    Continued training is the cheap path; retraining from scratch with the same masks is the
    reference (``bench/share.py`` measures both).  The round-0 snapshot, free of any user's data,
    is carried over for later unlearning events.
    """
    config, interactions, mask, model = load_run(run_dir)
    if config.run.method != "fedshare":
        raise ConfigError(f"{run_dir} was trained with --method {config.run.method}; sharing needs a fedshare run")
    seed = config.run.seed if seed is None else seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accepted, new_mask, _ = accept_requests(requests, mask, interactions, "share", out)

    started = time.perf_counter()
    generator = torch.Generator(device=model.server.device)
    generator.manual_seed(seed + 1)
    replace_graph(model, new_mask, interactions)
    for _ in range(config.requests.share_rounds):
        run_round(model, generator)
    seconds = time.perf_counter() - started
    sharing = sharing_users(new_mask, interactions.n_users)
    metrics: dict[str, Any] = {
        **evaluate(model, interactions, "test", {"sharing": sharing, "private": ~sharing}),
        "valid": evaluate(model, interactions, "valid"),
        "method": "continue",
        "mode": "share",
        "seconds": round(seconds, 3),
        "rounds": config.requests.share_rounds,
        "requests": int(accepted.pairs["request_id"].nunique()),
        "rejected": len(accepted.rejected),
        "shared_interactions": len(accepted.pairs),
        "users_affected": int(accepted.pairs["user"].nunique()),
    }
    kept = carry_snapshots(SnapshotStore(Path(run_dir) / "snapshots"), SnapshotStore(out / "snapshots"))
    metrics["storage_bytes"] = kept.bytes_on_disk() if kept.folder.exists() else 0
    save_config(config, out / "config.yaml")
    interactions.save(out)
    save_mask(new_mask, out / "masks.parquet")
    save_model(TrainResult(model, 0, {}), out)
    atomic_write_json(out / "unlearning.json", metrics)  # the event record, named as for every event
    if config.tracking.enabled if track is None else track:
        metrics["tracking"] = track_unlearning(config, Path(run_dir), out, model, metrics, interactions, new_mask)
        atomic_write_json(out / "unlearning.json", metrics)
    return metrics


def request_table(
    mask: pd.DataFrame, requests_file: str | Path | None, fraction: float | None, scope: str, seed: int
) -> pd.DataFrame:
    """The raw requests: read from a CSV file, or drawn at random among the sharing users."""
    if requests_file is not None:
        return read_requests(Path(requests_file))
    if fraction is not None:
        return draw_requests(mask, fraction, scope, seed)
    raise ConfigError("give --requests FILE or --fraction F")


def accept_requests(
    table: pd.DataFrame, mask: pd.DataFrame, interactions: Interactions, mode: str, out: Path
) -> tuple[Requests, pd.DataFrame, Interactions]:
    """Resolve the requests (unshare, delete or share) against the masks and apply them; writes
    requests, rejections and applied pairs."""
    table.to_csv(out / "requests.csv", index=False)
    requests = resolve_requests(table, mask, mode)
    requests.rejected.to_csv(out / "rejections.csv", index=False)
    if requests.pairs.empty:
        raise DataError(
            f"no valid {mode} request ({len(requests.rejected)} rejected, reasons in {out / 'rejections.csv'})"
        )
    requests.pairs.to_csv(out / "applied.csv", index=False)
    new_mask = apply_to_mask(mask, requests.pairs, shared=mode == "share")
    if mode == "delete":
        interactions, new_mask = apply_delete(interactions, new_mask, requests.pairs)
    return requests, new_mask, interactions


def carry_snapshots(
    snapshots: SnapshotStore, kept: SnapshotStore, carried: dict[str, torch.Tensor] | None = None
) -> SnapshotStore:
    """What the unlearned run keeps for the next event: the data-free round-0 snapshot and, if the
    method asks for it, its new state.  Snapshots taken after round 0 may hold the unshared data's
    influence and are not carried over."""
    first = snapshots.rounds()[:1]
    for round_number in first:
        kept.save(round_number, snapshots.load(round_number))
    if carried is not None:
        kept.save(max(first + [0]) + 1, carried)
    return kept


def track_unlearning(
    config: Config,
    run_dir: Path,
    out: Path,
    model: Model,
    metrics: dict[str, Any],
    interactions: Interactions,
    mask: pd.DataFrame,
) -> dict[str, Any]:
    """Log the event to MLflow, next to the run it started from; writes tracking.json."""
    parent_file = run_dir / "tracking.json"
    parent = json.loads(parent_file.read_text()) if parent_file.exists() else None
    _, item_vectors = model.scoring_vectors()
    parent_metrics_file = run_dir / "metrics.json"
    trained = json.loads(parent_metrics_file.read_text()) if parent_metrics_file.exists() else {}
    storage = {f"{metrics['method']} (this event)": metrics["storage_bytes"], "retrain": 0}
    if trained.get("fru_log_bytes"):  # only what was measured: the FRU log exists if the run wrote one
        storage["fru (update log of the run)"] = trained["fru_log_bytes"]
    tracked = log_unlearning(
        config, out, metrics, item_vectors, interactions.item_ids, parent, storage, interactions.table, mask
    ).to_dict()
    atomic_write_json(out / "tracking.json", tracked)
    return tracked


def evaluate_stage(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Re-evaluate saved models with full ranking on test; writes summary.json and the validation curves."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    curves: list[dict[str, Any]] = []
    for run_dir in map(Path, run_dirs):
        config, interactions, mask, model = load_run(run_dir)
        sharing = sharing_users(mask, interactions.n_users)
        metrics = evaluate(model, interactions, "test", {"sharing": sharing, "private": ~sharing})
        unlearning_file = run_dir / "unlearning.json"
        if unlearning_file.exists():
            event = json.loads(unlearning_file.read_text())
            metrics.update(
                {
                    key: event[key]
                    for key in ("mia_auc", "unshared_mean_rank", "storage_bytes", "seconds")
                    if key in event
                }
            )
        summary[run_dir.name] = metrics
        history_file = run_dir / "history.json"
        if history_file.exists():
            curves += [
                {"run": run_dir.name, "round": row["round"], config.eval.metric: row[f"valid/{config.eval.metric}"]}
                for row in json.loads(history_file.read_text())
            ]
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "validation_curve.json", curves)
    return summary
