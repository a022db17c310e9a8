"""Probe (2026-12-01, rejected): the server's LightGCN takes the federated item table Q as its item layer 0.

Then the BPR loss on shared edges also trains Q, which every user (private ones too) scores with.
    FEDSHARE_DATA_DIR=../shared/data python bench/results/tied_views_2026-12-01/tied.py tied 0
    FEDSHARE_DATA_DIR=../shared/data python bench/results/tied_views_2026-12-01/tied.py default 0
prints one JSON line: best round, validation and test Recall@20 (ML-100K, mixed, default params).
"""
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
torch.set_num_threads(1)
import fedshare.federated as fed  # noqa: E402
from fedshare.config import load_config  # noqa: E402
from fedshare.data import load_interactions  # noqa: E402
from fedshare.models import lightgcn  # noqa: E402
from fedshare.sharing import build_mask  # noqa: E402
from fedshare.training import evaluate, train  # noqa: E402

mode, seed, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if mode == "tied":
    def propagate(self):
        if not self.use_graph:
            return None, None
        return lightgcn(self.graph_users, self.item_table, self.adjacency, self.model.server_layers)
    fed.Server.propagate = propagate
config = load_config(REPO / "params.yaml", ["data.dataset=ml-100k", f"data.data_dir={os.environ['FEDSHARE_DATA_DIR']}",
                                             f"run.seed={seed}", "sharing.policy=mixed", "tracking.enabled=false", *extra])
interactions = load_interactions(config.data, seed)
mask = build_mask(interactions, config.sharing, seed)
result = train(config, interactions, mask, progress=False)
test = evaluate(result.model, interactions, "test")
print(json.dumps({"mode": mode, "seed": seed, "extra": extra, "best_round": result.best_round,
                  "valid": round(result.best_validation["recall@20"], 4), "test": round(test["recall@20"], 4),
                  "seconds": round(result.seconds)}))
