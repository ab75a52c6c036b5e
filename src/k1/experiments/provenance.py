"""The code version a continual run was trained by, so that a run is reused only by the code that made it.

`code_version()` records the git commit and whether the working tree was dirty (for the reader), and a
SHA-256 over every Python file of the installed `k1` package (for matching): two runs match when the
code that trains them is byte-identical, whatever the commit says — a commit that changes only docs
keeps its runs, and a dirty tree matches only the same dirty tree.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import k1

PACKAGE = Path(k1.__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """{"commit": hash or None, "dirty": bool or None, "source": sha256 of the package's .py files}."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": _dirty(), "source": h.hexdigest()}


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _dirty() -> bool | None:
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out)


def same_code(saved: dict | None, now: dict) -> bool:
    """Whether a saved code version matches: the same source hash (a run saved without one never does)."""
    return isinstance(saved, dict) and saved.get("source") is not None and saved.get("source") == now["source"]
