"""Fault injection for the crash tests: ``FEDSHARE_CRASH_AT=<point>`` kills the process there.

The points sit between the steps of an unlearning event (see fedshare.inbox).  SIGKILL, not an
exception: nothing gets to clean up, exactly as when a machine loses power.
"""

from __future__ import annotations

import os
import signal

POINTS = ("accepted", "unlearned", "committed", "versioned", "applied", "event", "moved")


def crash_point(name: str) -> None:
    if os.environ.get("FEDSHARE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
