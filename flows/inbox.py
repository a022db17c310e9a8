"""The scheduled inbox check: the unlearning flow, started only when a request file is waiting.

    python -m flows.inbox            # what the `inbox` deployment runs every 10 minutes

A scheduled run usually finds nothing.  This module imports only Prefect and the parameters file,
looks for request files first, and imports the unlearning flow (torch, MLflow, DVC) and runs it as
a subflow only when there is one, so an empty inbox costs a light process, not a training stack.
"""

from __future__ import annotations

import argparse

from prefect import flow

from fedshare.config import load_config
from fedshare.errors import ConfigError, DataError
from fedshare.service.pending import pending_files
from flows import require_filled


@flow(name="fedshare-inbox", log_prints=True)
def inbox_flow(
    state: str | None = None,
    inbox: str | None = None,
    method: str | None = None,
    overrides: list[str] | None = None,
    config_path: str | None = None,
) -> list[dict]:
    require_filled(state=state, inbox=inbox)
    config = load_config(config_path, overrides or [])
    inbox = inbox or config.requests.inbox
    waiting = pending_files(inbox)
    if not waiting:
        print(f"{inbox}: no request file waiting")
        return []
    print(f"{inbox}: {len(waiting)} request file(s) waiting; starting the unlearning flow")
    from flows.unlearning import unlearning_flow  # the heavy stack, only now

    return unlearning_flow(state, inbox, method, overrides, config_path)


def main() -> None:
    parser = argparse.ArgumentParser(description="Check the inbox; run the unlearning flow if a request file waits.")
    parser.add_argument("--state")
    parser.add_argument("--inbox")
    parser.add_argument("--method", help="unlearning method (default unlearning.method)")
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    try:
        inbox_flow(args.state, args.inbox, args.method, args.overrides, args.config)
    except (DataError, ConfigError) as err:  # e.g. a file could not be parsed (UnparsedFiles): Failed
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
