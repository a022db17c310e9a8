"""The library's log: rounds, validation, early stopping, unlearning steps (logger ``fedshare``).

The library only emits records; where they go is the caller's choice: the command line prints
them above its progress bar (``to_console``), and the flows route them into the Prefect run's logs
(``flows/__init__.py``), so a run shows progress while it trains.
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

LOGGER = "fedshare"


class TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write``, so that a running progress bar is not torn apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never stop a training
            self.handleError(record)


def to_console(level: int = logging.INFO) -> None:
    """Print the library's records of ``level`` and above on the terminal (once per process)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(isinstance(handler, TqdmHandler) for handler in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
