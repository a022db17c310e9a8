"""The request journal and the state lock: requests (unshare, delete, share) are applied exactly once.

The journal is an append-only JSON-lines file.  Each accepted request is written (and fsynced)
with state ``accepted`` *before* anything else changes; once the unlearned model and the new masks
are in place, one ``applied`` line per request follows.  Replaying the file gives each request's
latest state, so a process killed in between finds the accepted-but-not-applied requests and
finishes them, and a request ID already in the journal is never applied twice.

The lock (``flock`` on a file next to the journal) serializes unsharing processes on one state
folder: a second process waits for the first, up to a timeout, instead of applying the same
requests again.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from fedshare.errors import DataError

ACCEPTED, APPLIED = "accepted", "applied"
CHANGE_COLUMNS = ["request_id", "user_id", "mode", "time", "event"]


class LockTimeout(DataError):
    """Another unsharing process holds the state lock."""


class RequestJournal:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-write: it was never fsynced
                continue
        return entries

    def states(self) -> dict[str, str]:
        """request_id -> its latest state."""
        return {entry["request_id"]: entry["state"] for entry in self.entries()}

    def accepted(self) -> pd.DataFrame:
        """Requests accepted but not yet applied (what a crashed run left behind), as request rows
        with their mode (unshare, delete, share)."""
        states = self.states()
        rows = {
            e["request_id"]: e for e in self.entries() if e["state"] == ACCEPTED and states[e["request_id"]] == ACCEPTED
        }
        return pd.DataFrame(
            [{k: rows[r].get(k, "unshare") for k in ("request_id", "user_id", "item_id", "mode")} for r in rows],
            columns=["request_id", "user_id", "item_id", "mode"],
        )

    def applied_requests(self) -> pd.DataFrame:
        """Every applied request, in order (to replay consent withdrawals on a retraining)."""
        states = self.states()
        seen, rows = set(), []
        for entry in self.entries():
            rid = entry["request_id"]
            if entry["state"] == ACCEPTED and states[rid] == APPLIED and rid not in seen:
                seen.add(rid)
                rows.append({k: entry[k] for k in ("request_id", "user_id", "item_id", "mode")})
        return pd.DataFrame(rows, columns=["request_id", "user_id", "item_id", "mode"])

    def changes(self) -> pd.DataFrame:
        """One row per applied request, in the order they were applied: who, what kind, when, by which event."""
        accepted, done, rows = {}, set(), []
        for entry in self.entries():
            rid = entry["request_id"]
            if entry["state"] == ACCEPTED:
                accepted.setdefault(rid, entry)
            elif entry["state"] == APPLIED and rid in accepted and rid not in done:
                done.add(rid)
                first = accepted[rid]
                rows.append(
                    {
                        "request_id": rid,
                        "user_id": str(first["user_id"]),
                        "mode": first.get("mode", "unshare"),
                        "time": entry.get("time", ""),
                        "event": entry.get("event", ""),
                    }
                )
        return pd.DataFrame(rows, columns=CHANGE_COLUMNS)

    def record_accepted(self, requests: pd.DataFrame, source: str, mode: str) -> None:
        self._append(
            [
                {
                    "request_id": str(r.request_id),
                    "user_id": str(r.user_id),
                    "item_id": str(r.item_id),
                    "source": source,
                    "mode": mode,
                    "state": ACCEPTED,
                }
                for r in requests.itertuples(index=False)
            ]
        )

    def record_applied(self, request_ids: list[str], event: str) -> None:
        self._append([{"request_id": str(rid), "state": APPLIED, "event": event} for rid in request_ids])

    def _append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        payload = "".join(json.dumps({**entry, "time": stamp}) + "\n" for entry in entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


def changes_being_applied(requests: pd.DataFrame, mode: str, event: str) -> pd.DataFrame:
    """``RequestJournal.changes`` rows for requests an event applies now, before the journal says so."""
    first = requests.drop_duplicates("request_id")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return pd.DataFrame(
        {
            "request_id": first["request_id"].astype(str).to_numpy(),
            "user_id": first["user_id"].astype(str).to_numpy(),
            "mode": mode,
            "time": stamp,
            "event": event,
        },
        columns=CHANGE_COLUMNS,
    )


@contextmanager
def state_lock(folder: str | Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (waits up to ``timeout`` seconds)."""
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another unsharing process holds {path}; try again when it has finished"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
