"""Run the real `k1` command line in a subprocess (tests use this instead of calling functions)."""

from __future__ import annotations

import subprocess
import sys


def run_k1(*args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m k1.cli ARGS`; with `check`, a non-zero exit raises with the command's stderr."""
    r = subprocess.run([sys.executable, "-m", "k1.cli", *map(str, args)], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"k1 {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r
