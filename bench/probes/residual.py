"""Probe: the server's global view trained as a residual of the local view, or any params.yaml variant.

One FedShare training (ML-100K, sharing mixed, params.yaml defaults), then one JSON line: best round,
validation and test Recall@20, test NDCG@20, seconds.

``default`` trains FedShare as it is; extra KEY=VALUE arguments are config overrides.  The client
encoder comparison of docs/results.md (section 1) ran
    FEDSHARE_DATA_DIR=../shared/data python bench/probes/residual.py default SEED \
        model.client_encoder=ego_lightgcn run.method=fedshare|local

``residual`` changes the server's BPR on a shared edge (u, i, j) to score the *sum* the user is ranked by,
    softplus(-[(l_ui - l_uj) + w_u (<g_u,g_i> - <g_u,g_j>)]),  l = <p_u, q_i> detached,
so that the graph learns what the local view gets wrong on shared data instead of refitting what the
local view already knows (``residual-unweighted``: w_u = 1).  Each sharing client would upload the local
scores l_ui, l_uj of its shared pairs; the probe reads them from the simulated client store.
    FEDSHARE_DATA_DIR=../shared/data python bench/probes/residual.py residual 0

PROBE_DATASET=ml-1m picks another dataset.  Output of 2026-12-01: bench/results/residual_2026-12-01/.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
torch.set_num_threads(1)
import fedshare.training as training  # noqa: E402
from fedshare.config import load_config  # noqa: E402
from fedshare.data.interactions import load_interactions  # noqa: E402
from fedshare.data.sharing import build_mask  # noqa: E402
from fedshare.evaluation import evaluate  # noqa: E402
from fedshare.federated.server import Server  # noqa: E402
from fedshare.model.losses import weighted_square_norm  # noqa: E402
from fedshare.model.sampling import sample_negatives  # noqa: E402
from fedshare.training import train  # noqa: E402


def residual_training(weighted: bool) -> None:
    """Patch the server's graph loss (and hand it the client store) for the residual variant."""
    original_build = training.build_model

    def build_model(*args, **kwargs):
        model, generator = original_build(*args, **kwargs)
        model.server.probe_clients = model.clients  # the simulator's handle: stands for the uploaded scores
        return model, generator

    def graph_bpr_loss(self, global_users, global_items, edges=None):
        users, items = self.graph.users, self.graph.items
        if edges is not None:
            users, items = users[edges], items[edges]
        negatives = sample_negatives(users, self.graph.n_items, 1, self.shared_keys, self.generator)[:, 0]
        clients = self.probe_clients
        with torch.no_grad():  # the local scores a client would upload for its shared pairs
            local_user = clients.user_emb[users]
            q = self.item_table.detach()
            local_margin = (local_user * (q[items] - q[negatives])).sum(1)
            weight = clients.shares[users] if weighted else torch.ones_like(local_margin)
        g_u = global_users[users]
        global_margin = (g_u * (global_items[items] - global_items[negatives])).sum(1)
        loss = F.softplus(-(local_margin + weight * global_margin)).mean()
        l2 = (
            weighted_square_norm(self.graph_users, users)
            + weighted_square_norm(self.graph_items, items)
            + weighted_square_norm(self.graph_items, negatives)
        ) / (2 * users.numel())
        return loss + self.model.server_l2 * l2

    training.build_model = build_model
    Server.graph_bpr_loss = graph_bpr_loss


def main() -> None:
    mode, seed, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    dataset = os.environ.get("PROBE_DATASET", "ml-100k")
    if mode.startswith("residual"):
        residual_training(weighted=mode != "residual-unweighted")
    elif mode != "default":
        sys.exit(f"unknown mode {mode!r}: default, residual or residual-unweighted")
    config = load_config(
        REPO / "params.yaml",
        [
            f"data.dataset={dataset}",
            f"data.data_dir={os.environ['FEDSHARE_DATA_DIR']}",
            f"run.seed={seed}",
            "sharing.policy=mixed",
            "tracking.enabled=false",
            *extra,
        ],
    )
    interactions = load_interactions(config.data, seed)
    mask = build_mask(interactions, config.sharing, seed)
    result = train(config, interactions, mask, progress=False)
    test = evaluate(result.model, interactions, "test")
    print(
        json.dumps(
            {
                "mode": mode,
                "seed": seed,
                "dataset": dataset,
                "extra": extra,
                "best_round": result.best_round,
                "valid": round(result.best_validation["recall@20"], 4),
                "test": round(test["recall@20"], 4),
                "test_ndcg20": round(test["ndcg@20"], 4),
                "seconds": round(result.seconds),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
