"""The main job: train and serve a model, then process unsharing requests, in one Prefect run.

    python -m flows.pipeline                       # what `bash scripts/run.sh` runs
    python -m flows.pipeline --demo-fraction 0     # do not draw demo requests; only what is in the inbox

Embedded defaults, no server to start: a temporary local Prefect API, MLflow in ./mlflow.db, the served
model in ./state with its masks versioned by DVC (pushed to the local remote .dvc_remote).
With --demo-fraction F (default 0.05) and an empty inbox, a request file is drawn for a fraction F
of the sharing users, so that a first run shows an unlearning event end to end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task

from fedshare.config import load_config
from fedshare.service.inbox import pending_files
from fedshare.service.model_store import ModelStore
from fedshare.stages import make_requests_stage
from flows.training import training_flow
from flows.unlearning import unlearning_flow


@task(name="demo-requests")
def demo_requests_task(state: str, inbox: str, fraction: float, seed: int) -> str | None:
    if fraction <= 0 or pending_files(inbox):
        return None
    target = Path(inbox) / "demo-requests.csv"
    make_requests_stage(ModelStore(state).require_current(), fraction, "all", seed, target)
    return str(target)


@flow(name="fedshare-pipeline", flow_run_name="train-serve-unlearn", log_prints=True)
def pipeline_flow(
    overrides: list[str] | None = None, config_path: str | None = None, demo_fraction: float = 0.05
) -> dict:
    config = load_config(config_path, overrides or [])
    state, inbox = config.requests.state, config.requests.inbox
    trained = training_flow(state=state, overrides=overrides, config_path=config_path)
    drawn = demo_requests_task(state, inbox, demo_fraction, config.requests.seed)
    if drawn:
        print(f"drew demo unshare requests into {drawn}")
    events = unlearning_flow(state=state, inbox=inbox, overrides=overrides, config_path=config_path)
    if config.tracking.enabled:
        print(
            f"browse the runs: mlflow ui --backend-store-uri {trained.get('tracking', {}).get('tracking_uri', 'sqlite:///mlflow.db')}"
        )
    return {"training": trained, "unlearning": events}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train, serve and process unsharing requests (embedded Prefect).")
    parser.add_argument("--config", help="parameters file (default params.yaml)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument(
        "--demo-fraction",
        type=float,
        default=0.05,
        help="with an empty inbox, draw unshare requests for this fraction of sharing users (0: none)",
    )
    args = parser.parse_args()
    pipeline_flow(args.overrides, args.config, args.demo_fraction)


if __name__ == "__main__":
    main()
