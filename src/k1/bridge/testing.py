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


# --- pytest fixtures (tests/bridge and tests/agents import them into their conftest) -----------------------
try:
    import pytest
except ImportError:  # the bench does not need pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def agents_file(tmp_path):
        from k1.bridge.auth import write_agents_file

        return write_agents_file(tmp_path / "agents.toml", DEMO_AGENTS)

    @pytest.fixture
    def make_hub(tmp_path, agents_file):
        """make_hub(**HubConfig fields) → a started in-process hub (stopped after the test)."""
        from k1.bridge.auth import AgentBook
        from k1.bridge.hub import BackgroundHub, HubConfig

        hubs = []

        def make(**kw):
            kw.setdefault("db", tmp_path / "bridge.sqlite")
            kw.setdefault("ping_interval", 5)
            h = BackgroundHub(HubConfig(port=0, **kw), AgentBook.from_file(agents_file))
            hubs.append(h)
            return h.__enter__()

        yield make
        for h in hubs:
            h.__exit__(None, None, None)
