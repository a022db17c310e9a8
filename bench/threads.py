"""Thread-policy benchmark: the same short ML-100K training under each thread setting, idle and under load.

Each measurement is one `fedshare train` subprocess (40 rounds, ML-100K, seed 0); its training
seconds come from the run's metrics.json.  "Under load" starts one busy process per ``--busy``
(a pure-Python spin loop, like another user's job) and waits until the 1-minute load average shows
it, since that is what the policy reads.

    python bench/threads.py --data-dir ../shared/data --json bench/results/threads.json \
        --markdown bench/results/threads.md

Settings: torch's own choice (one thread per core, `FEDSHARE_THREADS` set to the core count),
one thread, every core with `OMP_WAIT_POLICY=PASSIVE`, and the policy of `fedshare/threads.py`
(nothing set: the free cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

from bench.common import REPO, command_line, markdown_table, publish  # noqa: E402
from fedshare.threads import usable_cores  # noqa: E402

SPIN = "while True: pass"


def settings(cores: int) -> dict[str, dict[str, str]]:
    return {
        f"{cores} threads (torch's default)": {"FEDSHARE_THREADS": str(cores)},
        "1 thread": {"FEDSHARE_THREADS": "1"},
        f"{cores} threads, OMP_WAIT_POLICY=PASSIVE": {"FEDSHARE_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"},
        "policy (free cores)": {},
    }


def train_seconds(extra_env: dict[str, str], data_dir: str | None, rounds: int) -> float:
    inherited = ("FEDSHARE_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")  # only the setting under test counts
    env = {key: value for key, value in os.environ.items() if key not in inherited} | extra_env
    with tempfile.TemporaryDirectory(prefix="fedshare-threads-") as out:
        command = [
            str(Path(sys.executable).parent / "fedshare"),
            "train",
            "--dataset",
            "ml-100k",
            "--rounds",
            str(rounds),
            "--quiet",
            "--set",
            "tracking.enabled=false",
            "--set",
            f"eval.every={rounds}",
            "--out",
            out,
        ]
        if data_dir:
            command += ["--data-dir", data_dir]
        subprocess.run(command, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        return json.loads((Path(out) / "metrics.json").read_text())["seconds"]


def wait_for_load(target: float, limit_s: float = 90.0) -> float:
    started = time.time()
    while os.getloadavg()[0] < target and time.time() - started < limit_s:
        time.sleep(2)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("FEDSHARE_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--busy", type=int, default=1, help="busy processes for the loaded case")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per cell (the minimum is reported)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    cores = usable_cores()
    results: dict[str, dict[str, float]] = {}
    for load in ("idle", "loaded"):
        spinners = []
        if load == "loaded":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
            wait_for_load(args.busy - 0.4)
        try:
            for name, env in settings(cores).items():
                load_now = os.getloadavg()[0]
                seconds = min(train_seconds(env, args.data_dir, args.rounds) for _ in range(args.repeats))
                results.setdefault(name, {})[load] = seconds
                results[name][f"{load} load average"] = load_now
                print(f"{load:6s} {name:45s} {seconds:6.1f} s (load average {load_now:.1f})", flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    rows = [[name, f"{cell['idle']:.1f}", f"{cell['loaded']:.1f}"] for name, cell in results.items()]
    text = "\n".join(
        [
            f"# Thread policy: {args.rounds}-round ML-100K training, seconds (minimum of {args.repeats})",
            "",
            *markdown_table(["setting", "idle", f"{args.busy} busy process(es)"], rows),
            "",
            f"Command: `{command_line('bench/threads.py')}`, {cores} usable cores.",
        ]
    )
    publish(text, results, args.json, args.markdown)


if __name__ == "__main__":
    main()
