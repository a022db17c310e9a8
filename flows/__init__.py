"""Prefect flows: each task is one call into the ``fedshare`` library."""

from __future__ import annotations

import logging


def route_library_logs() -> None:
    """Send the library's log (logger ``fedshare``: rounds, validation, unlearning steps) into the
    running flow's Prefect logs, with the handlers Prefect gives its ``extra`` loggers (the API and
    the console), so a run shows progress while it trains.  Idempotent."""
    library = logging.getLogger("fedshare")
    library.setLevel(logging.INFO)
    for handler in logging.getLogger("prefect.extra").handlers:
        if handler not in library.handlers:
            library.addHandler(handler)
