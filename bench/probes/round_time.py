"""Probe: median seconds per fedshare round (mixed, seed 0, params.yaml defaults) of the fedshare in the current folder.

    FEDSHARE_DATA_DIR=../shared/data python bench/probes/round_time.py ml-100k 20 [KEY=VALUE ...]

Arguments: dataset, timed rounds (after one warm-up), config overrides.  It imports fedshare and
bench/speed.py from the current folder, so ``cd OLD_CHECKOUT && PYTHONPATH=. python
NEW_CHECKOUT/bench/probes/round_time.py ...`` times an older commit (bench/probes/ab_rounds.sh does
this in alternating pairs); checkouts from before the subpackage layout are read too.
MALLOPT=1 first asks glibc to keep freed memory instead of returning it to the kernel.
"""

import ctypes
import os
import resource
import statistics
import sys
import time

if os.environ.get("MALLOPT"):
    libc = ctypes.CDLL("libc.so.6")
    print(
        "mallopt", libc.mallopt(-3, 32 * 1024 * 1024), libc.mallopt(-1, 1 << 30)
    )  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD

import torch  # noqa: E402

sys.path.insert(0, ".")
from bench.speed import benchmark_config  # noqa: E402

try:
    from fedshare.data.interactions import load_interactions
    from fedshare.data.sharing import build_mask
    from fedshare.federated.round import run_round
    from fedshare.federated.simulation import build_model
except ImportError:  # a checkout with the flat layout (before the subpackages)
    from fedshare.data import load_interactions
    from fedshare.sharing import build_mask
    from fedshare.training import build_model, run_round


def main() -> None:
    dataset, rounds = sys.argv[1], int(sys.argv[2])
    config = benchmark_config(dataset, "fedshare", "cpu", os.environ["FEDSHARE_DATA_DIR"], sys.argv[3:])
    interactions = load_interactions(config.data, 0)
    mask = build_mask(interactions, config.sharing, 0)
    model, generator = build_model(config, interactions, mask, torch.device("cpu"))
    run_round(model, generator)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        run_round(model, generator)
        seconds.append(time.perf_counter() - start)
    print(
        dataset,
        f"median s/round {statistics.median(seconds):.4f} min {min(seconds):.4f}",
        "maxrss MiB",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    )


if __name__ == "__main__":
    main()
