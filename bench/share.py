"""Sharing more (the slider moved up): continued training from the served model against a retrain.

Trains FedShare (or reuses the run in --runs), then some users move their slider up: a fraction of
the users who keep items private share all of them (``--fraction``).  Two ways to serve the new
masks, each measured on test (Recall@20, NDCG@20, and on the users who shared more) and timed:

* ``continue``: what a share request does (``fedshare.stages.share_more_stage``): the server takes
  the new edges and training goes on for ``requests.share_rounds`` rounds;
* ``retrain``: a full training from scratch with the same masks (the reference).

    python bench/share.py --dataset ml-100k --seeds 0 --json bench/results/share_ml-100k.json \\
        --markdown bench/results/share_ml-100k.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.common import (  # noqa: E402
    REPO,
    command_line,
    log,
    machine_facts,
    markdown_table,
    mean_std,
    publish,
    report_footer,
    train_or_reuse,
)
from fedshare.config import load_config  # noqa: E402
from fedshare.data.requests import apply_to_mask, resolve_requests  # noqa: E402
from fedshare.data.sharing import load_mask, save_mask  # noqa: E402
from fedshare.evaluation import evaluate  # noqa: E402
from fedshare.rundir import load_run  # noqa: E402
from fedshare.stages import share_more_stage, train_stage  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", help="folder laid out like ../shared/data (else $FEDSHARE_DATA_DIR)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sharing", default="mixed", help="sharing policy of the trained run (default mixed)")
    parser.add_argument("--fraction", type=float, default=0.1, help="of the users with private items (default 0.1)")
    parser.add_argument("--runs", default=str(REPO / "bench" / "out" / "share"), help="where run folders go")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    return parser.parse_args(argv)


def share_requests(mask: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A fraction of the users who keep something private share everything (one 'all' request each)."""
    keepers = np.sort(mask.loc[~mask["shared"], "user_id"].unique())
    count = max(1, int(round(fraction * len(keepers))))
    chosen = np.random.default_rng([seed, 11]).choice(keepers, size=count, replace=False)
    return pd.DataFrame({"request_id": [f"s{n:05d}" for n in range(count)], "user_id": chosen, "item_id": ""})


def scores(model, interactions, movers: np.ndarray) -> dict[str, float]:
    flags = np.zeros(interactions.n_users, dtype=bool)
    flags[movers] = True
    return evaluate(model, interactions, "test", {"movers": flags})


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    base = [f"data.dataset={args.dataset}", f"sharing.policy={args.sharing}", f"run.seed={seed}"]
    base += ["tracking.enabled=false", *args.overrides]
    if args.data_dir:
        base.append(f"data.data_dir={args.data_dir}")
    runs = Path(args.runs) / f"{Path(args.dataset).stem}-{args.sharing}-seed{seed}"
    trained = train_or_reuse(runs / "trained", base)
    log(f"seed {seed}: trained, test recall@20 {trained['recall@20']:.4f}")
    mask = load_mask(runs / "trained" / "masks.parquet")
    requests = share_requests(mask, args.fraction, seed)
    movers = resolve_requests(requests, mask, "share").pairs["user"].unique()

    continued = share_more_stage(runs / "trained", runs / "continued", requests, seed=seed + 1, track=False)
    _, interactions, _, model = load_run(runs / "continued")
    continued_scores = scores(model, interactions, movers)

    # The reference: train from scratch on the masks the share produced (the masks file, not a new draw).
    new_mask = apply_to_mask(mask, resolve_requests(requests, mask, "share").pairs, shared=True)
    save_mask(new_mask, runs / "new-masks.parquet")
    started = time.perf_counter()
    train_stage(load_config(None, base), runs / "retrained", progress=False, masks_path=runs / "new-masks.parquet")
    retrain_seconds = time.perf_counter() - started
    _, interactions, _, model = load_run(runs / "retrained")
    retrained_scores = scores(model, interactions, movers)
    _, interactions, _, model = load_run(runs / "trained")
    before_scores = scores(model, interactions, movers)
    return {
        "seed": seed,
        "requests": len(requests),
        "new_shared_pairs": int(new_mask["shared"].sum() - mask["shared"].sum()),
        "before": before_scores,
        "continue": {**continued_scores, "seconds": continued["seconds"], "rounds": continued["rounds"]},
        "retrain": {**retrained_scores, "seconds": round(retrain_seconds, 3)},
    }


def report(results: list[dict], args: argparse.Namespace) -> str:
    def cell(way: str, key: str) -> str:
        mean, std = mean_std([r[way][key] for r in results])
        return f"{mean:.4f} ± {std:.4f}" if len(results) > 1 else f"{mean:.4f}"

    def seconds(way: str) -> str:
        if way == "before":
            return "–"
        mean, std = mean_std([r[way]["seconds"] for r in results])
        return f"{mean:.1f}" if len(results) == 1 else f"{mean:.1f} ± {std:.1f}"

    names = {
        "before": "before (the served model)",
        "continue": "continue (a share request)",
        "retrain": "retrain (reference)",
    }
    rows = [
        [label, cell(way, "recall@20"), cell(way, "ndcg@20"), cell(way, "movers/recall@20"), seconds(way)]
        for way, label in names.items()
    ]
    header = ["model", "test Recall@20", "test NDCG@20", "Recall@20 of the users who shared more", "seconds"]
    first = results[0]
    lines = [
        f"Sharing more on {args.dataset} ({args.sharing} sharing; {args.fraction:.0%} of the users who keep items "
        f"private share all of them: {first['requests']} users, {first['new_shared_pairs']} new shared "
        f"pairs for seed {first['seed']}); seeds {', '.join(str(r['seed']) for r in results)}.",
        "",
        *markdown_table(header, rows),
    ]
    return "\n".join(lines + report_footer(machine_facts(), command_line(__file__)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = [one_seed(args, seed) for seed in args.seeds]
    publish(report(results, args), results, args.json, args.markdown)


if __name__ == "__main__":
    main()
