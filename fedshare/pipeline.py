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

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, save_config
from .data import Interactions, load_interactions
from .sharing import build_mask, save_mask, sharing_users
from .storage import atomic_write_json, save_tensors
from .training import TrainResult, evaluate, train


def train_stage(config: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Load, split, mask, train, evaluate on test and write the run directory; returns the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interactions = load_interactions(config.data, config.run.seed)
    mask = build_mask(interactions, config.sharing, config.run.seed)
    save_config(config, out / "config.yaml")
    interactions.save(out)
    save_mask(mask, out / "masks.parquet")

    result = train(config, interactions, mask, progress=progress)
    metrics = test_metrics(result, interactions, mask)
    save_model(result, out)
    atomic_write_json(out / "history.json", result.history)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def test_metrics(result: TrainResult, interactions: Interactions, mask) -> dict[str, Any]:
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


def summary_line(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if k in metrics]
    values = "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)
    return (f"{metrics['method']} on {metrics['dataset']} (sharing {metrics['sharing']}, seed {metrics['seed']}): "
            f"{values}  best round {metrics['best_round']}  {metrics['seconds']:.1f}s")


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
