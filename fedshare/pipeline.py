"""Stages: each is one function that the CLI, a DVC stage and a Prefect task all call.

A run directory holds everything later stages need:

    config.yaml           the resolved configuration
    interactions.parquet  raw IDs, contiguous indices and the split of every interaction
    masks.parquet         the sharing mask of every training interaction (user_id, item_id, shared, ratio)
    server.pt             what the server keeps: shared edges, item table, graph embeddings (+ .sha256)
    clients.pt            the simulated devices' private state (user embeddings, optimizer state)
    metrics.json          test metrics (full ranking), best_round, seconds, per-group metrics
    history.json          validation metrics per evaluated round
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import Config, ConfigError, load_config, save_config
from .data import DataError, Interactions, load_interactions
from .sharing import build_mask, load_mask, save_mask, sharing_users
from .storage import atomic_write_json, load_tensors, save_tensors
from .training import Model, TrainResult, build_model, evaluate, pick_device, train
from .unlearning import SnapshotStore


def prepare_stage(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Load the raw data, map IDs, split per user; writes interactions.parquet and prepare.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = load_interactions(config.data, config.run.seed)
    interactions.save(out)
    counts = interactions.table["split"].value_counts()
    summary = {"dataset": config.data.dataset, "seed": config.run.seed, "n_users": interactions.n_users,
               "n_items": interactions.n_items, **{f"n_{split}": int(counts.get(split, 0)) for split in ("train", "valid", "test")}}
    atomic_write_json(out / "prepare.json", summary)
    return summary


def validate_stage(prepared_dir: str | Path, report_path: str | Path | None = None) -> dict[str, Any]:
    """Great Expectations suite on the prepared interactions; raises ValidationError when it fails."""
    from .validation import check, validate_interactions

    report = validate_interactions(Interactions.load(Path(prepared_dir)).table)
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(report_path), report.to_dict())
    check(report)
    return report.to_dict()


def share_stage(config: Config, prepared_dir: str | Path, out_dir: str | Path,
                withdrawn: pd.DataFrame | None = None) -> dict[str, Any]:
    """Draw the sharing masks, replay withdrawn consent (applied unshare requests), validate, write masks.parquet."""
    from .validation import check, validate_masks

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = Interactions.load(Path(prepared_dir))
    mask = build_mask(interactions, config.sharing, config.run.seed)
    if withdrawn is not None and not withdrawn.empty:
        mask = withdraw_consent(mask, withdrawn)
    else:
        check(validate_masks(mask, interactions.table))  # withdrawn consent lowers ratios on purpose
    save_mask(mask, out / "masks.parquet")
    summary = {"policy": config.sharing.policy, "n_train": len(mask), "n_shared": int(mask["shared"].sum()),
               "sharing_users": int(sharing_users(mask, interactions.n_users).sum()),
               "mean_sharing_ratio": float(mask.groupby("user")["ratio"].first().mean()),
               "withdrawn_requests": 0 if withdrawn is None else len(withdrawn)}
    atomic_write_json(out / "sharing.json", summary)
    return summary


def withdraw_consent(mask: pd.DataFrame, withdrawn: pd.DataFrame) -> pd.DataFrame:
    """Apply past unshare requests (raw IDs) to a freshly drawn mask, so retraining respects them."""
    from .unlearning import apply_to_mask, resolve_requests

    resolved = resolve_requests(withdrawn[["request_id", "user_id", "item_id"]], mask)
    return apply_to_mask(mask, resolved.pairs)


def train_stage(config: Config, out_dir: str | Path, progress: bool = True, prepared_dir: str | Path | None = None,
                masks_path: str | Path | None = None, track: bool | None = None) -> dict[str, Any]:
    """Train, evaluate on test and write the run directory; returns the metrics.

    With ``prepared_dir``/``masks_path`` (the DVC and Prefect stages) it starts from their outputs,
    otherwise it loads, splits and masks the data itself (one-shot ``fedshare train``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = Interactions.load(Path(prepared_dir)) if prepared_dir else load_interactions(config.data, config.run.seed)
    mask = load_mask(Path(masks_path)) if masks_path else build_mask(interactions, config.sharing, config.run.seed)
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
        from .fru import UpdateLog
        update_log = UpdateLog(out / "fru_log", alpha=config.unlearning.fru_alpha)
    result = train(config, interactions, mask, progress=progress, on_round=keep_snapshot, update_log=update_log)
    metrics = final_metrics(result, interactions, mask)
    metrics["snapshot_bytes"] = snapshots.bytes_on_disk() if snapshots.folder.exists() else 0
    metrics["fru_log_bytes"] = update_log.bytes_on_disk() if update_log is not None else 0
    save_model(result, out)
    atomic_write_json(out / "history.json", result.history)
    atomic_write_json(out / "metrics.json", metrics)
    if config.tracking.enabled if track is None else track:
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


def track_training(config: Config, run_dir: Path, model: Model, metrics: dict[str, Any],
                   history: list[dict[str, Any]], interactions: Interactions, mask) -> dict[str, Any]:
    from .tracking import log_training

    _, item_vectors = model.scoring_vectors()
    tracked = log_training(config, run_dir, metrics, history, item_vectors, item_vectors.shape[1],
                           interactions.table, mask).to_dict()
    atomic_write_json(run_dir / "tracking.json", tracked)
    return tracked


def final_metrics(result: TrainResult, interactions: Interactions, mask) -> dict[str, Any]:
    config = result.model.config
    sharing = sharing_users(mask, interactions.n_users)
    groups = {"sharing": sharing, "private": ~sharing}
    metrics: dict[str, Any] = evaluate(result.model, interactions, "test", groups)
    metrics.update({
        "best_round": result.best_round,
        "rounds_run": result.rounds_run,
        "seconds": round(result.seconds, 3),
        "seconds_per_round": round(result.seconds / max(result.rounds_run, 1), 4),
        "method": config.run.method,
        "sharing": config.sharing.policy,
        "dataset": config.data.dataset,
        "seed": config.run.seed,
        "device": config.run.device,
        "n_users": interactions.n_users,
        "n_items": interactions.n_items,
        "n_train": int((interactions.table["split"] == "train").sum()),
        "n_shared": int(mask["shared"].sum()) if config.run.method == "fedshare" else 0,
        "mean_sharing_ratio": float(mask.groupby("user")["ratio"].first().mean()),
        "valid": result.best_validation,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
    })
    return metrics


def save_model(result: TrainResult, out: Path) -> dict[str, Any]:
    """Server state and client state in separate files, so the privacy boundary is visible on disk."""
    model = result.model
    server = {**model.server.state(), "shared_users": model.server.graph.users, "shared_items": model.server.graph.items}
    server_info = save_tensors(out / "server.pt", server)
    client_info = save_tensors(out / "clients.pt", model.clients.state()) if model.clients is not None else None
    return {"server": server_info, "clients": client_info}


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, Interactions, object, Model]:
    """Rebuild the trained model of a run directory (checksums verified)."""
    run = Path(run_dir)
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{run} is not a run directory (no config.yaml); run `fedshare train --out {run}` first")
    config = load_config(run / "config.yaml", overrides)
    interactions = Interactions.load(run)
    mask = load_mask(run / "masks.parquet")
    model, _ = build_model(config, interactions, mask, pick_device(config.run.device))
    server = load_tensors(run / "server.pt", map_location=model.server.device)
    model.server.load_state({name: server[name] for name in ("item_table", "graph_users", "graph_items")})
    if model.clients is not None:
        model.clients.load_state(load_tensors(run / "clients.pt", map_location=model.server.device))
    return config, interactions, mask, model


