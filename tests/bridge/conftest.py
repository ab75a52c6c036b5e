"""A real hub on 127.0.0.1 (free port, tmp SQLite log) and the agents that may join it."""

import pytest

from k1.bridge import AgentBook, BackgroundHub, HubConfig, write_agents_file
from k1.bridge.testing import DEMO_AGENTS


@pytest.fixture
def agents_file(tmp_path):
    return write_agents_file(tmp_path / "agents.toml", DEMO_AGENTS)


@pytest.fixture
def make_hub(tmp_path, agents_file):
    """make_hub(**HubConfig fields) → a started in-process hub (stopped after the test)."""
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
