"""Time per round of the local backend and of the Ray backend (1, 2 shards) on ML-100K, the bytes each
shard sends and receives per round, and how those bytes grow with users, items and d.

    FEDSHARE_DATA_DIR=/work/shared/data .venv/bin/python bench/ray_overhead.py --rounds 5 \
        --out bench/results/ray_overhead.json

Every configuration trains the same model with ``federated.sampler=counter`` from the same seed; the
Ray runs are checked to end in the same server state as the local one.  One local Ray instance with
``--cpus`` CPUs (default 2) is started and stopped.  The first round of a Ray configuration also
starts its actors: it is reported apart (``startup_s``) and not in the per-round times.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.common, fedshare

import torch  # noqa: E402

from bench.common import load_average, machine_facts, machine_line, random_interactions, write_json  # noqa: E402
from fedshare.config import SharingConfig, load_config  # noqa: E402
from fedshare.data.interactions import load_interactions, prepare  # noqa: E402
from fedshare.data.sharing import build_mask  # noqa: E402
from fedshare.federated.aggregation import pick_participants  # noqa: E402
from fedshare.federated.client import client_updates  # noqa: E402
from fedshare.federated.messages import Upload  # noqa: E402
from fedshare.federated.simulation import build_model  # noqa: E402


def timed_round(model, generator) -> dict[str, float]:
    """``federated.round.run_round`` with a clock on each part (same calls, same order)."""
    config = model.config
    t0 = time.perf_counter()
    global_users, global_items = model.server.propagate()
    broadcast = model.server.broadcast(global_users, global_items)
    participants = pick_participants(model.clients, config.federated.client_fraction, generator)
    t1 = time.perf_counter()
    if model.backend is not None:
        upload = model.backend.client_round(model, broadcast, participants, generator)
    else:
        upload = Upload(
            client_updates(model.clients, broadcast, participants, config.model, config.federated, generator)
        )
    t2 = time.perf_counter()
    weight = config.model.contrastive_weight if model.method == "fedshare" else 0.0
    model.server.step(upload, global_users, global_items, weight)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "server": (t1 - t0) + (t3 - t2), "clients": t2 - t1}


def run(config, interactions, mask, rounds: int) -> dict:
    model, generator = build_model(config, interactions, mask, torch.device("cpu"))
    started = time.perf_counter()
    first = timed_round(model, generator)  # Ray: includes starting the actors
    startup = time.perf_counter() - started
    times = [timed_round(model, generator) for _ in range(rounds)]
    out = {
        "round_s": statistics.median(t["total"] for t in times),
        "round_s_min": min(t["total"] for t in times),
        "client_step_s": statistics.median(t["clients"] for t in times),
        "server_s": statistics.median(t["server"] for t in times),
        "first_round_s": first["total"],
        "startup_s": startup - first["server"],
    }
    if model.backend is not None:
        out["shard_bytes"] = model.backend.shard_bytes
        out["restarts"] = model.backend.restarts
        model.backend.close()
    out["state"] = model.server.state()
    return out


def byte_growth(base_overrides: list[str]) -> list[dict]:
    """Bytes per shard and round (2 shards) on synthetic data, varying users, items and d one at a time."""
    rows = []
    for n_users, n_items, dim in [(400, 500, 16), (1600, 500, 16), (400, 2000, 16), (400, 500, 64)]:
        config = load_config(None, base_overrides + [f"model.dim={dim}", "run.backend=ray", "run.shards=2"])
        data = prepare(random_interactions(n_users, n_items, 20, rating=5), config.data, seed=0)
        mask = build_mask(data, SharingConfig(policy="mixed"), seed=0)
        model, generator = build_model(config, data, mask, torch.device("cpu"))
        timed_round(model, generator)
        sharing = int(model.clients.shares.sum())
        shard = model.backend.shard_bytes
        rows.append(
            {
                "users": n_users,
                "items": data.n_items,
                "dim": dim,
                "sharing_users": sharing,
                "down_per_shard": [b["down"] for b in shard],
                "up_per_shard": [b["up"] for b in shard],
                "checkpoint_per_shard": [b["checkpoint"] for b in shard],
                "formula_down_total": 2 * 2 * 4 * data.n_items * dim + 4 * dim * sharing + 2 * 16,
                "formula_up": 4 * data.n_items * dim,
            }
        )
        model.backend.close()
    return rows


def framing_overhead(n_items: int, dim: int, sharing: int) -> dict:
    """Pickled size of one shard's round arguments against their payload bytes."""
    args = (torch.zeros(n_items, dim), torch.zeros(n_items, dim), torch.zeros(sharing, dim), None, 123, 456)
    payload = 4 * (2 * n_items * dim + sharing * dim) + 16
    return {"payload": payload, "pickled": len(pickle.dumps(args, protocol=5))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the driver (the actors get 1 each)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--out", default="bench/results/ray_overhead.json")
    args = parser.parse_args()
    import ray

    torch.set_num_threads(args.threads)
    load_before = load_average()
    base = ["federated.sampler=counter", "tracking.enabled=false"]
    config = load_config(None, base)
    interactions = load_interactions(config.data, config.run.seed)
    mask = build_mask(interactions, config.sharing, config.run.seed)
    ray.init(
        address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    results = {}
    try:
        for name, overrides in [
            ("local (stream sampler)", ["federated.sampler=stream"]),
            ("local", []),
            ("ray, 1 shard", ["run.backend=ray", "run.shards=1"]),
            ("ray, 2 shards", ["run.backend=ray", "run.shards=2"]),
        ]:
            cfg = load_config(None, base + overrides)
            results[name] = run(cfg, interactions, mask, args.rounds)
            print(name, {k: v for k, v in results[name].items() if k not in ("state", "shard_bytes")}, flush=True)
        reference = results["local"]["state"]
        for name in ("ray, 1 shard", "ray, 2 shards"):
            state = results[name]["state"]
            results[name]["max_abs_diff_vs_local"] = max(float((state[k] - reference[k]).abs().max()) for k in state)
        growth = byte_growth(base + ["federated.rounds=1"])
    finally:
        ray.shutdown()
    load_after = load_average()
    for value in results.values():
        value.pop("state")
    sharing = int(build_model(config, interactions, mask, torch.device("cpu"))[0].clients.shares.sum())
    report = {
        "dataset": "ml-100k",
        "n_users": interactions.n_users,
        "n_items": interactions.n_items,
        "n_train": int((interactions.table["split"] == "train").sum()),
        "dim": config.model.dim,
        "sharing_users": sharing,
        "rounds_timed": args.rounds,
        "driver_threads": args.threads,
        "ray_cpus": args.cpus,
        "machine": f"{machine_line(machine_facts('cpu'))}, ray {ray.__version__}",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": results,
        "byte_growth": growth,
        "framing": framing_overhead(interactions.n_items, config.model.dim, sharing // 2),
    }
    write_json(args.out, report, indent=1)
    print(f"wrote {args.out}; load average {load_before} -> {load_after}")


if __name__ == "__main__":
    main()