def summary_line(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if k in metrics]
    values = "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)
    return (f"{metrics['method']} on {metrics['dataset']} (sharing {metrics['sharing']}, seed {metrics['seed']}): "
            f"{values}  best round {metrics['best_round']}  {metrics['seconds']:.1f}s")


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def make_requests_stage(run_dir: str | Path, fraction: float, scope: str, seed: int, out: str | Path) -> pd.DataFrame:
    """Draw a random unsharing request file among the run's sharing users."""
    from .unlearning import draw_requests

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


def unshare_stage(run_dir: str | Path, out_dir: str | Path, method: str, requests_file: str | Path | None = None,
                  fraction: float | None = None, scope: str = "all", mode: str = "unshare",
                  compare_retrain: bool = False, seed: int | None = None, requests: pd.DataFrame | None = None,
                  track: bool | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply unshare (or delete) requests to a trained run, unlearn, measure, write a new run directory.

    The requests come from a CSV file, a table (the unlearning flow), or are drawn (``fraction``).
    """
    from .unlearning import (METHODS, SnapshotStore, apply_delete, apply_to_mask, draw_requests,
                             read_requests, resolve_requests, unlearn)

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
    if requests is not None:
        table = requests
    elif requests_file is not None:
        table = read_requests(Path(requests_file))
    elif fraction is not None:
        table = draw_requests(mask, fraction, scope, seed)
    else:
        raise ConfigError("give --requests FILE or --fraction F")
    table.to_csv(out / "requests.csv", index=False)
    requests = resolve_requests(table, mask)
    requests.rejected.to_csv(out / "rejections.csv", index=False)
    if requests.pairs.empty:
        raise DataError(f"no valid request ({len(requests.rejected)} rejected, reasons in {out / 'rejections.csv'})")
    requests.pairs.to_csv(out / "applied.csv", index=False)
    new_mask = apply_to_mask(mask, requests.pairs)
    new_interactions = interactions
    if mode == "delete":
        new_interactions, new_mask = apply_delete(interactions, new_mask, requests.pairs)

    snapshots = SnapshotStore(Path(run_dir) / "snapshots")
    update_log = None
    if method == "fru":
        from .fru import UpdateLog
        if not (Path(run_dir) / "fru_log" / "initial-server.pt").exists():
            raise DataError(f"{run_dir} has no FRU update log: train it with --set unlearning.fru_alpha=0.5")
        update_log = UpdateLog(Path(run_dir) / "fru_log")
    result = unlearn(model, new_interactions, new_mask, requests.pairs, method, snapshots,
                     config.unlearning.rounds, config.unlearning.weight, config.unlearning.hops, seed,
                     update_log=update_log)
    metrics = unlearning_metrics(result.model, new_interactions, new_mask, requests.pairs, seed)
    metrics.update({"method": method, "mode": mode, "seconds": round(result.seconds, 3),
                    "rounds": result.rounds, "requests": int(requests.pairs["request_id"].nunique()),
                    "rejected": len(requests.rejected), "unshared_interactions": len(requests.pairs),
                    "users_affected": int(requests.pairs["user"].nunique()),
                    "affected_nodes": {"users": result.affected_users, "items": result.affected_items}})

    # What the unlearned run keeps for the next event: the data-free round-0 snapshot and the new state.
    # Snapshots taken after round 0 may hold the unshared data's influence and are not carried over.
    kept = SnapshotStore(out / "snapshots")
    first = snapshots.rounds()[:1]
    for round_number in first:
        kept.save(round_number, snapshots.load(round_number))
    if method == "contrastive":
        kept.save(max(first + [0]) + 1, result.model.server.state())
    # Bytes kept for unlearning: the snapshots (contrastive) or the update log (fru; not carried over,
    # its rounds still hold the unshared edges' influence, so a second event would need a new log).
    metrics["storage_bytes"] = (kept.bytes_on_disk() if method == "contrastive"
                                else update_log.bytes_on_disk() if method == "fru" else 0)
    if compare_retrain:
        reference = unlearn(result.model if method == "retrain" else model, new_interactions, new_mask, requests.pairs,
                            "retrain", None, 0, 0.0, 0, seed)
        metrics["retrain"] = unlearning_metrics(reference.model, new_interactions, new_mask, requests.pairs, seed)
        metrics["retrain"]["seconds"] = round(reference.seconds, 3)
        metrics["embedding_distance_to_retrain"] = embedding_distance(result.model, reference.model)

    save_config(config, out / "config.yaml")
    new_interactions.save(out)
    save_mask(new_mask, out / "masks.parquet")
    save_model(TrainResult(result.model, 0, {}), out)
    atomic_write_json(out / "unlearning.json", metrics)
    if config.tracking.enabled if track is None else track:
        from .tracking import log_unlearning

        parent_file = Path(run_dir) / "tracking.json"
        parent = json.loads(parent_file.read_text()) if parent_file.exists() else None
        _, item_vectors = result.model.scoring_vectors()
        parent_metrics_file = Path(run_dir) / "metrics.json"
        trained = json.loads(parent_metrics_file.read_text()) if parent_metrics_file.exists() else {}
        storage = {f"{method} (this event)": metrics["storage_bytes"], "retrain": 0}
        if trained.get("fru_log_bytes"):  # only what was measured: the FRU log exists if the run wrote one
            storage["fru (update log of the run)"] = trained["fru_log_bytes"]
        metrics["tracking"] = log_unlearning(config, out, metrics, item_vectors, item_vectors.shape[1], parent,
                                             storage).to_dict()
        atomic_write_json(out / "tracking.json", metrics["tracking"])
        atomic_write_json(out / "unlearning.json", metrics)
    return metrics


def unlearning_metrics(model: Model, interactions: Interactions, mask, pairs, seed: int) -> dict[str, Any]:
    from .unlearning import forgetting_metrics

    requesting = np.zeros(interactions.n_users, dtype=bool)
    requesting[pairs["user"].unique()] = True
    metrics = evaluate(model, interactions, "test", {"requesting": requesting, "others": ~requesting})
    metrics.update(forgetting_metrics(model, interactions, pairs, seed))
    return metrics


def embedding_distance(model: Model, reference: Model) -> float:
    """Mean relative L2 distance between the two models' global item representations."""
    with torch.no_grad():
        _, items = model.server.propagate()
        _, reference_items = reference.server.propagate()
        return float(((items - reference_items).norm(dim=1) / reference_items.norm(dim=1).clamp(min=1e-12)).mean())


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
            metrics.update({key: event[key] for key in ("mia_auc", "unshared_mean_rank", "storage_bytes", "seconds")
                            if key in event})
        summary[run_dir.name] = metrics
        history_file = run_dir / "history.json"
        if history_file.exists():
            curves += [{"run": run_dir.name, "round": row["round"], config.eval.metric: row[f"valid/{config.eval.metric}"]}
                       for row in json.loads(history_file.read_text())]
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "validation_curve.json", curves)
    return summary
