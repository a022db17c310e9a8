"""Scaling benchmark: seconds per federated round and peak memory against the number of users.

For each size it generates a synthetic dataset (fedshare/data/synthetic.py: power-law user activity and
item popularity, a few taste clusters, seeded) with a fixed mean number of interactions per user,
prepares it with the default data settings (per-user 80/10/10 split), builds the sharing mask with
the ``mixed`` policy (a third of the users share nothing, a third half, a third everything), builds
the fedshare model on --device, runs one warm-up round and times --rounds rounds of ``run_round``;
then it does the same for one ``local`` round (clients only, no server graph).

Every size runs in its own child process (this script with --one-size), so that the peak RSS is that
size's own, under an address-space limit (--memory-limit-gib) and a wall-clock limit (--timeout): a
size that runs out of memory or time is reported as failed, with the reason and the last stage it
reached, and the other sizes go on.

    python bench/scaling.py                       # 10k, 100k, 1M users at 20 interactions/user, CPU
    python bench/scaling.py --device cuda         # the same on a GPU: also torch.cuda.max_memory_allocated
    python bench/scaling.py --users 10000 100000 1000000@5   # SIZE@MEAN: a size at another mean (not in the fit)
    python bench/scaling.py --quick               # 500 and 2,000 users, 1 round: a few seconds

Results go to bench/results/scaling_<cpu|cuda>.json and .md (not with --quick unless --out/--markdown
are given), with the exact command, the machine, the load average around every size and a
'how cost grows' line: power-law exponents fitted to seconds/round and peak RSS against the number of
training interactions.  Only torch, numpy, pandas, pyyaml and fedshare are needed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    cpu_seconds,
    device_or_exit,
    load_average,
    log,
    machine_facts,
    markdown_table,
    other_cpu_seconds,
    peak_rss_mib,
    process_cpu_seconds,
    publish,
    report_footer,
    round_summary,
    time_rounds,
)
from fedshare.config import Config, load_config  # noqa: E402
from fedshare.data.interactions import prepare  # noqa: E402
from fedshare.data.sharing import build_mask  # noqa: E402
from fedshare.data.synthetic import default_n_items, generate  # noqa: E402
from fedshare.federated.simulation import build_model, pick_device  # noqa: E402

DEFAULT_USERS = ["10000", "100000", "1000000"]
QUICK_USERS = ["500", "2000"]
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one fedshare round (and one local round) and measure peak memory on synthetic "
        "datasets of growing size (fixed mean interactions per user).  Each size runs in a "
        "child process under a memory and a time limit; failures are reported, not fatal.",
        epilog="examples: python bench/scaling.py  |  python bench/scaling.py --device cuda  |  "
        "python bench/scaling.py --users 10000 100000 1000000@5  |  python bench/scaling.py --quick",
    )
    parser.add_argument(
        "--users",
        nargs="+",
        default=None,
        metavar="N[@MEAN]",
        help="sizes in users (default 10000 100000 1000000; 500 2000 with --quick); "
        "N@MEAN runs N users at another mean, reported but left out of the growth fit",
    )
    parser.add_argument(
        "--mean",
        type=float,
        default=20.0,
        help="mean interactions per user of every size (default 20); each user has >= 3",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="catalogue size (default: max(1000, users // 20), growing with the users)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator, split, mask and model (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (or cuda:N)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed fedshare rounds after 1 warm-up round (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--local-rounds",
        type=int,
        default=1,
        help="timed local rounds after 1 warm-up round (default 1; 0 skips the local method)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads in each child (default: torch's choice, e.g. $OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=10.0,
        help="per-size limit in GiB (default 10; 0 = none).  On CPU it is the child's address-"
        "space limit (RLIMIT_AS: an allocation beyond it fails cleanly; torch's libraries "
        "alone take ~0.9 GiB of it).  With CUDA, whose driver reserves far more address "
        "space than it uses, the parent instead kills a child whose RSS passes the limit.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="wall-clock seconds per size before its child is killed (default 1200)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params.yaml override for every size, e.g. --set model.dim=32 (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="500 and 2,000 users, 1 round: a smoke test that finishes in seconds"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default bench/results/scaling_<cpu|cuda>.json; none with --quick)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="Markdown table (default bench/results/scaling_<cpu|cuda>.md; none with --quick)",
    )
    parser.add_argument(
        "--one-size",
        default=None,
        metavar="N[@MEAN]",
        help="internal: measure one size in this process and write it to --result-file",
    )
    parser.add_argument("--result-file", type=Path, default=None, help="internal: where --one-size writes its JSON")
    args = parser.parse_args(argv)
    args.users = args.users or (QUICK_USERS if args.quick else DEFAULT_USERS)
    args.rounds = args.rounds or (1 if args.quick else 3)
    for spec in args.users + ([args.one_size] if args.one_size else []):
        try:
            parse_size(spec, args.mean)
        except ValueError:
            parser.error(f"bad size {spec!r}: expected N or N@MEAN, e.g. 100000 or 1000000@5")
    if not args.quick and args.one_size is None:
        kind = "cuda" if args.device.startswith("cuda") else "cpu"
        args.out = args.out or RESULTS / f"scaling_{kind}.json"
        args.markdown = args.markdown or RESULTS / f"scaling_{kind}.md"
    return args


def parse_size(spec: str, default_mean: float) -> tuple[int, float]:
    users, _, mean = spec.partition("@")
    n_users, mean_value = int(users), float(mean) if mean else default_mean
    if n_users < 1 or mean_value <= 0:
        raise ValueError(spec)
    return n_users, mean_value


# -- memory and load -------------------------------------------------------------------------------


def proc_status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM, ...) in MiB; None where there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so that the next peak is the rounds' own (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def short_reason(reason: str) -> str:
    """A few words for the table; the JSON keeps the whole reason."""
    if "allocate" in reason or "MemoryError" in reason or "out of memory" in reason.lower():
        return "out of memory under the limit"
    if reason.startswith("timeout"):
        return "timeout"
    return reason.split(" during ")[0][:120]


def other_cpus(before: tuple[float, float] | None, seconds: float) -> float | None:
    """Mean number of CPUs that other processes kept busy since ``before`` (0 = a quiet machine)."""
    other = other_cpu_seconds(before)
    if other is None or seconds <= 0:
        return None
    return round(other / seconds, 2)


# -- one size (child process) ----------------------------------------------------------------------


def size_config(args: argparse.Namespace, method: str) -> Config:
    overrides = [
        f"run.method={method}",
        f"run.device={args.device}",
        "sharing.policy=mixed",
        f"run.seed={args.seed}",
        "tracking.enabled=false",
        *args.overrides,
    ]
    return load_config(REPO / "params.yaml", overrides)


class Stage:
    """Times a stage, records the RSS after it and saves the partial result (read back if the child dies)."""

    def __init__(self, result: dict, path: Path | None, name: str):
        self.result, self.path, self.name = result, path, name

    def __enter__(self) -> "Stage":
        self.result["stage"] = self.name
        save(self.result, self.path)
        log(f"[{self.result['label']}] {self.name} ...")
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.result["stage_seconds"][self.name] = round(time.perf_counter() - self.started, 3)
            self.result["rss_mib"][f"after_{self.name}"] = proc_status_mib("VmRSS")
            save(self.result, self.path)


def save(result: dict, path: Path | None) -> None:
    if path is not None:
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)


def measure_size(spec: str, args: argparse.Namespace, result: dict) -> None:
    """Fill ``result`` for one size; raises on failure, leaving the stages reached in ``result``."""
    n_users, mean = parse_size(spec, args.mean)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    result["torch_threads"] = torch.get_num_threads()
    path = args.result_file
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    with Stage(result, path, "generate"):
        raw = generate(n_users, mean_per_user=mean, n_items=args.items, seed=args.seed)
        result["synthetic"] = raw.attrs["synthetic"]
    config = size_config(args, "fedshare")
    with Stage(result, path, "prepare"):
        interactions = prepare(raw, config.data, config.run.seed)
        del raw
        gc.collect()
    with Stage(result, path, "mask"):
        mask = build_mask(interactions, config.sharing, config.run.seed)
    result.update(
        users=interactions.n_users,
        items=interactions.n_items,
        interactions=len(interactions.table),
        train_interactions=len(mask),
        shared_edges=int(mask["shared"].sum()),
    )
    log(
        f"[{result['label']}] {result['users']:,} users, {result['items']:,} items, "
        f"{result['train_interactions']:,} train interactions, {result['shared_edges']:,} shared"
    )

    with Stage(result, path, "build"):
        torch.manual_seed(config.run.seed)
        model, generator = build_model(config, interactions, mask, device)
    result["rss_mib"]["peak_before_rounds"] = peak_rss_mib()
    if device.type == "cuda":
        result["cuda_mib"] = {"after_build": torch.cuda.memory_allocated(device) / 2**20}
    result["rss_peak_reset"] = reset_peak_rss()
    result["load_average"]["rounds_start"] = load_average()
    busy_before, started = cpu_seconds(), time.perf_counter()

    with Stage(result, path, "warmup"):
        result["warmup_seconds"] = time_rounds(model, generator, 1, device)[0]
    with Stage(result, path, "rounds"):
        cpu_before = process_cpu_seconds()
        seconds = time_rounds(model, generator, args.rounds, device)
        cpu_per_round = (process_cpu_seconds() - cpu_before) / args.rounds
    result["fedshare"] = {**round_summary(seconds), "cpu_seconds_per_round": round(cpu_per_round, 3)}
    result["other_cpus_during_rounds"] = other_cpus(busy_before, time.perf_counter() - started)
    result["rss_mib"]["rounds_peak"] = proc_status_mib("VmHWM") if result["rss_peak_reset"] else None
    if device.type == "cuda":
        result["cuda_mib"]["fedshare_peak"] = torch.cuda.max_memory_allocated(device) / 2**20
    log(f"[{result['label']}] fedshare: {result['fedshare']['seconds_per_round']:.3f} s/round")
    del model
    gc.collect()

    if args.local_rounds > 0:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with Stage(result, path, "local"):
            local_config = size_config(args, "local")
            torch.manual_seed(local_config.run.seed)
            model, generator = build_model(local_config, interactions, mask, device)
            time_rounds(model, generator, 1, device)
            seconds = time_rounds(model, generator, args.local_rounds, device)
        result["local"] = round_summary(seconds)
        if device.type == "cuda":
            result["cuda_mib"]["local_peak"] = torch.cuda.max_memory_allocated(device) / 2**20
        log(f"[{result['label']}] local: {result['local']['seconds_per_round']:.3f} s/round")
    result["load_average"]["end"] = load_average()
    result["rss_mib"]["peak"] = peak_rss_mib()
    if device.type == "cuda":
        result["cuda_mib"]["peak"] = max(result["cuda_mib"]["fedshare_peak"], result["cuda_mib"].get("local_peak", 0))


def run_one_size(args: argparse.Namespace) -> int:
    n_users, mean = parse_size(args.one_size, args.mean)
    result = {
        "label": f"{n_users:,} users" + ("" if mean == args.mean else f" @ mean {mean:g}"),
        "users_requested": n_users,
        "mean_requested": mean,
        "in_fit": mean == args.mean,
        "status": "running",
        "stage_seconds": {},
        "rss_mib": {},
        "load_average": {"start": load_average()},
    }
    failure = None
    try:
        measure_size(args.one_size, args, result)
    except MemoryError:
        failure = "MemoryError (address-space limit reached)"
    except Exception as err:  # noqa: BLE001 - any failure of a size is a result, not a crash
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        failure = f"{type(err).__name__}: {first_line}"
    # The exception and its frames (holding the big arrays) are gone here, so writing the file can allocate.
    gc.collect()
    if failure is not None:
        result.update(status="failed", reason=f"{failure} during {result.get('stage')}")
        result["rss_mib"]["peak"] = peak_rss_mib()
        result["load_average"]["end"] = load_average()
        log(f"[{result['label']}] FAILED: {result['reason']}")
    else:
        result["status"] = "ok"
    save(result, args.result_file)
    return 0 if failure is None else 3


# -- parent: one child per size --------------------------------------------------------------------


def child_command(args: argparse.Namespace, spec: str, result_file: Path) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one-size",
        spec,
        "--result-file",
        str(result_file),
        "--mean",
        repr(args.mean),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
        "--rounds",
        str(args.rounds),
        "--local-rounds",
        str(args.local_rounds),
    ]
    if args.items is not None:
        command += ["--items", str(args.items)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    for override in args.overrides:
        command += ["--set", override]
    return command


def run_child(args: argparse.Namespace, spec: str) -> dict:
    """Run one size in a child process under the limits; return its result (or why it has none)."""
    n_users, mean = parse_size(spec, args.mean)
    limit_bytes = int(args.memory_limit_gib * 2**30) if args.memory_limit_gib > 0 else None
    use_rlimit = limit_bytes is not None and not args.device.startswith("cuda")

    def limit_address_space() -> None:  # runs in the child before it starts Python
        if use_rlimit:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        started, load_before = time.perf_counter(), load_average()
        child = subprocess.Popen(
            child_command(args, spec, result_file),
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=limit_address_space,
            start_new_session=True,
        )
        last_lines: list[str] = []
        relay = threading.Thread(target=relay_stderr, args=(child.stderr, last_lines), daemon=True)
        relay.start()
        killed = None
        while child.poll() is None:
            time.sleep(0.2)
            if time.perf_counter() - started > args.timeout:
                killed = f"timeout: killed after {args.timeout:.0f} s"
            elif limit_bytes is not None and not use_rlimit:
                rss = proc_status_mib("VmRSS", child.pid)
                if rss is not None and rss * 2**20 > limit_bytes:
                    killed = f"host RSS {rss:.0f} MiB passed the {args.memory_limit_gib:g} GiB limit: killed"
            if killed:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        seconds = time.perf_counter() - started
        relay.join(timeout=5)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            result = {
                "label": f"{n_users:,} users",
                "users_requested": n_users,
                "mean_requested": mean,
                "in_fit": mean == args.mean,
                "stage": "start",
                "stage_seconds": {},
                "rss_mib": {},
                "load_average": {},
            }
    result["child_seconds"] = round(seconds, 1)
    result["load_average"]["parent_before"] = load_before
    result["load_average"]["parent_after"] = load_average()
    if killed or result.get("status") != "ok":
        result["status"] = "failed"
        if killed:
            result["reason"] = f"{killed} during {result.get('stage')}"
        elif "reason" not in result:
            code = child.returncode
            why = (
                (
                    f"killed by signal {-code}"
                    + (" (SIGKILL: likely the kernel's out-of-memory killer)" if -code == signal.SIGKILL else "")
                )
                if code < 0
                else f"exit code {code}"
            )
            last = next((line for line in reversed(last_lines) if line.strip()), "")
            result["reason"] = f"child {why} during {result.get('stage')}" + (
                f" ({last.strip()[:300]})" if last else ""
            )
    return result


def relay_stderr(stream, last_lines: list[str]) -> None:
    """Pass the child's log through to ours, keeping its last lines for the reason of a crash."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        last_lines.append(line)
        del last_lines[:-5]


