"""Helpers shared by tests/bridge and bench/bridge.py: a hub in a subprocess, a demo agents book, waiting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

# name → (token, allowed roles): four agents, two sharing the role "critic"
DEMO_AGENTS = {"alice": ("tok-alice", "any"), "bob": ("tok-bob", ["critic"]),
               "carol": ("tok-carol", ["critic", "solver"]), "dave": ("tok-dave", [])}


def url(hub) -> str:
    return f"ws://127.0.0.1:{hub.port}"


def run(coro, timeout: float = 30):
    """Run one coroutine to completion with a deadline (tests are plain functions, no asyncio plugin)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bridge_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "k1.bridge", *map(str, args)]


def subprocess_env() -> dict:
    """The current environment with this checkout's src/ first, so subprocesses import the same k1."""
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def start_hub_process(agents_file, db, port: int = 0, *extra) -> tuple[subprocess.Popen, int]:
    """`python -m k1.bridge serve` in a subprocess; returns it and its port once it prints `listening`."""
    p = subprocess.Popen(bridge_cmd("serve", "--agents", agents_file, "--db", db, "--port", port, *extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    line = p.stdout.readline()
    if not line.startswith("listening"):
        p.kill()
        raise RuntimeError(f"hub did not start: {line!r} {p.stderr.read()}")
    return p, int(line.split()[1].rsplit(":", 1)[1])


def wait_until(pred, timeout: float = 10.0, every: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False
