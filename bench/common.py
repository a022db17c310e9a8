"""Helpers that the benchmark scripts share: paths, statistics, timing, machine facts and report files.

A script in bench/ puts the repository root on ``sys.path`` (one line) and imports from here::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from bench.common import REPO, mean_std  # noqa: E402
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fedshare.config import load_config  # noqa: E402
from fedshare.data.synthetic import generate  # noqa: E402
from fedshare.federated.round import run_round  # noqa: E402
from fedshare.federated.simulation import Model, pick_device  # noqa: E402
from fedshare.stages import train_stage  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


# -- data and runs ---------------------------------------------------------------------------------

QUICK_OVERRIDES = ["federated.rounds=4", "eval.every=2", "model.dim=8"]  # --quick of accuracy.py, ablations.py


def temporary_csv(frame: pd.DataFrame, name: str = "quick.csv", prefix: str = "fedshare-quick-") -> str:
    """Write ``frame`` to a CSV in a fresh temporary folder; returns its path (the run folders take its stem)."""
    path = Path(tempfile.mkdtemp(prefix=prefix)) / name
    frame.to_csv(path, index=False)
    return str(path)


def quick_dataset() -> str:
    """--quick of accuracy.py and ablations.py: 120 generated users (fedshare.data.synthetic) in a CSV."""
    return temporary_csv(generate(120, mean_per_user=15, seed=0))


def random_interactions(
    n_users: int, n_items: int, per_user: int, seed: int = 0, rating: int | None = None
) -> pd.DataFrame:
    """Every user rates ``per_user`` distinct items drawn uniformly; ratings 1-5 at random, or all ``rating``."""
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)])
    ratings = rng.integers(1, 6, size=items.size) if rating is None else rating
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), per_user),
            "item_id": items,
            "rating": ratings,
            "timestamp": np.arange(items.size),
        }
    )


def train_or_reuse(run_dir: Path, overrides: list[str], progress: bool = False) -> dict:
    """The metrics of the run in ``run_dir``: read when its metrics.json exists (an interrupted table
    resumes), else trained now by ``train_stage`` with ``overrides`` on the defaults."""
    metrics_file = Path(run_dir) / "metrics.json"
    if metrics_file.exists():
        return json.loads(metrics_file.read_text())
    return train_stage(load_config(None, overrides), run_dir, progress=progress)


# -- timing ----------------------------------------------------------------------------------------


def device_or_exit(name: str) -> torch.device:
    """``pick_device``, or exit with its message (e.g. --device cuda where torch sees no GPU)."""
    try:
        return pick_device(name)
    except ValueError as err:
        sys.exit(f"error: {err}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(model: Model, generator: torch.Generator, rounds: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of each of ``rounds`` calls to run_round (the GPU synchronized around each)."""
    seconds = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        run_round(model, generator)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def round_summary(seconds: list[float]) -> dict:
    return {
        "seconds_per_round": float(np.mean(seconds)),
        "min_seconds": min(seconds),
        "rounds": len(seconds),
        "round_seconds": seconds,
    }


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(what ``function(*args, **kwargs)`` returns, its wall-clock seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


# -- memory and load -------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU-seconds used by the whole machine, by this process) so far; None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return machine, process_cpu_seconds()


def other_cpu_seconds(before: tuple[float, float] | None) -> float | None:
    """CPU-seconds that other processes used since ``before`` (a ``cpu_seconds()``): anything above ~0
    makes timings suspect."""
    after = cpu_seconds()
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


# -- the machine -----------------------------------------------------------------------------------


def git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def memory_gib() -> float | None:
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        return round(int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def machine_facts(device: str | torch.device = "cpu") -> dict:
    """What a timing depends on: CPU, memory, library versions, threads, the device and the git revision."""
    device = str(device)
    facts = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
        "git": git_revision(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        facts["device_name"] = facts["processor"]
    return facts


def machine_line(facts: dict) -> str:
    """``machine_facts`` in one line, for the 'Machine:' line of a report."""
    return (
        f"{facts['device_name']} ({facts['device']}), {facts['cpu_count']} CPUs, {facts['memory_gib']} GiB RAM, "
        f"torch {facts['torch']} ({facts['torch_threads']} threads, OMP_NUM_THREADS={facts['omp_num_threads']}), "
        f"{facts['platform']}, git {facts['git']}"
    )


# -- reports ---------------------------------------------------------------------------------------


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """How to run this again: ``python bench/<script> ARGS`` (the arguments of this process by default)."""
    return shlex.join(["python", f"bench/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def report_footer(facts: dict, command: str) -> list[str]:
    """The last lines of a report: the machine and the command that made it."""
    return ["", f"Machine: {machine_line(facts)}.", "", f"Command: `{command}`"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table: the header, the separator, one line per row of cells."""
    line = lambda cells: "| " + " | ".join(str(cell) for cell in cells) + " |"  # noqa: E731
    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def write_text(path: str | Path | None, text: str) -> None:
    """Write ``text`` to ``path`` (its folder is made); nothing when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_json(path: str | Path | None, data: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


def publish(text: str, data: Any, json_path: str | Path | None, markdown_path: str | Path | None) -> None:
    """Print a report's Markdown ``text`` and write it and its ``data`` (as JSON) where asked."""
    print(text)
    write_json(json_path, data)
    write_text(markdown_path, text)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a message) where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path) -> None:
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
