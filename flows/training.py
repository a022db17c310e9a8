"""Prefect training flow: thin tasks around the library's stage functions.

    python flows/training.py --set run.method=fedshare --out runs/flow

No server is needed: without PREFECT_API_URL, Prefect starts a temporary local API for the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedshare.config import load_config  # noqa: E402
from fedshare.pipeline import summary_line, train_stage  # noqa: E402


@task(name="train-and-evaluate", retries=1, retry_delay_seconds=5)
def train_task(config_path: str | None, overrides: list[str], out: str) -> dict:
    return train_stage(load_config(config_path, overrides), Path(out), progress=False)


@flow(name="fedshare-training", log_prints=True)
def training_flow(out: str = "runs/flow", overrides: list[str] | None = None, config_path: str | None = None) -> dict:
    metrics = train_task(config_path, overrides or [], out)
    print(summary_line(metrics))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the FedShare training flow")
    parser.add_argument("--out", default="runs/flow")
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    training_flow(args.out, args.overrides, args.config)
