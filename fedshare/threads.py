"""How many CPU threads torch uses: the cores that are free, so that a busy machine does not collapse it.

torch starts one OpenMP thread per core, and its threads spin while they wait for each other.  When
another process holds one of the cores, the thread that lost its core stalls every parallel region:
on the 2-core machine a 20-round ML-100K training took 15.4 s with torch's two threads against 3.2 s
with one (docs/results.md, section 4c, measures it idle and under load).  A passive wait policy
avoids the collapse but is slower on an idle machine, so the policy here is the number of threads:

* ``FEDSHARE_THREADS`` or ``OMP_NUM_THREADS``, when set, are obeyed;
* otherwise the usable cores minus the 1-minute load average (rounded), at least one.

The CLI, the Prefect flows and the test suite call ``apply_thread_policy`` before any training.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """Usable cores minus the machine's 1-minute load average (rounded), at least one."""
    cores = usable_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (OSError, AttributeError):  # no load average on this platform
        busy = 0
    return max(1, min(cores, cores - busy))


def chosen_threads() -> tuple[int, str]:
    """(threads, why): an explicit setting wins, else the free cores."""
    for name in ("FEDSHARE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), name
    return free_cores(), "free cores"


def apply_thread_policy() -> int:
    """Set torch's intra-op threads by the policy above; returns the number chosen."""
    import torch  # here, so that importing this module stays cheap (the CLI's --help)

    threads, _ = chosen_threads()
    torch.set_num_threads(threads)
    return threads
