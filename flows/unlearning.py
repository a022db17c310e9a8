"""Prefect unlearning flow: pick up request files from the inbox -> validate them (GE + checks against
the current masks) -> journal -> new masks -> unlearn -> evaluate -> log the event to MLflow -> register.

    python -m flows.unlearning                   # process what is in requests.inbox now

A file that cannot be parsed goes to inbox/failed/ with its reason; invalid rows are written to
inbox/processed/<name>.rejections.csv; neither stops the flow for the valid requests.  Each run
publishes a table artifact (``inbox-outcomes``: one row per file), and a run in which a file could
not be parsed ends Failed (``UnparsedFiles``) once every other file is handled, so an operator can
alert on it.  The state
lock is held for the whole flow, so two flows (or a flow and `fedshare process-inbox`) never apply
the same requests twice.
"""

from __future__ import annotations

import argparse

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from fedshare.config import load_config
from fedshare.errors import DataError
from fedshare.service import inbox as service
from fedshare.service.journal import state_lock
from fedshare.service.model_store import ModelStore
from fedshare.threads import apply_thread_policy
from fedshare.unlearning.registry import METHODS, methods_help
from flows import require_filled, route_library_logs


@task(name="recover")
def recover_task(state: str) -> None:
    ModelStore(state).recover()


@task(name="intake")
def intake_task(state: str, path) -> service.Intake | str:
    """The checked file, or the reason it could not be parsed (it is then moved to failed/)."""
    try:
        return service.intake(ModelStore(state), path)
    except DataError as err:
        service.quarantine(path, err)
        print(f"{path.name}: not parsed, moved to failed/ ({err})")
        return str(err)


@task(name="journal")
def journal_task(state: str, taken: service.Intake) -> None:
    service.record(ModelStore(state), taken)


@task(name="unlearn-evaluate-log")
def apply_task(config, state: str, taken: service.Intake, method: str) -> dict:
    return service.apply(config, ModelStore(state), taken, method)


@task(name="finish-and-purge")
def finish_task(config, state: str, taken: service.Intake) -> dict:
    return service.finish(config, ModelStore(state), taken)


def _run_name() -> str:
    """e.g. unlearn-contrastive-3-files, readable in the Prefect UI."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    config = load_config(parameters.get("config_path"), parameters.get("overrides") or [])
    files = len(service.pending_files(parameters.get("inbox") or config.requests.inbox))
    return f"unlearn-{parameters.get('method') or config.unlearning.method}-{files}-files"


@flow(name="fedshare-unlearning", flow_run_name=_run_name, log_prints=True)
def unlearning_flow(
    state: str | None = None,
    inbox: str | None = None,
    method: str | None = None,
    overrides: list[str] | None = None,
    config_path: str | None = None,
) -> list[dict]:
    require_filled(state=state, inbox=inbox)
    config = load_config(config_path, overrides or [])
    apply_thread_policy()  # torch threads = the free cores (fedshare/threads.py)
    route_library_logs()  # rounds and validation in the run's logs while it trains
    state, inbox = state or config.requests.state, inbox or config.requests.inbox
    method = method or config.unlearning.method
    outcomes = []
    with state_lock(state):
        recover_task(state)
        for path in service.pending_files(inbox):
            taken = intake_task(state, path)
            if isinstance(taken, str):  # the reason it could not be parsed
                outcomes.append({"file": path.name, "error": taken})
                continue
            journal_task(state, taken)
            event = apply_task(config, state, taken, method) if not taken.accepted.empty else None
            finish_task(config, state, taken)
            print(f"{path.name}: {len(taken.accepted)} applied, {len(taken.rejected)} rejected")
            outcomes.append(
                {"file": path.name, "applied": len(taken.accepted), "rejected": len(taken.rejected), "event": event}
            )
    if outcomes:
        create_table_artifact(
            key="inbox-outcomes", table=service.outcome_rows(outcomes), description="Request files of this run"
        )
    return service.check_outcomes(outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the FedShare unlearning flow once (embedded Prefect).")
    parser.add_argument("--state")
    parser.add_argument("--inbox")
    parser.add_argument("--method", choices=tuple(METHODS), help=f"{methods_help()} (default unlearning.method)")
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    try:
        unlearning_flow(args.state, args.inbox, args.method, args.overrides, args.config)
    except service.UnparsedFiles as err:
        raise SystemExit(f"error: {err}") from None  # exit 1: the run is Failed in Prefect too


if __name__ == "__main__":
    main()
