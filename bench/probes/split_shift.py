"""Probe: does the validation carve look like the published test set?  (Gowalla, LightGCN layout)

The `central` LightGCN's validation Recall@20 kept rising while its test Recall@20 did not move
(docs/results.md, section 0).  This probe asks whether the two held-out sets reward different
things, with no model at all: for each held-out set (validation carved from `train.txt` by
`fedshare.data`, seeded; the published `test.txt`) it reports how popular its items are in the
training part, and what a popularity ranking scores on it (full ranking, the same masking as the
project's evaluation: train items for validation, train and validation items for test).

    .venv/bin/python bench/probes/split_shift.py --data-dir ../shared/data --markdown OUT.md

Reads only the local files; never downloads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedshare.config import load_config  # noqa: E402
from fedshare.data.interactions import load_interactions  # noqa: E402
from fedshare.evaluation import rank_metrics  # noqa: E402


def popularity_recall(train, held_out, masked, n_items: int) -> dict[str, float]:
    """Recall@20 and NDCG@20 of ranking every user's unseen items by their training degree."""
    degree = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float32)
    item_vectors = torch.tensor(degree).unsqueeze(1)
    user_vectors = torch.ones(int(held_out["user"].max()) + 1, 1)
    per_user = rank_metrics(
        user_vectors,
        item_vectors,
        held_out["user"].to_numpy(),
        held_out["item"].to_numpy(),
        masked["user"].to_numpy(),
        masked["item"].to_numpy(),
        [20],
    )
    return {k: float(np.mean(v)) for k, v in per_user.items() if k != "users"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()
    config = load_config(None, ["data.dataset=gowalla", f"data.data_dir={args.data_dir}"])
    interactions = load_interactions(config.data, args.seed)
    train, valid, test = (interactions.part(split) for split in ("train", "valid", "test"))
    degree = np.bincount(train["item"].to_numpy(), minlength=interactions.n_items)
    rows = []
    for name, held_out, masked in (
        ("train (carved)", train, None),
        ("validation (carved from train.txt)", valid, train),
        ("test (test.txt)", test, pd.concat([train, valid])),
    ):
        item_degree = degree[held_out["item"].to_numpy()]
        per_user = held_out.groupby("user").size()
        pop = popularity_recall(train, held_out, masked, interactions.n_items) if masked is not None else {}
        rows.append(
            (
                name,
                f"{len(held_out):,}",
                f"{per_user.mean():.1f}",
                f"{item_degree.mean():.1f}",
                f"{np.median(item_degree):.0f}",
                f"{(item_degree >= np.quantile(degree[degree > 0], 0.99)).mean():.3f}",
                f"{pop['recall@20']:.4f}" if pop else "–",
                f"{pop['ndcg@20']:.4f}" if pop else "–",
            )
        )
    header = (
        "set",
        "pairs",
        "items per user",
        "mean train degree of its items",
        "median",
        "share in the top 1% items",
        "popularity Recall@20",
        "popularity NDCG@20",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