# -- growth fit and reports ------------------------------------------------------------------------


def power_fit(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """(exponent b, factor a) of y = a * x**b by least squares in log-log; None with fewer than 2 points."""
    if len(x) < 2 or len(set(x)) < 2:
        return None
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(b), float(math.exp(log_a))


def linear_fit(rows: list[dict], values: list[float]) -> dict | None:
    """value = fixed + per_interaction * E (+ per_user * U when the rows' E/U ratios differ), least squares.

    E = training interactions, U = users.  At a fixed mean E/U is constant, so a per-user term can only be
    told apart from a per-interaction term with a size at another mean (SIZE@MEAN).
    """
    if len({r["train_interactions"] for r in rows}) < 2:
        return None
    edges = np.array([r["train_interactions"] for r in rows], dtype=float)
    users = np.array([r["users"] for r in rows], dtype=float)
    ratios = {round(e / u, 3) for e, u in zip(edges, users)}
    with_users = len(rows) >= 3 and len(ratios) >= 2
    design = np.column_stack([np.ones_like(edges), edges] + ([users] if with_users else []))
    coefficients = np.linalg.lstsq(design, np.array(values, dtype=float), rcond=None)[0]
    fit = {"fixed": float(coefficients[0]), "per_interaction": float(coefficients[1])}
    if with_users:
        fit["per_user"] = float(coefficients[2])
    return fit


def predict(fit: dict, edges: float, users: float) -> float:
    return fit["fixed"] + fit["per_interaction"] * edges + fit.get("per_user", 0.0) * users


def growth(results: list[dict], limit_gib: float) -> dict:
    """How cost grows: power-law exponents over the main series, a linear cost model, extrapolations."""
    ok = [r for r in results if r["status"] == "ok"]
    series = [r for r in ok if r.get("in_fit", True)]
    out: dict = {"sizes_in_fit": [r["users"] for r in series]}
    if not ok:
        out["line"] = "No size finished, so there is nothing to fit."
        return out
    seconds = lambda rows: [r["fedshare"]["seconds_per_round"] for r in rows]  # noqa: E731
    peak = lambda rows: [r["rss_mib"]["rounds_peak"] or r["rss_mib"]["peak"] for r in rows]  # noqa: E731
    edges = [r["train_interactions"] for r in series]
    out["us_per_train_interaction"] = [round(1e6 * t / e, 3) for t, e in zip(seconds(series), edges)]
    # What a round needs beyond what is resident after the model build (data, model, optimizer state).
    out["round_extra_kib_per_train_interaction"] = [
        round((p - r["rss_mib"]["after_build"]) * 1024 / e, 2) for p, r, e in zip(peak(series), series, edges)
    ]
    powers = {
        "seconds_vs_interactions": power_fit(edges, seconds(series)),
        "seconds_vs_users": power_fit([r["users"] for r in series], seconds(series)),
        "rss_vs_interactions": power_fit(edges, peak(series)),
        "rss_vs_users": power_fit([r["users"] for r in series], peak(series)),
    }
    out.update(
        {name: ({"exponent": round(fit[0], 3), "factor": fit[1]} if fit else None) for name, fit in powers.items()}
    )
    time_fit, rss_fit = linear_fit(ok, seconds(ok)), linear_fit(ok, peak(ok))
    out["linear_seconds"], out["linear_rss_mib"] = time_fit, rss_fit
    parts = []
    if powers["seconds_vs_interactions"] is not None:
        n = len(series)
        span = (
            f"{min(out['sizes_in_fit']):,}-{max(out['sizes_in_fit']):,} users at mean {series[0]['mean_requested']:g}, "
            f"{n} sizes" + (", i.e. an exponent from two points" if n == 2 else "")
        )
        parts.append(
            f"Power-law fit ({span}): seconds per fedshare round ~ (training interactions)^"
            f"{powers['seconds_vs_interactions'][0]:.2f}, peak RSS of the rounds ~ ^"
            f"{powers['rss_vs_interactions'][0]:.2f}."
        )
    else:
        parts.append(
            f"Only one size of the main series finished: {out['us_per_train_interaction'][0]} µs per training "
            "interaction per round; no exponent from one point."
            if series
            else "No size of the main series finished."
        )
    if time_fit and rss_fit:

        def users_part(fit: dict, scale: float, unit: str) -> str:
            return f" + {fit['per_user'] * scale:.2f} {unit} per user" if "per_user" in fit else ""

        parts.append(
            f"Linear cost model over the {len(ok)} finished sizes: a round takes "
            f"{time_fit['fixed']:.2f} s + {time_fit['per_interaction'] * 1e6:.2f} µs per training interaction"
            f"{users_part(time_fit, 1e6, 'µs')}, and its peak RSS is {rss_fit['fixed']:.0f} MiB + "
            f"{rss_fit['per_interaction'] * 1024:.2f} KiB per training interaction"
            f"{users_part(rss_fit, 1024, 'KiB')}: exponents below 1 come from the fixed part (Python and "
            "torch, per-round overheads); beyond it the cost grows linearly with the interactions"
            + (
                " (as many sizes as coefficients: an exact fit, as noisy as the timings)."
                if len(ok) == len(time_fit)
                else "."
            )
        )
    train_share = np.mean([r["train_interactions"] / (r["users"] * r["mean_requested"]) for r in ok])
    for r in results:
        if r["status"] == "ok" or not (time_fit and rss_fit):
            continue
        n_users = r.get("users", r["users_requested"])
        n_edges = r.get("train_interactions", n_users * r["mean_requested"] * train_share)
        seconds_at, rss_at = predict(time_fit, n_edges, n_users), predict(rss_fit, n_edges, n_users) / 1024
        r["extrapolated"] = {
            "seconds_per_round": round(seconds_at, 1),
            "rounds_peak_rss_gib": round(rss_at, 1),
            "train_interactions": int(n_edges),
        }
        parts.append(
            f"{n_users:,} users at mean {r['mean_requested']:g} ({int(n_edges):,} training interactions) "
            f"failed ({short_reason(r['reason'])}, during {r.get('stage')}); the linear model predicts about "
            f"{seconds_at:.0f} s/round and {rss_at:.0f} GiB of peak RSS, against the {limit_gib:g} GiB limit."
        )
    out["line"] = " ".join(parts)
    return out


COLUMNS = (
    "users",
    "mean/user",
    "items",
    "train interactions",
    "shared edges",
    "data + build s",
    "fedshare s/round (min)",
    "fedshare CPU s/round",
    "local s/round",
    "µs per train interaction",
    "RSS before rounds MiB (now / peak)",
    "RSS peak in rounds MiB",
    "peak RSS MiB",
    "peak CUDA MiB",
    "load avg 1 min (start → end of rounds)",
    "status",
)


def fmt(value, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table_row(r: dict, cuda: bool) -> list[str]:
    rss, synthetic = r.get("rss_mib", {}), r.get("synthetic", {})
    prep = sum(r.get("stage_seconds", {}).get(s, 0.0) for s in ("generate", "prepare", "mask", "build"))
    fed, local = r.get("fedshare"), r.get("local")
    users = r.get("users", r["users_requested"])
    per_edge = 1e6 * fed["seconds_per_round"] / r["train_interactions"] if fed else None
    load = r.get("load_average", {})
    start = (load.get("rounds_start") or load.get("start") or [None])[0]
    end = (load.get("end") or load.get("parent_after") or [None])[0]
    status = "ok" if r["status"] == "ok" else f"**failed**: {short_reason(r['reason'])} (during {r.get('stage')})"
    if not r.get("in_fit", True):
        status += " (off the main mean: not in the fit)"
    return [
        f"{users:,}",
        fmt(synthetic.get("actual_mean", r["mean_requested"]), ".1f"),
        fmt(r.get("items")),
        fmt(r.get("train_interactions")),
        fmt(r.get("shared_edges")),
        fmt(prep or None, ".1f"),
        f"{fmt(fed and fed['seconds_per_round'], '.3f')}" + (f" ({fed['min_seconds']:.3f})" if fed else ""),
        fmt(fed and fed.get("cpu_seconds_per_round"), ".2f"),
        fmt(local and local["seconds_per_round"], ".3f"),
        fmt(per_edge, ".2f"),
        f"{fmt(rss.get('after_build'))} / {fmt(rss.get('peak_before_rounds'))}",
        fmt(rss.get("rounds_peak")),
        fmt(rss.get("peak")),
        fmt(r.get("cuda_mib", {}).get("peak")) if cuda else "not measured yet (CPU run)",
        f"{fmt(start, '.2f')} → {fmt(end, '.2f')}"
        + (
            f" (others: {r['other_cpus_during_rounds']:.2f} CPUs)"
            if r.get("other_cpus_during_rounds") is not None
            else ""
        ),
        status,
    ]


def markdown_report(report: dict) -> str:
    cuda = report["machine"]["device"].startswith("cuda")
    s, load = report["settings"], report["load_average"]
    first = lambda values: values[0] if values else None  # noqa: E731
    lines = markdown_table(COLUMNS, [table_row(r, cuda) for r in report["results"]])
    lines += [
        "",
        f"**How cost grows:** {report['growth']['line']}",
        "",
        f"Synthetic data (fedshare/data/synthetic.py, seed {s['seed']}): power-law user activity (Lomax tail "
        f"index 2, at least 3 per user) at a mean of {s['mean']:g} interactions per user, Zipf item "
        f"popularity (exponent 1), 16 taste clusters; catalogue {s['items']}.  Default data split "
        "(80/10/10 per user), sharing policy mixed, method fedshare, every other setting from params.yaml"
        + (f" with {', '.join(s['overrides'])}" if s["overrides"] else "")
        + ".",
        f"Seconds are the mean of {s['rounds']} timed rounds after 1 warm-up round ({s['local_rounds']} local "
        "round(s) after 1 warm-up); 'data + build s' = generate + prepare + mask + model build.  "
        "µs per train interaction = fedshare s/round / train interactions; CPU s/round = user + system time of "
        "the process per round (less sensitive to other jobs than wall time, though waiting threads spin).  "
        "Failed sizes: the whole reason is in the JSON.",
        "Memory: each size ran in its own child process"
        + (
            f" under a {s['memory_limit_gib']:g} GiB "
            + ("address-space limit (RLIMIT_AS)" if not cuda else "host-RSS limit")
            if s["memory_limit_gib"]
            else ""
        )
        + f" and a {s['timeout']:g} s time limit.  'now' = resident after the model build, 'peak' = ru_maxrss up "
        "to then (the data preparation); 'RSS peak in rounds' = VmHWM reset just before the warm-up round "
        "(training alone); 'peak RSS' = ru_maxrss of the whole child.",
        "GPU: "
        + (
            "torch.cuda.max_memory_allocated over the fedshare and local rounds."
            if cuda
            else "not measured yet; run `python bench/scaling.py --device cuda` on a GPU machine "
            "(writes bench/results/scaling_cuda.json/.md)."
        ),
        f"Load average (1 min) {fmt(first(load['before']), '.2f')} before and {fmt(first(load['after']), '.2f')}"
        f" after the run on {report['machine']['cpu_count']} CPUs (other jobs may share the machine: "
        "per size, the table gives it at the start and end of its rounds, and how many CPUs other processes "
        "kept busy during the timed rounds; above the CPU count, timings are inflated).",
        *report_footer(report["machine"], report["command"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if args.one_size is not None:
        return run_one_size(args)
    device_or_exit(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, started = load_average(), time.perf_counter()
    results = []
    for spec in args.users:
        log(f"== {spec} users (mean {parse_size(spec, args.mean)[1]:g}), load average {load_average()}")
        results.append(run_child(args, spec))
    items_rule = (
        f"{args.items:,} items"
        if args.items is not None
        else f"max(1000, users // 20) items (e.g. {default_n_items(1_000_000):,} for 1M users)"
    )
    report = {
        "command": command_line(__file__),
        "machine": machine_facts(args.device),
        "settings": {
            "mean": args.mean,
            "items": items_rule,
            "seed": args.seed,
            "rounds": args.rounds,
            "local_rounds": args.local_rounds,
            "memory_limit_gib": args.memory_limit_gib,
            "timeout": args.timeout,
            "overrides": args.overrides,
            "method": "fedshare",
            "sharing_policy": "mixed",
        },
        "load_average": {"before": load_before, "after": load_average()},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    report["growth"] = growth(results, args.memory_limit_gib)
    if not args.device.startswith("cuda"):
        report["gpu"] = "not measured yet"
    markdown = markdown_report(report)
    publish(markdown, report, args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
