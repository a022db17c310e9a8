"""K server-embedding snapshots kept for unlearning (round 0 is the data-free one)."""

from __future__ import annotations

from pathlib import Path

import torch

from fedshare.federated.server import SERVER_TABLES
from fedshare.storage import load_tensors, save_tensors


class SnapshotStore:
    """K server-embedding snapshots on disk, each written atomically with a SHA-256 sidecar."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, round_number: int) -> Path:
        return self.folder / f"snapshot-{round_number:05d}.pt"

    def save(self, round_number: int, server_state: dict[str, torch.Tensor]) -> int:
        info = save_tensors(self.path(round_number), {name: server_state[name] for name in SERVER_TABLES})
        return info["bytes"]

    def rounds(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("snapshot-*.pt"))

    def load(self, round_number: int) -> dict[str, torch.Tensor]:
        return load_tensors(self.path(round_number))

    def bytes_on_disk(self, rounds: list[int] | None = None) -> int:
        """Bytes of the snapshot files (with their sidecars): all, or those of ``rounds``."""
        patterns = ["snapshot-*.pt*"] if rounds is None else [f"{self.path(r).name}*" for r in rounds]
        return sum(p.stat().st_size for pattern in patterns for p in self.folder.glob(pattern))
