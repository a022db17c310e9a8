"""Unsharing baselines on one trained FedShare run: FRU vs contrastive vs retrain.

    OMP_NUM_THREADS=1 python bench/fru_compare.py --dataset ml-100k --seed 0 --alpha 0.5 \
        --json bench/results/fru_ml-100k.json

Trains FedShare (mixed sharing) once, as ``train_stage`` does, with the round-0/50/100 snapshots
(for contrastive) and the FRU update log (``unlearning.fru_alpha``); draws the requests as
``unshare_stage --fraction`` does (a fraction of the sharing users unshares everything); then runs
each method from the same trained state (reloaded as ``load_run`` does) and measures what
``unshare_stage`` reports. Storage: FRU = its log's bytes on disk; contrastive = what unshare_stage
keeps (round-0 snapshot + post-unlearning state); retrain = 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

from bench.common import REPO, load_average, machine_facts, machine_line, timed, write_json  # noqa: E402
from fedshare.config import load_config  # noqa: E402
from fedshare.data.interactions import load_interactions  # noqa: E402
from fedshare.data.requests import apply_to_mask, draw_requests, resolve_requests  # noqa: E402
from fedshare.data.sharing import build_mask  # noqa: E402
from fedshare.evaluation import embedding_distance, unlearning_metrics  # noqa: E402
from fedshare.federated.simulation import build_model, pick_device  # noqa: E402
from fedshare.training import train  # noqa: E402
from fedshare.unlearning.common import UnlearningJob  # noqa: E402
from fedshare.unlearning.fru import UpdateLog  # noqa: E402
from fedshare.unlearning.registry import unlearn  # noqa: E402
from fedshare.unlearning.snapshots import SnapshotStore  # noqa: E402

# FRU variants: the default (calibration from one full fresh local step), FRU's lambda = 0.1 of the
# local work for the calibration directions, and no calibration (logged client updates as they are).
VARIANTS = {"fru": {}, "fru-lambda0.1": {"calibration_fraction": 0.1}, "fru-uncalibrated": {"calibrated": False}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.5, help="unlearning.fru_alpha (FRU used 0.5)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of sharing users who unshare all")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="FRU variants to run besides contrastive and retrain",
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "fru"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    config = load_config(
        None,
        [
            f"data.dataset={args.dataset}",
            f"run.seed={args.seed}",
            "sharing.policy=mixed",
            f"unlearning.fru_alpha={args.alpha}",
            *args.overrides,
        ],
    )
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    interactions = load_interactions(config.data, config.run.seed)
    mask = build_mask(interactions, config.sharing, config.run.seed)
    snapshots = SnapshotStore(out / "snapshots")
    wanted = set(config.unlearning.snapshot_rounds)

    def keep_snapshot(round_number: int, model) -> None:
        if round_number in wanted:
            snapshots.save(round_number, model.server.state())

    log = UpdateLog(out / "fru_log", alpha=config.unlearning.fru_alpha)
    peak = {"bytes": 0}
    flush = log.flush

    def flush_and_measure(round_number: int) -> None:
        flush(round_number)
        peak["bytes"] = max(peak["bytes"], log.bytes_on_disk())

    log.flush = flush_and_measure
    load_before = load_average()
    _, train_seconds_without_log = timed(train, config, interactions, mask, progress=False)  # the log's overhead
    result, train_seconds = timed(
        train, config, interactions, mask, progress=False, on_round=keep_snapshot, update_log=log
    )
    trained = result.model.state()

    requests = resolve_requests(draw_requests(mask, args.fraction, "all", config.run.seed), mask)
    pairs = requests.pairs
    new_mask = apply_to_mask(mask, pairs)
    device = pick_device(config.run.device)

    def reload():
        model, _ = build_model(config, interactions, mask, device)
        model.load_state(trained)
        return model

    report = {
        "dataset": args.dataset,
        "seed": config.run.seed,
        "alpha": config.unlearning.fru_alpha,
        "best_round": result.best_round,
        "rounds_run": result.rounds_run,
        "train_seconds_without_log": round(train_seconds_without_log, 2),
        "train_seconds_with_log": round(train_seconds, 2),
        "log_bytes_peak_during_training": peak["bytes"],
        "log_bytes": log.bytes_on_disk(),
        "log_bytes_clients": log.bytes_on_disk("clients"),
        "log_bytes_server": log.bytes_on_disk("server"),
        "snapshot_bytes": snapshots.bytes_on_disk(),
        "unshared_interactions": len(pairs),
        "users_affected": int(pairs["user"].nunique()),
        "machine": machine_line(machine_facts(config.run.device)),
        "overrides": args.overrides,
        "methods": {},
    }
    before = unlearning_metrics(reload(), interactions, new_mask, pairs, config.run.seed)
    report["methods"]["before (no unlearning)"] = {
        k: before[k] for k in ("recall@20", "ndcg@20", "mia_auc", "unshared_mean_rank")
    }
    models = {}
    for method in ["retrain", "contrastive", *args.variants]:
        model = reload()
        kwargs = {}
        name = method
        if method.startswith("fru"):
            kwargs = {"update_log": log, "options": VARIANTS[method]}
            method = "fru"
        job = UnlearningJob(
            model, interactions, new_mask, pairs, config.unlearning, config.run.seed, snapshots, **kwargs
        )
        outcome = unlearn(job, method)
        metrics = unlearning_metrics(outcome.model, interactions, new_mask, pairs, config.run.seed)
        if method == "contrastive":  # what unshare_stage keeps: round-0 snapshot + post-unlearning state
            kept = SnapshotStore(out / "kept_contrastive")
            kept.save(0, snapshots.load(0))
            kept.save(1, outcome.model.server.state())
            storage = kept.bytes_on_disk()
        else:
            storage = log.bytes_on_disk() if method == "fru" else 0
        models[name] = outcome.model
        row = {
            "recall@20": metrics["recall@20"],
            "ndcg@20": metrics["ndcg@20"],
            "recall@20 requesting": metrics.get("requesting/recall@20"),
            "recall@20 others": metrics.get("others/recall@20"),
            "mia_auc": metrics["mia_auc"],
            "unshared_mean_rank": metrics["unshared_mean_rank"],
            "seconds": round(outcome.seconds, 2),
            "rounds": outcome.rounds,
            "storage_bytes": storage,
        }
        if name != "retrain":
            row["embedding_distance_to_retrain"] = embedding_distance(outcome.model, models["retrain"])
        report["methods"][name] = row
        print(name, json.dumps(row), flush=True)
    report["load_average_before_after"] = [load_before, load_average()]
    write_json(args.json, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
