"""Accuracy table: local, fedshare (mixed, all, ...) and central over several seeds.

    python bench/accuracy.py --dataset ml-100k --seeds 0 1 2 --markdown bench/results/accuracy_ml-100k.md

Each run is one `train_stage` call (what `fedshare train` does) writing its own run directory under
--runs; a run whose metrics.json already exists is reused, so an interrupted table resumes.
Imports only the core library, so it also runs on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
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
    pyplot,
    quick_dataset,
    save_figure,
    train_or_reuse,
)
from fedshare.data.interactions import Interactions  # noqa: E402
from fedshare.data.sharing import load_mask, sharing_users  # noqa: E402
from fedshare.evaluation import evaluate  # noqa: E402
from fedshare.rundir import load_run  # noqa: E402

DEFAULT_RUNS = [("local", "none"), ("fedshare", "mixed"), ("fedshare", "all"), ("central", "all")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m or a path (data.dataset)")
    parser.add_argument("--data-dir", help="folder laid out like ../shared/data (else $FEDSHARE_DATA_DIR)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--runs-of",
        nargs="+",
        metavar="METHOD:SHARING",
        help="which runs, e.g. local:none fedshare:mixed fedshare:0.5 central:all (default: the four)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="extra parameter overrides for every run",
    )
    parser.add_argument("--runs", default=str(REPO / "bench" / "out" / "runs"), help="where run directories go")
    parser.add_argument("--json", help="write all metrics here")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="JSON",
        help="earlier results files whose runs (method, sharing, seed) are not re-run here are added to the table",
    )
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--plot", help="write a PNG of Recall@20 against the mean sharing ratio (needs matplotlib)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny generated data, 4 rounds: seconds (the test suite runs it)"
    )
    return parser.parse_args(argv)


def run_dir_of(args: argparse.Namespace, method: str, sharing: str, seed: int) -> Path:
    return Path(args.runs) / f"{Path(args.dataset).stem}-{method}-{sharing}-seed{seed}"


def run_all(args: argparse.Namespace) -> list[dict]:
    pairs = [tuple(spec.split(":", 1)) for spec in args.runs_of] if args.runs_of else DEFAULT_RUNS
    results = []
    for seed in args.seeds:  # seed-major: an interrupted table still has every method for the first seeds
        for method, sharing in pairs:
            run_dir = run_dir_of(args, method, sharing, seed)
            name = run_dir.name
            overrides = [
                "tracking.enabled=false",
                f"data.dataset={args.dataset}",
                f"run.method={method}",
                f"sharing.policy={sharing}",
                f"run.seed={seed}",
                f"run.device={args.device}",
                *args.overrides,
            ]
            if args.data_dir:
                overrides.append(f"data.data_dir={args.data_dir}")
            metrics = train_or_reuse(run_dir, overrides, progress=args.progress)
            print(
                f"{name}: recall@20 {metrics['recall@20']:.4f} ndcg@20 {metrics['ndcg@20']:.4f} "
                f"best round {metrics['best_round']} {metrics['seconds']:.0f}s",
                flush=True,
            )
            results.append(metrics)
    return results


def private_users_notes(args: argparse.Namespace) -> list[str]:
    """Does sharing help the users who keep everything private?  Compared on the *same* users.

    For each seed with both a ``local`` run and a fedshare run at a mixture policy, the fedshare run's
    private users (from its masks) are scored by the local run's model too: same split (checked),
    same users, so the difference is the effect of the others' sharing on them.
    """
    notes = []
    for sharing in ("mixed", "uniform"):
        pairs = []  # (fedshare's Recall@20 on its private users, local's Recall@20 on the same users)
        for seed in args.seeds:
            local_dir, shared_dir = run_dir_of(args, "local", "none", seed), run_dir_of(args, "fedshare", sharing, seed)
            if not ((local_dir / "metrics.json").exists() and (shared_dir / "metrics.json").exists()):
                continue
            _, interactions, _, local_model = load_run(local_dir)
            if not interactions.table.equals(Interactions.load(shared_dir).table):
                raise ValueError(f"{local_dir} and {shared_dir} do not have the same split")
            private = ~sharing_users(load_mask(shared_dir / "masks.parquet"), interactions.n_users)
            if not private.any():
                continue
            local_on_them = evaluate(local_model, interactions, "test", {"private": private})["private/recall@20"]
            fedshare_on_them = json.loads((shared_dir / "metrics.json").read_text())["private/recall@20"]
            pairs.append((fedshare_on_them, local_on_them))
        if pairs:
            shared_mean, local_mean = (mean_std([pair[i] for pair in pairs]) for i in (0, 1))
            gain = mean_std([a - b for a, b in pairs])
            notes.append(
                f"private users of fedshare@{sharing}, same users under local ({len(pairs)} seeds): "
                f"{shared_mean[0]:.4f} ± {shared_mean[1]:.4f} vs {local_mean[0]:.4f} ± {local_mean[1]:.4f}, "
                f"paired gain {gain[0]:+.4f} ± {gain[1]:.4f}"
            )
    return notes


HEADER = (
    "method",
    "sharing",
    "Recall@20",
    "NDCG@20",
    "Recall@20 private users",
    "Recall@20 sharing users",
    "best round",
    "seconds",
)
METHOD_ORDER = {"local": 0, "fedshare": 1, "central": 2}
NAMED_SHARING = {"none": -1.0, "mixed": 1.1, "uniform": 1.2, "all": 1.3}  # after the constant ratios 0..1


def row_order(metrics: dict) -> tuple[int, float]:
    """Table order, whatever order the runs came in (merged files): local, fedshare by sharing, central."""
    sharing = str(metrics["sharing"])
    try:
        position = NAMED_SHARING[sharing] if sharing in NAMED_SHARING else float(sharing)
    except ValueError:  # a file policy: last
        position = 2.0
    return METHOD_ORDER.get(metrics["method"], 3), position


def table(results: list[dict], command: str, extra_notes: list[str] = ()) -> str:
    rows = {}
    for metrics in sorted(results, key=row_order):
        rows.setdefault((metrics["method"], metrics["sharing"]), []).append(metrics)
    table_rows = []
    means = {}
    for (method, sharing), runs in rows.items():
        cells = []
        for key in ("recall@20", "ndcg@20", "private/recall@20", "sharing/recall@20", "best_round", "seconds"):
            values = [run[key] for run in runs if key in run]
            if not values:
                cells.append("–")
                continue
            mean, std = mean_std(values)
            means[(method, sharing, key)] = mean
            cells.append(
                f"{mean:.4f} ± {std:.4f}" if key not in ("best_round", "seconds") else f"{mean:.0f} ± {std:.0f}"
            )
        table_rows.append([method, sharing, *cells])
    lines = markdown_table(HEADER, table_rows)
    local = means.get(("local", "none", "recall@20"))
    central = means.get(("central", "all", "recall@20"))
    notes = []
    if local is not None and central is not None:
        for sharing in ("mixed", "all"):
            value = means.get(("fedshare", sharing, "recall@20"))
            if value is not None:
                notes.append(
                    f"fedshare@{sharing}: closes {(value - local) / (central - local):.0%} of the local→central "
                    f"Recall@20 gap, reaches {value / central:.3f} of central"
                )
    seeds = sorted({run["seed"] for run in results})
    machine = f"{platform.platform()}, {results[0]['machine'] if results else ''}"
    header = [
        f"Seeds {seeds}; mean ± sample std over seeds; test split, full ranking.",
        f"Machine: {machine}.",
        f"Command: `{command}`",
        "",
    ]
    return "\n".join(header + lines + [""] + [f"- {note}" for note in [*notes, *extra_notes]]) + "\n"


def plot(results: list[dict], path: str) -> None:
    """Recall@20 of fedshare against the mean sharing ratio; local and central as reference lines."""
    plt = pyplot()
    if plt is None:
        return
    groups: dict[tuple[str, str], list[dict]] = {}
    for metrics in results:
        groups.setdefault((metrics["method"], metrics["sharing"]), []).append(metrics)
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    points = sorted(
        (mean_std([m["mean_sharing_ratio"] for m in runs])[0], *mean_std([m["recall@20"] for m in runs]), sharing)
        for (method, sharing), runs in groups.items()
        if method == "fedshare"
    )
    # Constant ratios (and none/all) form the curve; mixed and uniform are mixtures of users, so they are
    # drawn as separate markers at their mean ratio rather than joined to it.
    mixtures = {"mixed": "s", "uniform": "^"}
    curve = [p for p in points if p[3] not in mixtures]
    axis.errorbar(
        [p[0] for p in curve],
        [p[1] for p in curve],
        yerr=[p[2] for p in curve],
        marker="o",
        capsize=3,
        label="FedShare, every user at ρ",
    )
    for x, y, std, sharing in points:
        if sharing in mixtures:
            axis.errorbar(
                [x],
                [y],
                yerr=[std],
                marker=mixtures[sharing],
                linestyle="none",
                capsize=3,
                label=f"FedShare, {sharing}",
            )
    for x, y, _, sharing in points:
        axis.annotate(sharing, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for (method, sharing), style in ((("local", "none"), "--"), (("central", "all"), ":")):
        if (method, sharing) in groups:
            axis.axhline(
                mean_std([m["recall@20"] for m in groups[(method, sharing)]])[0],
                linestyle=style,
                color="gray",
                label=method,
            )
    axis.set_xlabel("mean sharing ratio")
    axis.set_ylabel("test Recall@20")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.dataset, args.seeds, args.runs = quick_dataset(), args.seeds[:1], tempfile.mkdtemp(prefix="fedshare-runs-")
        args.overrides = QUICK_OVERRIDES + args.overrides
    results = run_all(args)
    done = {(r["method"], r["sharing"], r["seed"]) for r in results}
    for path in args.merge:
        results += [r for r in json.loads(Path(path).read_text()) if (r["method"], r["sharing"], r["seed"]) not in done]
    command = command_line(__file__, argv)
    text = table(results, command, private_users_notes(args))
    publish(text, results, args.json, args.markdown)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
