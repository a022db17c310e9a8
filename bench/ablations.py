"""Ablation table at `mixed`: server graph, contrastive term, LightGCN layers, temperature and weight.

    python bench/ablations.py --dataset ml-100k --seeds 0 --markdown bench/results/ablations_ml-100k.md

Each row is one `train_stage` run with the overrides shown; runs are reused when their metrics.json
exists.  Reports validation Recall@20 (what model selection sees) and test Recall/NDCG@20.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accuracy import QUICK_OVERRIDES, quick_dataset  # noqa: E402  (bench/ is on sys.path when run as a script)

from bench.common import mean_std  # noqa: E402
from fedshare.config import load_config  # noqa: E402
from fedshare.stages import train_stage  # noqa: E402

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
# The λ (0.03-1) and direction sweep of an earlier session is kept in docs/results.md, table 2b.


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--runs", default=str(REPO / "bench" / "out" / "ablations"))
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--quick", action="store_true", help="tiny generated data, 4 rounds: seconds (the test suite runs it)")
    args = parser.parse_args(argv)
    if args.quick:
        import tempfile

        args.dataset, args.seeds, args.runs = quick_dataset(), args.seeds[:1], tempfile.mkdtemp(prefix="fedshare-runs-")
        args.overrides = QUICK_OVERRIDES + args.overrides
    results = []
    for seed in args.seeds:
        for label, extra in ROWS:
            name = f"{Path(args.dataset).stem}-seed{seed}-" + ("-".join(o.replace("model.", "").replace("=", "") for o in extra) or "default")
            run = Path(args.runs) / name
            if (run / "metrics.json").exists():
                metrics = json.loads((run / "metrics.json").read_text())
            else:
                overrides = ["tracking.enabled=false", f"data.dataset={args.dataset}", "sharing.policy=mixed",
                             f"run.seed={seed}", f"run.device={args.device}", *extra, *args.overrides]
                metrics = train_stage(load_config(None, overrides), run, progress=False)
            results.append({"label": label, "overrides": extra, **metrics})
            print(f"{label} seed {seed}: valid {metrics['valid']['recall@20']:.4f} test {metrics['recall@20']:.4f}", flush=True)
    lines = ["| variant | overrides | valid Recall@20 | test Recall@20 | test NDCG@20 | best round |", "|---|---|---|---|---|---|"]
    for label, extra in ROWS:
        runs = [r for r in results if r["label"] == label]
        def cell(values):
            mean, std = mean_std(values)
            return f"{mean:.4f}" + (f" ± {std:.4f}" if len(values) > 1 else "")
        lines.append(f"| {label} | {' '.join(extra) or '–'} | {cell([r['valid']['recall@20'] for r in runs])} | "
                     f"{cell([r['recall@20'] for r in runs])} | {cell([r['ndcg@20'] for r in runs])} | "
                     f"{mean_std([r['best_round'] for r in runs])[0]:.0f} |")
    command = "python bench/ablations.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([f"Command: `{command}`", f"Machine: {platform.platform()}, {results[0]['machine']}",
                      f"Dataset {args.dataset}, sharing mixed, seeds {args.seeds}.", ""] + lines) + "\n"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
