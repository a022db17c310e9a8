"""``finetune``: drop the unshared edges, then a few federated rounds on the remaining data."""

from __future__ import annotations

from fedshare.federated.round import run_round
from fedshare.unlearning.common import (
    UnlearningJob,
    UnlearningResult,
    clean_server,
)


def unlearn(job: UnlearningJob) -> UnlearningResult:
    cleaned = clean_server(job)
    for _ in range(job.settings.rounds):
        run_round(job.model, cleaned.generator)
    return cleaned.result(job.model, job.settings.rounds)
