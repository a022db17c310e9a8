"""Probe: where a fedshare round's time goes (clients, server step, BPR, LightGCN, negatives) on synthetic users.

    python bench/probes/round_phases.py 1000000        # users (mean 20 per user, as bench/scaling.py)

Builds the scaling benchmark's model for that many users (one thread), runs one warm-up round, then
two timed rounds, and prints seconds per round spent inside each wrapped function (inclusive: the
clients' ``client_updates`` contains their ``local_training``).  Output of 2026-12-01 at 1M users:
bench/results/speed_closed_form_2026-12-01/phases_1m.log.
"""

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
torch.set_num_threads(1)
import fedshare.federated.client as client  # noqa: E402
import fedshare.federated.round as round_module  # noqa: E402
import fedshare.federated.server as server  # noqa: E402
from bench.scaling import size_config  # noqa: E402
from fedshare.data.interactions import prepare  # noqa: E402
from fedshare.data.sharing import build_mask  # noqa: E402
from fedshare.data.synthetic import generate  # noqa: E402
from fedshare.federated.round import run_round  # noqa: E402
from fedshare.federated.simulation import build_model  # noqa: E402

SECONDS: collections.defaultdict[str, float] = collections.defaultdict(float)


def wrap(owner, name: str, label: str | None = None) -> None:
    """Replace ``owner.name`` by a version that adds its wall time to SECONDS[label or name]."""
    function = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[label or name] += time.perf_counter() - start

    setattr(owner, name, timed)


def main() -> None:
    n_users = int(sys.argv[1])
    for module, name in [
        (client, "local_training"),
        (client, "make_batch"),
        (client, "sample_negatives"),
        (client, "weighted_square_norm"),
        (server, "chunked_mean_bpr"),
        (server, "sample_negatives"),
        (server, "weighted_square_norm"),
        (server, "lightgcn"),
        (round_module, "client_updates"),
    ]:
        wrap(module, name)
    wrap(server.Server, "step", "server.step")
    args = argparse.Namespace(device="cpu", overrides=[], seed=0, items=None, mean=20.0, rounds=3, threads=1)
    config = size_config(args, "fedshare")
    interactions = prepare(generate(n_users, mean_per_user=20, seed=0), config.data, 0)
    mask = build_mask(interactions, config.sharing, 0)
    model, generator = build_model(config, interactions, mask, torch.device("cpu"))
    run_round(model, generator)
    SECONDS.clear()
    rounds, start = 2, time.perf_counter()
    for _ in range(rounds):
        run_round(model, generator)
    print(f"round {(time.perf_counter() - start) / rounds:.3f}")
    for name, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        print(f"  {name:22s} {seconds / rounds:.3f}")


if __name__ == "__main__":
    main()
