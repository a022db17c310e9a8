"""How many CPU threads torch uses: the cores that are free, so that a busy machine does not collapse it.

torch starts one OpenMP thread per core, and its threads spin while they wait for each other.  When
another process holds one of the cores, the thread that lost its core stalls every parallel region:
on the 2-core machine a 20-round ML-100K training took 15.4 s with torch's two threads against 3.2 s
with one (docs/results.md, section 4c, measures it idle and under load).  A passive wait policy
avoids the collapse but is slower on an idle machine, so the policy here is the number of threads:

* ``FEDSHARE_THREADS`` or ``OMP_NUM_THREADS``, when set, are obeyed;
* otherwise the usable cores minus the cores busy elsewhere, at least one.  "Busy" is the smaller of
  the 1-minute load average and the CPU time used in a 0.3 s sample of ``/proc/stat``, both rounded:
  the load average lags by about a minute, so right after another job ends it still counts a busy
  core (a default Gowalla run started that way took 24.6 minutes on one thread against about 14 on
  two; docs/results.md, section 0), while a short sample alone can miss a process between bursts.

The CLI, the Prefect flows and the test suite call ``apply_thread_policy`` before any training.
"""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_now(seconds: float = 0.3) -> float | None:
    """Cores' worth of CPU time the machine used over a short sample of /proc/stat (None off Linux)."""

    def totals() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy_before, total_before = totals()
        time.sleep(seconds)
        busy_after, total_after = totals()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    # /proc/stat's first line sums every core, so the busy share times the cores is cores' worth
    return (busy_after - busy_before) / elapsed * (os.cpu_count() or 1)


def free_cores() -> int:
    """Usable cores minus the cores busy elsewhere (module docstring), at least one."""
    cores = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        busy = 0.0
    sampled = busy_now()
    if sampled is not None:
        busy = min(busy, sampled)
    return max(1, min(cores, cores - int(busy + 0.5)))


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
