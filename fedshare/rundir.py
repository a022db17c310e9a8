"""The run directory: what a training or unlearning stage writes and every later stage reads.

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

import torch

from fedshare.config import Config, load_config
from fedshare.data.interactions import Interactions
from fedshare.data.sharing import load_mask, sharing_users
from fedshare.evaluation import evaluate
from fedshare.federated.server import MENDED_EDGES, SERVER_TABLES
from fedshare.federated.simulation import Model, build_model, pick_device
from fedshare.storage import load_tensors, save_tensors
from fedshare.training import TrainResult


def final_metrics(result: TrainResult, interactions: Interactions, mask) -> dict[str, Any]:
    config = result.model.config
    sharing = sharing_users(mask, interactions.n_users)
    groups = {"sharing": sharing, "private": ~sharing}
    metrics: dict[str, Any] = evaluate(result.model, interactions, "test", groups)
    metrics.update(
        {
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
        }
    )
    return metrics


def save_model(result: TrainResult, out: Path) -> dict[str, Any]:
    """Server state and client state in separate files, so the privacy boundary is visible on disk."""
    model = result.model
    server = {
        **model.server.state(),
        "shared_users": model.server.graph.users,
        "shared_items": model.server.graph.items,
    }
    server_info = save_tensors(out / "server.pt", server)
    client_info = save_tensors(out / "clients.pt", model.clients.state()) if model.clients is not None else None
    return {"server": server_info, "clients": client_info}


def load_run(
    run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, Interactions, object, Model]:
    """Rebuild the trained model of a run directory (checksums verified)."""
    run = Path(run_dir)
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(
            f"{run} is not a run directory (no config.yaml); run `fedshare train --out {run}` first"
        )
    config = load_config(run / "config.yaml", overrides)
    interactions = Interactions.load(run)
    mask = load_mask(run / "masks.parquet")
    model, _ = build_model(config, interactions, mask, pick_device(config.run.device))
    server = load_tensors(run / "server.pt", map_location=model.server.device)
    model.server.load_state({name: server[name] for name in SERVER_TABLES + MENDED_EDGES if name in server})
    if model.clients is not None:
        model.clients.load_state(load_tensors(run / "clients.pt", map_location=model.server.device))
    return config, interactions, mask, model
