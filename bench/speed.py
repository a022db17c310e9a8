"""Engine speed benchmark: seconds per federated round, vectorized vs per-client loop, vs central.

For each dataset (method fedshare, sharing mixed, every other setting from params.yaml, seed 0) it
builds the model once, runs one warm-up round and times ``--rounds`` rounds of ``run_round`` with
``federated.implementation=vectorized``, then switches the same model to the per-client reference
loop and times ``--loop-rounds`` rounds.  It also times ``local`` rounds (no server graph) and
``central`` epochs (full-batch LightGCN on all training data, the same propagation code).

    python bench/speed.py --datasets ml-100k ml-1m --rounds 5 --loop-rounds 1 \
        --out bench/results/speed_cpu.json --markdown bench/results/speed_cpu.md
    python bench/speed.py --quick          # a few seconds, on a small generated dataset

Only torch, numpy, pandas, pyyaml and fedshare are needed (plus the standard library).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.common import (  # noqa: E402
    REPO,
    command_line,
    cpu_seconds,
    device_or_exit,
    log,
    machine_facts,
    markdown_table,
    other_cpu_seconds,
    peak_rss_mib,
    publish,
    random_interactions,
    report_footer,
    round_summary,
    time_rounds,
)
from fedshare.config import Config, load_config  # noqa: E402
from fedshare.data.interactions import Interactions, load_interactions  # noqa: E402
from fedshare.data.loading import KNOWN_DATASETS  # noqa: E402
from fedshare.data.sharing import build_mask, shared_graph  # noqa: E402
from fedshare.federated.simulation import Model, build_model  # noqa: E402

COLUMNS = (
    "dataset",
    "users",
    "items",
    "train interactions",
    "vectorized s/round",
    "loop s/round",
    "speed-up",
    "local s/round",
    "central epoch s",
    "round/central ratio",
)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the FedShare engine: seconds per fedshare round (vectorized and per-client loop), "
        "per local round and per central epoch.  Settings come from params.yaml "
        "(method fedshare, sharing mixed, seed 0); MovieLens is read from --data-dir or "
        "$FEDSHARE_DATA_DIR.",
        epilog="example: python bench/speed.py --datasets ml-100k ml-1m --rounds 5 --loop-rounds 1 "
        "--out bench/results/speed_cpu.json --markdown bench/results/speed_cpu.md",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["ml-100k", "ml-1m"],
        help="ml-100k, ml-1m or paths to interaction files (default: ml-100k ml-1m; ignored with --quick)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (or cuda:N)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds per method after one warm-up round (default 5, 2 with --quick)",
    )
    parser.add_argument(
        "--loop-rounds",
        type=int,
        default=None,
        help="timed rounds of the slow per-client loop (default 2, 1 with --quick)",
    )
    parser.add_argument(
        "--loop-datasets",
        nargs="+",
        default=None,
        help="time the per-client loop only on these datasets (default: all of --datasets)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own choice); 1 is much faster on a busy machine",
    )
    parser.add_argument("--data-dir", default=None, help="folder laid out like shared/data (else $FEDSHARE_DATA_DIR)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small generated dataset (200 users x 300 items x 20 each), 2 rounds, 1 loop round",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml setting for every timed model, repeatable "
        "(e.g. federated.chunk_interactions=1000000 times one pass instead of cache-sized chunks)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write every number to this JSON file")
    parser.add_argument("--markdown", type=Path, default=None, help="write the results table to this Markdown file")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.loop_rounds = args.loop_rounds or (1 if args.quick else 2)
    return args


# -- data ------------------------------------------------------------------------------------------


def write_synthetic_dataset(folder: Path, n_users: int = 200, n_items: int = 300, per_user: int = 20) -> Path:
    """A CSV of random interactions: every user rates ``per_user`` distinct items."""
    path = folder / f"synthetic_{n_users}x{n_items}.csv"
    random_interactions(n_users, n_items, per_user).to_csv(path, index=False)
    return path


def benchmark_config(
    dataset: str, method: str, device: str, data_dir: str | None, extra: list[str] | None = None
) -> Config:
    overrides = [
        f"data.dataset={dataset}",
        f"run.method={method}",
        f"run.device={device}",
        "sharing.policy=mixed",
        "run.seed=0",
    ]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    return load_config(REPO / "params.yaml", overrides + (extra or []))


# -- timing ----------------------------------------------------------------------------------------


def build_and_warm_up(
    config: Config, interactions: Interactions, mask: pd.DataFrame, device: torch.device
) -> tuple[Model, torch.Generator]:
    torch.manual_seed(config.run.seed)
    model, generator = build_model(config, interactions, mask, device)
    time_rounds(model, generator, 1, device)
    return model, generator


def benchmark_dataset(
    dataset: str, label: str, args: argparse.Namespace, device: torch.device, time_loop: bool
) -> dict:
    config = benchmark_config(dataset, "fedshare", args.device, args.data_dir, args.set)
    interactions = load_interactions(config.data, config.run.seed)
    mask = build_mask(interactions, config.sharing, config.run.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {
        "dataset": label,
        "users": interactions.n_users,
        "items": interactions.n_items,
        "train_interactions": len(mask),
        "shared_edges": shared_graph(mask, interactions.n_users, interactions.n_items).n_edges,
        "config": config.to_dict(),
    }
    log(
        f"[{label}] {result['users']} users, {result['items']} items, {result['train_interactions']} train "
        f"interactions, {result['shared_edges']} shared"
    )

    model, generator = build_and_warm_up(config, interactions, mask, device)
    result["vectorized"] = round_summary(time_rounds(model, generator, args.rounds, device))
    log(f"[{label}] vectorized: {result['vectorized']['seconds_per_round']:.4f} s/round")
    if time_loop:
        model.config.federated.implementation = "loop"  # same model, already warm
        result["loop"] = round_summary(time_rounds(model, generator, args.loop_rounds, device))
        result["speedup"] = result["loop"]["seconds_per_round"] / result["vectorized"]["seconds_per_round"]
        log(f"[{label}] loop: {result['loop']['seconds_per_round']:.3f} s/round (x{result['speedup']:.1f})")
    del model

    for method in ("local", "central"):
        model, generator = build_and_warm_up(
            benchmark_config(dataset, method, args.device, args.data_dir, args.set), interactions, mask, device
        )
        result[method] = round_summary(time_rounds(model, generator, args.rounds, device))
        log(f"[{label}] {method}: {result[method]['seconds_per_round']:.4f} s/round")
        del model
    result["round_over_central"] = result["vectorized"]["seconds_per_round"] / result["central"]["seconds_per_round"]
    result["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# -- reports ---------------------------------------------------------------------------------------


def other_processes_cpu(before: tuple[float, float] | None, seconds: float) -> dict | None:
    """CPU time other processes took while the benchmark ran: anything above ~0 makes timings suspect."""
    other = other_cpu_seconds(before)
    if other is None:
        return None
    return {"cpu_seconds": other, "wall_seconds": seconds, "mean_cpus": other / seconds}


def table_row(result: dict) -> list[str]:
    loop = result.get("loop")
    return [
        result["dataset"],
        f"{result['users']:,}",
        f"{result['items']:,}",
        f"{result['train_interactions']:,}",
        f"{result['vectorized']['seconds_per_round']:.4f}",
        f"{loop['seconds_per_round']:.3f}" if loop else "not measured",
        f"{result['speedup']:.1f}x" if loop else "-",
        f"{result['local']['seconds_per_round']:.4f}",
        f"{result['central']['seconds_per_round']:.4f}",
        f"{result['round_over_central']:.2f}",
    ]


def markdown_report(report: dict) -> str:
    lines = markdown_table(COLUMNS, [table_row(result) for result in report["results"]])
    skipped = [r["dataset"] for r in report["results"] if "loop" not in r]
    rounds, other = report["rounds"], report["other_processes"]
    lines += [
        "",
        f"Seconds are the mean of {rounds['timed']} timed rounds after 1 warm-up round "
        f"({rounds['loop']} for the per-client loop, timed on the already warm model); "
        "round/central ratio = vectorized fedshare round / central full-batch epoch.",
    ]
    if skipped:
        lines.append(f"The per-client loop was not timed on {', '.join(skipped)} (--loop-datasets).")
    lines += [
        f"Peak RSS {report['peak_rss_mib']:.0f} MiB"
        + (f", peak CUDA memory {report['peak_cuda_mib']:.0f} MiB." if "peak_cuda_mib" in report else "."),
        f"Other processes used {other['mean_cpus']:.2f} of the {report['machine']['cpu_count']} CPUs on average "
        f"during the {other['wall_seconds']:.0f} s run (timings are clean only when this is near 0)."
        if other
        else "",
        *report_footer(report["machine"], report["command"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    device = device_or_exit(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, cpu_before = time.perf_counter(), cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            path = write_synthetic_dataset(Path(tmp))
            datasets = [(str(path), path.stem)]
        else:
            datasets = [(name, name if name in KNOWN_DATASETS else Path(name).stem) for name in args.datasets]
        loop_only = set(args.loop_datasets or [])
        results = [
            benchmark_dataset(name, label, args, device, time_loop=not loop_only or bool({name, label} & loop_only))
            for name, label in datasets
        ]
    report = {
        "command": command_line(__file__),
        "machine": machine_facts(device),
        "rounds": {"timed": args.rounds, "loop": args.loop_rounds},
        "other_processes": other_processes_cpu(cpu_before, time.perf_counter() - started),
        "peak_rss_mib": peak_rss_mib(),
        "results": results,
    }
    if device.type == "cuda":
        report["peak_cuda_mib"] = max(r["peak_cuda_mib"] for r in results)
    markdown = markdown_report(report)
    publish(markdown, report, args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
