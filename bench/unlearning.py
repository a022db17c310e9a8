"""Unlearning table: contrastive, finetune, none, fru and retrain on the same trained runs, and
sequential unsharing events one after another.

    python bench/unlearning.py --dataset ml-100k --seeds 0 1 2 --markdown bench/results/unlearning_ml-100k.md
    python bench/unlearning.py --dataset ml-100k --seeds 0 --sequential 10 --event-fraction 0.02 \
        --markdown bench/results/unlearning_sequential_ml-100k.md
    python bench/unlearning.py --dataset gowalla --seeds 0 --fru-alpha 0 --snapshots 0 1 3 5 \
        --set data.data_dir=../shared/data --runs bench/out/unlearning-gowalla
    python bench/unlearning.py --quick             # tiny generated data, seconds

Per seed: one `train_stage` run (sharing mixed) that also writes the FRU update log
(--fru-alpha, default 0.5; --fru-alpha 0 leaves fru out), then one `unshare_stage` per method on the
same drawn requests (--fraction of the sharing users, --scope all|partial).  `storage_bytes` is what
each method keeps on disk for unlearning (stat, not estimated).  The FRU log is deleted once a seed
is done (it is large).  Runs are reused when their JSON exists, so an interrupted table resumes.
Imports only the core library (the plot needs matplotlib and is skipped without it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.common import (  # noqa: E402
    REPO,
    command_line,
    machine_facts,
    machine_line,
    markdown_table,
    mean_std,
    publish,
    pyplot,
    save_figure,
    temporary_csv,
    train_or_reuse,
)
from fedshare.config import load_config  # noqa: E402
from fedshare.stages import train_stage, unshare_stage  # noqa: E402

METHODS = ("contrastive", "finetune", "none", "retrain", "fru")  # fru last: its log is deleted after it
METHOD_COLUMNS = (
    "method",
    "Recall@20",
    "ratio to retrain",
    "NDCG@20",
    "Recall@20 requesting users",
    "MIA AUC",
    "MIA − retrain's",
    "strongest server MIA",
    "− retrain's",
    "unshared items' mean rank",
    "seconds",
    "time ratio to retrain",
    "bytes stored",
    "bytes ratio to fru",
)
EVENT_COLUMNS = (
    "event",
    "users",
    "interactions",
    "Recall@20",
    "MIA AUC",
    "unshared items' mean rank",
    "seconds",
    "bytes stored",
)
KEYS = (
    "recall@20",
    "ndcg@20",
    "requesting/recall@20",
    "others/recall@20",
    "mia_auc",
    "mia_auc_server",
    "unshared_mean_rank",
    "seconds",
    "storage_bytes",
    "snapshot_bytes_read",
)
SNAPSHOT_COLUMNS = (
    "snapshots read (rounds)",
    "bytes read",
    "Recall@20",
    "ratio to retrain",
    "MIA AUC",
    "strongest server MIA",
    "− retrain's",
    "unshared items' mean rank",
    "seconds",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m or a path (data.dataset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of sharing users who unshare (default 0.1)")
    parser.add_argument("--scope", choices=("all", "partial"), default="all")
    parser.add_argument("--fru-alpha", type=float, default=0.5, help="FRU: top share of rows logged (0: no fru)")
    parser.add_argument(
        "--sequential",
        type=int,
        default=0,
        metavar="K",
        help="instead: K contrastive events one after another, each --event-fraction of sharing users",
    )
    parser.add_argument("--event-fraction", type=float, default=0.02)
    parser.add_argument(
        "--snapshots",
        type=int,
        nargs="+",
        metavar="K",
        help="instead: the snapshot ablation, one contrastive event per K (unlearning.snapshots: the first K "
        "stored snapshots; 0 none, -1 all) on the same requests, next to retrain",
    )
    parser.add_argument(
        "--retrain-last",
        action="store_true",
        help="sequential: also retrain from scratch without every event's data (the reference for "
        "the last event's utility; one full training per seed)",
    )
    parser.add_argument(
        "--fru-log-rounds",
        type=int,
        default=0,
        metavar="R",
        help="instead: train R rounds with the FRU log on and report the bytes it wrote per round "
        "(for datasets whose whole log does not fit on disk); the log is deleted afterwards",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument(
        "--runs", help="where run directories go (default bench/out/unlearning; --quick: a temporary folder)"
    )
    parser.add_argument("--json", help="write all results here")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="JSON",
        help="methods table: earlier results files whose (method, seed) rows are not run here join the table",
    )
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--plot", help="sequential: write a PNG of utility, MIA and storage per event")
    parser.add_argument("--quick", action="store_true", help="tiny generated data, a few rounds (seconds)")
    return parser.parse_args(argv)


def quick_dataset() -> str:
    """A small generated dataset for --quick (the same generator the tests use): 60 users in two taste groups."""
    rng = np.random.default_rng(0)
    rows = [
        (1000 + u, 5000 + int(i), 5, 880000000 + k)
        for u in range(60)
        for k, i in enumerate(rng.choice(np.arange(40) + (u % 2) * 40, size=14, replace=False))
    ]
    return temporary_csv(
        pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]), prefix="fedshare-bench-"
    )


def base_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    quick = (
        [
            "federated.rounds=6",
            "eval.every=2",
            "model.dim=8",
            "unlearning.rounds=2",
            "unlearning.snapshot_rounds=[0, 2]",
        ]
        if args.quick
        else []
    )
    return [
        "tracking.enabled=false",
        f"data.dataset={args.dataset}",
        "run.method=fedshare",
        "sharing.policy=mixed",
        f"run.seed={seed}",
        f"run.device={args.device}",
        f"unlearning.fru_alpha={args.fru_alpha}",
        *quick,
        *args.overrides,
    ]


def trained(args: argparse.Namespace, seed: int) -> Path:
    run = Path(args.runs) / f"{Path(args.dataset).stem}-mixed-seed{seed}"
    train_or_reuse(run, base_overrides(args, seed))
    return run


def one_event(
    run: Path, out: Path, method: str, fraction: float, scope: str, seed: int, overrides: tuple[str, ...] = ()
) -> dict:
    result_file = out / "unlearning.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    return unshare_stage(run, out, method, fraction=fraction, scope=scope, seed=seed, track=False, overrides=overrides)


def event_row(metrics: dict, **fields) -> dict:
    """One unsharing event's row of a table: the KEYS, the request's size and ``fields`` (method, seed, ...)."""
    return {
        **{k: metrics.get(k) for k in KEYS},
        **fields,
        "requests": metrics["requests"],
        "users": metrics["requesting_users"],
        "unshared_interactions": metrics["unshared_interactions"],
    }


def table_of_methods(args: argparse.Namespace) -> tuple[list[dict], str]:
    results = []
    for seed in args.seeds:
        run = trained(args, seed)
        for method in args.methods:
            if method == "fru" and args.fru_alpha <= 0:
                continue
            metrics = one_event(
                run,
                run.parent / f"{run.name}-{args.scope}{args.fraction}-{method}",
                method,
                args.fraction,
                args.scope,
                seed,
            )
            results.append(event_row(metrics, method=method, seed=seed))
            print(
                f"seed {seed} {method}: recall@20 {metrics['recall@20']:.4f} MIA {metrics['mia_auc']:.3f} "
                f"{metrics['seconds']:.1f}s {metrics['storage_bytes']} bytes",
                flush=True,
            )
        shutil.rmtree(run / "fru_log", ignore_errors=True)  # several GB on ML-100K
    done = {(r["method"], r["seed"]) for r in results}
    for path in args.merge:
        results += [r for r in json.loads(Path(path).read_text()) if (r["method"], r["seed"]) not in done]
    results.sort(key=lambda r: r["seed"])
    return results, render_methods(results, args)


def fru_log_size(args: argparse.Namespace) -> tuple[list[dict], str]:
    """Bytes FRU's update log takes per round, measured over the first ``--fru-log-rounds`` rounds."""
    results = []
    for seed in args.seeds:
        run = Path(args.runs) / f"{Path(args.dataset).stem}-mixed-seed{seed}-fru-log-{args.fru_log_rounds}rounds"
        rounds = args.fru_log_rounds
        overrides = [*base_overrides(args, seed), f"federated.rounds={rounds}", f"eval.every={rounds}"]
        metrics = train_stage(load_config(None, overrides), run, progress=False)
        per_round = {
            kind: [f.stat().st_size for f in (run / "fru_log").glob(f"{kind}-0*.pt")] for kind in ("clients", "server")
        }
        results.append(
            {
                "seed": seed,
                "rounds_logged": metrics["best_round"],
                "fru_log_bytes": metrics["fru_log_bytes"],
                **{f"{kind}_bytes_per_round": sum(sizes) / max(len(sizes), 1) for kind, sizes in per_round.items()},
                "seconds": metrics["seconds"],
            }
        )
        shutil.rmtree(run / "fru_log", ignore_errors=True)
    lines = markdown_table(
        ("seed", "rounds logged", "log bytes", "client updates per round", "server gradients per round"),
        [
            (
                r["seed"],
                r["rounds_logged"],
                f"{r['fru_log_bytes']:,}",
                f"{r['clients_bytes_per_round']:,.0f}",
                f"{r['server_bytes_per_round']:,.0f}",
            )
            for r in results
        ],
    )
    header = [
        f"Dataset {args.dataset}, sharing mixed; FRU logs the top {args.fru_alpha:.0%} of each client's updated "
        f"rows per round; bytes on disk after {args.fru_log_rounds} rounds (a lower bound on a full run's log).",
        "",
    ]
    return results, "\n".join(header + lines) + "\n"


