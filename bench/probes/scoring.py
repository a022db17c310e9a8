"""Probe: other ways to combine FedShare's two views at scoring time, post hoc on trained runs (no training).

FedShare scores s(u,i) = <h_u, q_i> + rho_u <g_u, g_i> (docs/method.md).  With the contrastive term
off the two views are trained apart, so the combination can be changed after training.  This script
loads trained fedshare runs and scores validation and test with:

* the global view's weight: c * rho_u, c * sqrt(rho_u), c * [rho_u > 0];
* a device-built global-view user vector: a user who shares nothing gets no global view, yet each
  device knows all its own items and receives the global item vectors g_i, so it could use
  e_u = mean_i g_i (or sum_i g_i / sqrt(n_u)) over *all* its items without sending anything; added
  at weight a (1 - rho_u), or a for everyone.

    python bench/probes/scoring.py bench/out/runs-p30/ml-100k-fedshare-mixed-seed0 ...-seed1 ...-seed2

On Gowalla, validate on the run's own seeded user subset (eval.valid_users) and keep a few variants:

    python bench/probes/scoring.py --subset --only default mean RUN ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from fedshare.evaluation import evaluate, validation_users  # noqa: E402
from fedshare.rundir import load_run  # noqa: E402


class FixedVectors:
    """Stands in for a Model in ``evaluate``: fixed scoring vectors and the run's config."""

    def __init__(self, config, user_vectors: torch.Tensor, item_vectors: torch.Tensor):
        self.config, self.vectors = config, (user_vectors, item_vectors)

    def scoring_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vectors


def variants(model, interactions) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    with torch.no_grad():
        local_users, local_items = model.local_user_vectors(), model.server.item_table
        global_users, global_items = model.server.propagate()
        rho = model.clients.shares.float().unsqueeze(1)
        train = interactions.table[interactions.table["split"] == "train"]
        users, items = torch.tensor(train["user"].to_numpy()), torch.tensor(train["item"].to_numpy())
        counts = torch.bincount(users, minlength=interactions.n_users).clamp(min=1).float().unsqueeze(1)
        summed = torch.zeros_like(global_users).index_add_(0, users, global_items[items])
        ego_mean, ego_sqrt = summed / counts, summed / counts.sqrt()
        both_views = torch.cat([local_items, global_items], 1)
        out = {"default (c=1)": (torch.cat([local_users, rho * global_users], 1), both_views)}
        for name, weight in [
            *((f"weight {c} rho", c * rho) for c in (0.5, 1.5, 2.0, 3.0)),
            *((f"weight {c} sqrt(rho)", c * rho.sqrt()) for c in (0.5, 1.0, 1.5)),
            *((f"weight {c} [rho>0]", c * (rho > 0).float()) for c in (0.5, 1.0)),
        ]:
            out[name] = (torch.cat([local_users, weight * global_users], 1), both_views)
        both_items = torch.cat([local_items, global_items, global_items], 1)
        for a in (0.25, 0.5, 1.0, 2.0):
            out[f"mean, a(1-rho), a={a}"] = (
                torch.cat([local_users, rho * global_users, a * (1 - rho) * ego_mean], 1),
                both_items,
            )
            out[f"mean, a for all, a={a}"] = (torch.cat([local_users, a * ego_mean], 1), both_views)
        for a in (0.1, 0.25):
            out[f"sqrt, a(1-rho), a={a}"] = (
                torch.cat([local_users, rho * global_users, a * (1 - rho) * ego_sqrt], 1),
                both_items,
            )
    return out


def main(run_dirs: list[str], subset: bool = False, only: list[str] | None = None) -> None:
    scores: dict[str, list[tuple[float, float]]] = {}
    for run_dir in run_dirs:
        config, interactions, _, model = load_run(run_dir)
        users = validation_users(interactions, config.eval.valid_users, config.run.seed) if subset else None
        for name, (user_vectors, item_vectors) in variants(model, interactions).items():
            if only and not any(word in name for word in only):
                continue
            fixed = FixedVectors(config, user_vectors, item_vectors)
            scores.setdefault(name, []).append(
                (
                    evaluate(fixed, interactions, "valid", users=users)["recall@20"],
                    evaluate(fixed, interactions, "test")["recall@20"],
                )
            )
            print(f"{run_dir}: {name:24s} valid {scores[name][-1][0]:.4f}  test {scores[name][-1][1]:.4f}", flush=True)
    print(f"{len(run_dirs)} runs; Recall@20 means (validation decides)")
    for name, values in scores.items():
        array = np.array(values)
        print(f"{name:24s} valid {array[:, 0].mean():.4f}  test {array[:, 1].mean():.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="fedshare run directories")
    parser.add_argument("--subset", action="store_true", help="validate on the run's eval.valid_users subset")
    parser.add_argument("--only", nargs="+", help="keep the variants whose name contains one of these words")
    args = parser.parse_args()
    main(args.runs, args.subset, args.only)
