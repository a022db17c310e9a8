"""``none``: drop the unshared edges from the server graph, nothing else (the lower bound)."""

from __future__ import annotations

from fedshare.unlearning.common import (
    UnlearningJob,
    UnlearningResult,
    clean_server,
)


def unlearn(job: UnlearningJob) -> UnlearningResult:
    return clean_server(job).result(job.model, 0)
