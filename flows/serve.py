"""Scheduled runs in embedded mode: serve both flows from this process with cron schedules.

    python -m flows.serve                                   # retrain nightly, check the inbox every 10 minutes
    python -m flows.serve --retrain-cron "0 3 * * 0" --inbox-cron "*/5 * * * *"

`flow.serve` needs a Prefect API that outlives one run: start `prefect server start` (or set
PREFECT_API_URL to yours) first.  For a work pool instead, see prefect.yaml.
"""

from __future__ import annotations

import argparse

from prefect import serve

from flows.inbox import inbox_flow
from flows.training import training_flow


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the FedShare flows on cron schedules.")
    parser.add_argument("--retrain-cron", default="0 3 * * *", help="training flow schedule (default nightly at 03:00)")
    parser.add_argument(
        "--inbox-cron", default="*/10 * * * *", help="unlearning flow schedule (default every 10 minutes)"
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    serve(*deployments(args.retrain_cron, args.inbox_cron, args.overrides))


def deployments(retrain_cron: str, inbox_cron: str, overrides: list[str]) -> list:
    """The two scheduled deployments that `serve` runs from this process."""
    return [
        training_flow.to_deployment(
            "scheduled-retraining",
            cron=retrain_cron,
            parameters={"overrides": overrides},
            tags=["fedshare", "training"],
        ),
        inbox_flow.to_deployment(  # light: imports the unlearning stack only when a file waits
            "inbox", cron=inbox_cron, parameters={"overrides": overrides}, tags=["fedshare", "unlearning"]
        ),
    ]


if __name__ == "__main__":
    main()
