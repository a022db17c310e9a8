"""Ablation table at `mixed`: server graph, contrastive term, LightGCN layers, temperature and weight.

    python bench/ablations.py --dataset ml-100k --seeds 0 --markdown bench/results/ablations_ml-100k.md

Each row is one `train_stage` run with the overrides shown; runs are reused when their metrics.json
exists.  Reports validation Recall@20 (what model selection sees) and test Recall/NDCG@20.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

from bench.common import (  # noqa: E402
    QUICK_OVERRIDES,
    REPO,
    command_line,
    markdown_table,
    mean_std,
    publish,
    quick_dataset,
    train_or_reuse,
)

ROWS = [
    ("FedShare (defaults: 2 layers, no contrastive term, global view weighted by the shared fraction)", []),
    ("global view at weight 1 for every sharing user", ["model.global_weight=one"]),
    ("without the server graph", ["model.use_server_graph=false"]),
    ("server LightGCN, 1 layer", ["model.server_layers=1"]),
    ("server LightGCN, 3 layers", ["model.server_layers=3"]),
    ("with the contrastive term, λ=0.1, τ=0.2", ["model.contrastive_weight=0.1"]),
    ("with the contrastive term, λ=0.5, τ=0.2", ["model.contrastive_weight=0.5"]),
    ("with the contrastive term, λ=0.1, τ=0.1", ["model.contrastive_weight=0.1", "model.temperature=0.1"]),
    ("with the contrastive term, λ=0.1, τ=0.5", ["model.contrastive_weight=0.1", "model.temperature=0.5"]),
]
# docs/results.md, table 2b, sweeps λ (0.03-1) and the alignment direction further (seed 0, global view at weight 1).


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--runs", default=str(REPO / "bench" / "out" / "ablations"))
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument(
        "--quick", action="store_true", help="tiny generated data, 4 rounds: seconds (the test suite runs it)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.seeds, args.runs = quick_dataset(), args.seeds[:1], tempfile.mkdtemp(prefix="fedshare-runs-")
        args.overrides = QUICK_OVERRIDES + args.overrides
    results = []
    for seed in args.seeds:
        for label, extra in ROWS:
            name = f"{Path(args.dataset).stem}-seed{seed}-" + (
                "-".join(o.replace("model.", "").replace("=", "") for o in extra) or "default"
            )
            overrides = [
                "tracking.enabled=false",
                f"data.dataset={args.dataset}",
                "sharing.policy=mixed",
                f"run.seed={seed}",
                f"run.device={args.device}",
                *extra,
                *args.overrides,
            ]
            metrics = train_or_reuse(Path(args.runs) / name, overrides)
            results.append({"label": label, "overrides": extra, **metrics})
            print(
                f"{label} seed {seed}: valid {metrics['valid']['recall@20']:.4f} test {metrics['recall@20']:.4f}",
                flush=True,
            )

    def cell(values):
        mean, std = mean_std(values)
        return f"{mean:.4f}" + (f" ± {std:.4f}" if len(values) > 1 else "")

    rows = []
    for label, extra in ROWS:
        runs = [r for r in results if r["label"] == label]
        rows.append(
            (
                label,
                " ".join(extra) or "–",
                cell([r["valid"]["recall@20"] for r in runs]),
                cell([r["recall@20"] for r in runs]),
                cell([r["ndcg@20"] for r in runs]),
                f"{mean_std([r['best_round'] for r in runs])[0]:.0f}",
            )
        )
    lines = markdown_table(
        ("variant", "overrides", "valid Recall@20", "test Recall@20", "test NDCG@20", "best round"), rows
    )
    text = (
        "\n".join(
            [
                f"Command: `{command_line(__file__, argv)}`",
                f"Machine: {platform.platform()}, {results[0]['machine']}",
                f"Dataset {args.dataset}, sharing mixed, seeds {args.seeds}.",
                "",
            ]
            + lines
        )
        + "\n"
    )
    publish(text, results, args.json, args.markdown)


if __name__ == "__main__":
    main()