def render_methods(results: list[dict], args: argparse.Namespace) -> str:
    by_method: dict[str, list[dict]] = {}
    for row in results:
        by_method.setdefault(row["method"], []).append(row)
    mean = {m: {k: mean_std([r[k] for r in rows if r[k] is not None]) for k in KEYS} for m, rows in by_method.items()}
    rows = []
    retrain, fru = mean.get("retrain"), mean.get("fru")
    for method, stats in mean.items():

        def cell(key, digits=4):
            m, s = stats[key]
            return f"{m:.{digits}f} ± {s:.{digits}f}"

        ratio = f"{stats['recall@20'][0] / retrain['recall@20'][0]:.3f}" if retrain else "–"
        mia_gap = f"{stats['mia_auc'][0] - retrain['mia_auc'][0]:+.3f}" if retrain else "–"
        server_gap = f"{stats['mia_auc_server'][0] - retrain['mia_auc_server'][0]:+.3f}" if retrain else "–"
        time_ratio = f"{stats['seconds'][0] / retrain['seconds'][0]:.3f}" if retrain else "–"
        bytes_ratio = (
            f"{stats['storage_bytes'][0] / fru['storage_bytes'][0]:.5f}" if fru and fru["storage_bytes"][0] else "–"
        )
        rows.append(
            [
                method,
                cell("recall@20"),
                ratio,
                cell("ndcg@20"),
                cell("requesting/recall@20"),
                cell("mia_auc", 3),
                mia_gap,
                cell("mia_auc_server", 3),
                server_gap,
                f"{stats['unshared_mean_rank'][0]:.0f}",
                cell("seconds", 1),
                time_ratio,
                f"{stats['storage_bytes'][0]:,.0f}",
                bytes_ratio,
            ]
        )
    lines = markdown_table(METHOD_COLUMNS, rows)
    requests = sorted({(r["seed"], r["users"], r["unshared_interactions"]) for r in results})
    header = [
        f"Dataset {args.dataset}, sharing mixed, {args.fraction:.0%} of the sharing users unshare "
        f"{'everything they shared' if args.scope == 'all' else 'half of what they shared'}; "
        f"seeds {sorted({r['seed'] for r in results})}; "
        f"mean ± sample std over seeds. Requests per seed (seed, users, interactions): {requests}.",
        f"FRU logs the top {args.fru_alpha:.0%} of each client's updated rows per round."
        if args.fru_alpha > 0
        else "FRU not run here (--fru-alpha 0).",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def snapshot_ablation(args: argparse.Namespace) -> tuple[list[dict], str]:
    """Contrastive with the first K stored snapshots, for each K of ``--snapshots``, against retrain."""
    results = []
    for seed in args.seeds:
        run = trained(args, seed)
        stem = run.parent / f"{run.name}-{args.scope}{args.fraction}"
        reference = one_event(run, Path(f"{stem}-retrain"), "retrain", args.fraction, args.scope, seed)
        results.append(event_row(reference, method="retrain", seed=seed, snapshots_read=[]))
        for count in args.snapshots:
            metrics = one_event(
                run,
                Path(f"{stem}-contrastive-k{count}"),
                "contrastive",
                args.fraction,
                args.scope,
                seed,
                (f"unlearning.snapshots={count}",),
            )
            results.append(
                event_row(
                    metrics, method=f"contrastive, K={count}", seed=seed, snapshots_read=metrics["snapshots_read"]
                )
            )
            print(
                f"seed {seed} K={count} {metrics['snapshots_read']}: recall@20 {metrics['recall@20']:.4f} "
                f"MIA {metrics['mia_auc']:.3f} server {metrics['mia_auc_server']:.3f}",
                flush=True,
            )
    return results, render_snapshots(results, args)


def render_snapshots(results: list[dict], args: argparse.Namespace) -> str:
    reference = [r for r in results if r["method"] == "retrain"]
    retrain = {k: float(np.mean([r[k] for r in reference])) for k in ("recall@20", "mia_auc_server")}
    rows = []
    for row in results:
        rows.append(
            (
                f"{row['method']}: {row['snapshots_read'] or 'none'}" if row["method"] != "retrain" else "retrain",
                f"{row['snapshot_bytes_read'] or 0:,}",
                f"{row['recall@20']:.4f}",
                f"{row['recall@20'] / retrain['recall@20']:.3f}",
                f"{row['mia_auc']:.3f}",
                f"{row['mia_auc_server']:.3f}",
                f"{row['mia_auc_server'] - retrain['mia_auc_server']:+.3f}",
                f"{row['unshared_mean_rank']:.0f}",
                f"{row['seconds']:.1f}",
            )
        )
    header = [
        f"Dataset {args.dataset}, sharing mixed, {args.fraction:.0%} of the sharing users unshare "
        f"({args.scope}); seeds {args.seeds}. Contrastive unlearning reading the first K stored snapshots "
        "(the first is the clean anchor, the later ones extra negatives); bytes read = their size on disk.",
        "",
    ]
    return "\n".join(header + markdown_table(SNAPSHOT_COLUMNS, rows)) + "\n"


def sequential(args: argparse.Namespace) -> tuple[list[dict], str]:
    """``--sequential`` contrastive events one after another, per seed; each starts from the previous one's run."""
    results = []
    for seed in args.seeds:
        current = trained(args, seed)
        before = json.loads((current / "metrics.json").read_text())
        results.append(
            {
                "event": 0,
                "seed": seed,
                "method": "trained",
                "recall@20": before["recall@20"],
                "ndcg@20": before["ndcg@20"],
            }
        )
        for event in range(1, args.sequential + 1):
            out = current.parent / f"{Path(args.dataset).stem}-mixed-seed{seed}-seq{event}"
            metrics = one_event(current, out, "contrastive", args.event_fraction, args.scope, seed + event)
            results.append(event_row(metrics, event=event, seed=seed, method="contrastive"))
            print(
                f"seed {seed} event {event}: recall@20 {metrics['recall@20']:.4f} MIA {metrics['mia_auc']:.3f} "
                f"{metrics['storage_bytes']} bytes",
                flush=True,
            )
            previous, current = current, out
        if args.retrain_last:  # the last event's requests again, from the same state, answered by retraining
            out = current.parent / f"{current.name}-retrain"
            metrics = one_event(previous, out, "retrain", args.event_fraction, args.scope, seed + args.sequential)
            results.append(event_row(metrics, event=args.sequential, seed=seed, method="retrain"))
            print(
                f"seed {seed} retrain without all {args.sequential} events: recall@20 {metrics['recall@20']:.4f} "
                f"MIA {metrics['mia_auc']:.3f} {metrics['seconds']:.0f}s",
                flush=True,
            )
    return results, render_sequential(results, args)


def per_event(results: list[dict], method: str = "contrastive") -> list[dict]:
    """Mean and sample std over seeds of each event's numbers: {"event", key: (mean, std), ...}."""
    rows = [r for r in results if r.get("method", "contrastive") == method]
    table = []
    for event in sorted({r["event"] for r in rows}):
        values = {
            k: [r[k] for r in rows if r["event"] == event and r.get(k) is not None]
            for k in ("users", "unshared_interactions", *KEYS)
        }
        table.append({"event": event, **{k: mean_std(v) for k, v in values.items() if v}})
    return table


def render_sequential(results: list[dict], args: argparse.Namespace) -> str:
    several = len(args.seeds) > 1

    def cell(row, key, digits, spread=True):
        if key not in row:
            return "–"
        mean, std = row[key]
        return f"{mean:,.{digits}f} ± {std:,.{digits}f}" if several and spread else f"{mean:,.{digits}f}"

    trained_rows = [("0 (trained model)", row) for row in per_event(results, "trained")]
    retrain = [(f"retrain without events 1–{row['event']}", row) for row in per_event(results, "retrain")]
    lines = markdown_table(
        EVENT_COLUMNS,
        [
            (
                label,
                cell(row, "users", 0),
                cell(row, "unshared_interactions", 0),
                cell(row, "recall@20", 4),
                cell(row, "mia_auc", 3),
                cell(row, "unshared_mean_rank", 0, spread=False),
                cell(row, "seconds", 1),
                cell(row, "storage_bytes", 0, spread=False),
            )
            for label, row in trained_rows + [(row["event"], row) for row in per_event(results)] + retrain
        ],
    )
    seeds = f"seeds {args.seeds}, mean ± sample std over seeds" if several else f"seed {args.seeds[0]}"
    header = [
        f"Dataset {args.dataset}, sharing mixed, {seeds}: {args.sequential} contrastive events one after "
        f"another, each drawn among the users still sharing ({args.event_fraction:.0%}); MIA AUC and rank are "
        "for that event's pairs; bytes stored after the event (round-0 snapshot + current state)."
        + (
            " The retrain row answers the last event's requests by training from scratch without every "
            "event's data: the utility the last contrastive row should be compared with."
            if retrain
            else ""
        ),
        "",
    ]
    return "\n".join(header + lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    plt = pyplot()
    if plt is None:
        return

    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    rows = per_event(results)
    events = [r["event"] for r in rows]
    for axis, key, title in zip(
        axes,
        ("recall@20", "mia_auc", "storage_bytes"),
        ("test Recall@20", "MIA AUC (0.5 = forgotten)", "bytes stored for unlearning"),
    ):
        # error bars: sample std over seeds (zero with one seed)
        axis.errorbar(
            events,
            [r[key][0] for r in rows],
            yerr=[r[key][1] for r in rows],
            marker="o",
            capsize=3,
            label="contrastive, after each event",
        )
        if key == "recall@20":
            for row in per_event(results, "trained"):
                axis.axhline(row[key][0], color="gray", linestyle="--", label="trained model")
        if key in ("recall@20", "mia_auc"):
            for row in per_event(results, "retrain"):
                axis.errorbar(
                    [row["event"]],
                    [row[key][0]],
                    yerr=[row[key][1]],
                    marker="s",
                    color="tab:red",
                    capsize=3,
                    linestyle="none",
                    label="retrain without all events",
                )
        axis.set_xlabel("unlearning event")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.dataset = quick_dataset()
        args.seeds = args.seeds[:1]
        args.runs = args.runs or tempfile.mkdtemp(prefix="fedshare-bench-runs-")
    args.runs = args.runs or str(REPO / "bench" / "out" / "unlearning")
    if args.fru_log_rounds:
        results, text = fru_log_size(args)
    elif args.snapshots:
        results, text = snapshot_ablation(args)
    else:
        results, text = sequential(args) if args.sequential else table_of_methods(args)
    text = f"Command: `{command_line(__file__, argv)}`\nMachine: {machine_line(machine_facts(args.device))}\n\n" + text
    publish(text, results, args.json, args.markdown)
    if args.plot and args.sequential:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
