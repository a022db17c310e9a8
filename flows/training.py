"""Prefect training flow: load -> validate (GE) -> masks -> federated rounds with snapshots -> evaluate
-> log to MLflow -> register, and serve the model from the state folder if it beats the current one.

    python -m flows.training --set sharing.policy=all          # one run, embedded Prefect + sqlite MLflow

Each task is one call into ``fedshare``; the flow only chains them.  With no PREFECT_API_URL, Prefect
starts a temporary local API for the run (no server to start).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from prefect import flow, task

from fedshare import stages
from fedshare.cli import summary_line
from fedshare.config import load_config
from fedshare.mlops.tracking import set_run_dir_tag
from fedshare.service.model_store import ModelStore, publish
from fedshare.threads import apply_thread_policy
from flows import require_filled, route_library_logs


@task(name="prepare", retries=2, retry_delay_seconds=5)  # reads the data: may hit a flaky disk or download
def prepare_task(config, out: Path) -> dict:
    return stages.prepare_stage(config, out)


@task(name="validate-interactions")
def validate_task(prepared: Path) -> dict:
    return stages.validate_stage(prepared, prepared / "validation.json")


@task(name="share")
def share_task(config, prepared: Path, out: Path, state: str) -> dict:
    consent = ModelStore(state).consent()  # every user's choice and request stays as they made it
    return stages.share_stage(config, prepared, out, consent)


@task(name="train")
def train_task(config, run_dir: Path, prepared: Path, masks: Path) -> dict:
    # The curve goes to MLflow while it trains; the model is logged by the retried log-and-register task.
    return stages.train_stage(config, run_dir, False, prepared, masks, track=False, live_curve=config.tracking.enabled)


@task(name="evaluate")
def evaluate_task(run_dir: Path) -> dict:
    return stages.evaluate_stage([run_dir], run_dir / "evaluation")


@task(name="log-and-register", retries=2, retry_delay_seconds=5)  # the tracking server may be briefly away
def track_task(run_dir: Path) -> dict:
    return stages.track_stage(run_dir)


@task(name="publish")
def publish_task(config, state: str, run_dir: Path) -> bool:
    return publish(config, state, run_dir)


def _run_name() -> str:
    """e.g. train-ml-100k-mixed-seed0, readable in the Prefect UI."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    config = load_config(parameters.get("config_path"), parameters.get("overrides") or [])
    dataset = Path(config.data.dataset).stem
    return f"train-{dataset}-{config.run.method}-{config.sharing.policy}-seed{config.run.seed}"


@flow(name="fedshare-training", flow_run_name=_run_name, log_prints=True)
def training_flow(
    workdir: str = "runs/flow",
    state: str | None = None,
    overrides: list[str] | None = None,
    config_path: str | None = None,
    keep_workdir: bool = False,
) -> dict:
    require_filled(workdir=workdir, state=state)
    config = load_config(config_path, overrides or [])
    apply_thread_policy()  # torch threads = the free cores (fedshare/threads.py)
    route_library_logs()  # rounds and validation in the run's logs while it trains
    state = state or config.requests.state
    work = Path(workdir)
    prepare_task(config, work / "prepared")
    validate_task(work / "prepared")
    share_task(config, work / "prepared", work / "masks", state)
    metrics = train_task(config, work / "run", work / "prepared", work / "masks" / "masks.parquet")
    evaluate_task(work / "run")
    if config.tracking.enabled:
        metrics["tracking"] = track_task(work / "run")
    metrics["served"] = publish_task(config, state, work / "run")
    if "tracking" in metrics:  # publish moved MLflow's champion alias if, and only if, it served the run
        metrics["tracking"]["champion"] = metrics["served"]
    print(summary_line(metrics) + ("  (now served)" if metrics["served"] else ""))
    if not keep_workdir:  # the served copy lives in the state folder; a stray copy would outlive unsharing
        shutil.rmtree(work)
        if "tracking" in metrics and not metrics["served"]:
            set_run_dir_tag(config, metrics["tracking"]["run_id"], "removed (not served: the work folder is deleted)")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the FedShare training flow once (embedded Prefect).")
    parser.add_argument("--workdir", default="runs/flow", help="where the stages write (default runs/flow)")
    parser.add_argument("--state", help="state folder of the served model (default requests.state)")
    parser.add_argument("--config", help="parameters file (default params.yaml)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the stages' outputs in --workdir (they hold the masks as they were at training)",
    )
    args = parser.parse_args()
    training_flow(args.workdir, args.state, args.overrides, args.config, args.keep_workdir)


if __name__ == "__main__":
    main()
