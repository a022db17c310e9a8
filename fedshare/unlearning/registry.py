"""The unlearning methods by name.  A new method is one new file with an ``unlearn(job)`` function and
one line here.  Importing this module is cheap (no torch): the CLI builds its help from it.

docs/method.md ("Unlearning") gives each method's equations and choices.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedshare.errors import DataError

if TYPE_CHECKING:
    from fedshare.unlearning.common import UnlearningJob, UnlearningResult


@dataclass(frozen=True)
class UnlearningMethod:
    module: str  # where its ``unlearn(job) -> UnlearningResult`` lives
    summary: str  # one clause for ``--help``
    needs_update_log: bool = False  # trained with ``unlearning.fru_alpha > 0``


METHODS: dict[str, UnlearningMethod] = {
    "contrastive": UnlearningMethod("fedshare.unlearning.contrastive", "snapshot-based contrastive unlearning"),
    "finetune": UnlearningMethod("fedshare.unlearning.finetune", "more rounds without the contrastive push"),
    "none": UnlearningMethod("fedshare.unlearning.none", "only drop the edges from the server graph"),
    "retrain": UnlearningMethod("fedshare.unlearning.retrain", "from scratch without the data (the reference)"),
    "fru": UnlearningMethod(
        "fedshare.unlearning.fru",
        "FRU rollback + calibrated replay of the update log (train with --set unlearning.fru_alpha=0.5)",
        needs_update_log=True,
    ),
}


def methods_help() -> str:
    """One clause per method, for ``--help``."""
    return "; ".join(f"{name}: {method.summary}" for name, method in METHODS.items())


log = logging.getLogger(__name__)


def unlearn(job: UnlearningJob, method: str) -> UnlearningResult:
    """Remove the unshared pairs' influence from ``job.model`` (in place for all but retrain), timed."""
    if method not in METHODS:
        raise DataError(f"unknown unlearning method {method!r}; one of {', '.join(METHODS)}")
    if METHODS[method].needs_update_log and job.update_log is None:
        raise DataError(
            f"unlearning method {method} needs the update log written during training "
            "(train with unlearning.fru_alpha > 0)"
        )
    run = importlib.import_module(METHODS[method].module).unlearn
    log.info(
        "unlearning (%s, %s): %d pairs of %d users",
        method,
        "delete" if job.delete else "unshare",
        len(job.pairs),
        job.pairs["user"].nunique() if len(job.pairs) else 0,
    )
    started = time.perf_counter()
    result = run(job)
    result.seconds = time.perf_counter() - started
    log.info("unlearning (%s) done in %.1f s, %d rounds", method, result.seconds, result.rounds)
    return result
