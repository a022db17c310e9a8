"""Which request files wait in the inbox: a check light enough to run before torch or MLflow load
(the scheduled inbox flow looks here first, every few minutes, and usually finds nothing)."""

from __future__ import annotations

from pathlib import Path


def pending_files(inbox: str | Path) -> list[Path]:
    """The request files (``*.csv``) waiting in ``inbox``, in name order (rejection reports excluded)."""
    folder = Path(inbox)
    return (
        sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.endswith(".rejections.csv"))
        if folder.exists()
        else []
    )
