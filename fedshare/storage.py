"""Files the project writes: atomic (temp file + rename), with SHA-256 checksums where they matter.

A crash never leaves a half-written file under the final name, and a file written with a checksum
is verified when it is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from fedshare.errors import CorruptFileError

_UMASK = os.umask(0)


os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksum(path: Path) -> str:
    """Record the file's SHA-256 in a ``.sha256`` sidecar (written atomically); returns it."""
    digest = sha256_file(path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def verify_checksum(path: Path) -> None:
    """Refuse a file whose content does not match its sidecar (files without one are accepted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists():
        expected = sidecar.read_text().split()[0]
        actual = sha256_file(path)
        if actual != expected:
            raise CorruptFileError(
                f"{path} is corrupted: sha256 {actual[:12]}… does not match the recorded {expected[:12]}…"
            )


def save_tensors(path: Path, tensors: dict[str, Any]) -> dict[str, Any]:
    """Save a dict of tensors atomically with a ``.sha256`` sidecar; returns {bytes, sha256}."""
    path = Path(path)
    cpu = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
    _atomic(path, lambda tmp: torch.save(cpu, tmp))
    return {"bytes": path.stat().st_size, "sha256": write_checksum(path)}


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load what ``save_tensors`` wrote, refusing a file whose checksum does not match."""
    verify_checksum(Path(path))
    return torch.load(path, map_location=map_location, weights_only=True)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
