"""Prefect flows: each task is one call into the ``fedshare`` library."""

from __future__ import annotations

import logging

from fedshare.errors import ConfigError


def route_library_logs() -> None:
    """Send the library's log (logger ``fedshare``: rounds, validation, unlearning steps) into the
    running flow's Prefect logs, with the handlers Prefect gives its ``extra`` loggers (the API and
    the console), so a run shows progress while it trains.  Idempotent."""
    library = logging.getLogger("fedshare")
    library.setLevel(logging.INFO)
    for handler in logging.getLogger("prefect.extra").handlers:
        if handler not in library.handlers:
            library.addHandler(handler)


def require_filled(**paths: str | None) -> None:
    """Refuse folder parameters that still hold a ``{{ $VAR }}`` placeholder of prefect.yaml: the
    deployment was made while the variable was unset, and the flow would otherwise create a folder
    literally named ``{{ $FEDSHARE_HOME }}`` and serve from it."""
    for name, value in paths.items():
        if value is not None and "{{" in str(value):
            raise ConfigError(
                f"parameter {name}={value!r} still holds a prefect.yaml placeholder: the deployment was made "
                "with the variable unset. Redeploy with it set: FEDSHARE_HOME=/srv/fedshare bash scripts/deploy.sh"
            )
