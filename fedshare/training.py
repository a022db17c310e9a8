"""Training loop for the three methods on one engine: fedshare, local (nobody shares), central.

* ``fedshare``: clients on all their data + server LightGCN on the shared graph + alignment.
* ``local``: the same clients, no server graph (FedAvg FedRec with private user embeddings).
* ``central``: LightGCN trained centrally on all training data (the ceiling); no clients.

Model selection (best round, early stopping) uses the validation split only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from fedshare.config import Config
from fedshare.data.interactions import Interactions
from fedshare.evaluation import evaluate, validation_users
from fedshare.federated.round import run_round
from fedshare.federated.simulation import Model, build_model, pick_device

if TYPE_CHECKING:
    from fedshare.unlearning.fru import UpdateLog

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: Model
    best_round: int
    best_validation: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    rounds_run: int = 0


def train(
    config: Config,
    interactions: Interactions,
    mask: pd.DataFrame,
    progress: bool = True,
    on_round: Callable[[int, Model], None] | None = None,
    update_log: UpdateLog | None = None,
    on_validation: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train until ``federated.rounds``, until validation stops improving or until the time budget
    ``federated.max_minutes`` is spent (then it validates once more); keeps the best round.

    ``update_log`` (a ``fru.UpdateLog``, off by default) logs every round's updates for FRU unlearning.
    ``on_validation`` gets each row of the history as it is measured (the live MLflow curve).
    """
    device = pick_device(config.run.device)
    torch.manual_seed(config.run.seed)
    model, generator = build_model(config, interactions, mask, device)
    metric, every, patience = config.eval.metric, config.eval.every, config.eval.patience
    best = {"round": 0, "value": -1.0, "metrics": {}, "state": model.state()}
    history: list[dict[str, float]] = []
    waited = 0
    budget = config.federated.max_minutes * 60
    started = time.perf_counter()
    bar = tqdm(
        range(1, config.federated.rounds + 1),
        desc=f"{config.run.method} rounds",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    rounds_run = 0
    if on_round is not None:
        on_round(0, model)  # the state before any training (snapshot round 0)
    if update_log is not None:
        update_log.start(model)
    validated = validation_users(interactions, config.eval.valid_users, config.run.seed)
    log.info(
        "training %s (sharing %s, seed %d): %d users, %d items, up to %d rounds, validation every %d",
        config.run.method,
        config.sharing.policy,
        config.run.seed,
        interactions.n_users,
        interactions.n_items,
        config.federated.rounds,
        every,
    )
    for round_number in bar:
        logs = run_round(model, generator, observer=update_log)
        rounds_run = round_number
        if config.model.mend_edges and round_number % config.model.mend_every == 0:
            model.server.mend()  # graph mending: new predicted edges from the embeddings of this round
        if update_log is not None:
            update_log.flush(round_number)
        if on_round is not None:
            on_round(round_number, model)
        out_of_time = budget > 0 and time.perf_counter() - started >= budget
        if round_number % every and round_number != config.federated.rounds and not out_of_time:
            continue
        validation = evaluate(model, interactions, "valid", users=validated)
        history.append({"round": round_number, **{f"valid/{k}": v for k, v in validation.items()}, **logs})
        if on_validation is not None:
            on_validation(history[-1])
        if validation[metric] > best["value"]:
            best = {"round": round_number, "value": validation[metric], "metrics": validation, "state": model.state()}
            waited = 0
        else:
            waited += 1
        bar.set_postfix({f"val {metric}": f"{validation[metric]:.4f}", "best": f"{best['value']:.4f}@{best['round']}"})
        log.info(
            "round %d/%d: valid %s %.4f (best %.4f at round %d), %.0f s",
            round_number,
            config.federated.rounds,
            metric,
            validation[metric],
            best["value"],
            best["round"],
            time.perf_counter() - started,
        )
        if waited >= patience or out_of_time:
            why = "the time budget is spent" if out_of_time else f"no better validation in {patience} checks"
            log.info("stopping at round %d: %s; keeping round %d", round_number, why, best["round"])
            break
    bar.close()
    if model.backend is not None:  # stop the shards (and Ray, if this run started it); restarts if used again
        model.backend.close()
    model.load_state(best["state"])
    if update_log is not None:
        update_log.finish(best["round"])  # the kept model is the best round's: later rounds are not needed
    return TrainResult(model, best["round"], best["metrics"], history, time.perf_counter() - started, rounds_run)
