"""Atomic file writes: a temporary file in the same directory, then one rename, so a reader (another
process, a parallel test, a resume after a kill) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str, *, durable: bool = False) -> None:
    """Replace `path` with `data` (text is written as UTF-8). `durable`: fsync the file before the rename
    (survives power loss, not only a killed process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: parallel writers never share it
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
