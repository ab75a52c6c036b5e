"""A real hub on 127.0.0.1 (free port) and the agents that may join it. `make_hub` runs each test twice: on
the embedded SQLite backend and on JetStream (a real nats-server -js, skipped with its reason where it cannot
start); `make_sqlite_hub` is for the tests about the SQLite file itself."""

import pytest

from k1.bridge.testing import _hubs, agents_file, jetstream_config, nats_url  # noqa: F401  (pytest fixtures)
from k1.bridge.testing import make_hub as make_sqlite_hub  # noqa: F401


@pytest.fixture(params=["sqlite", "jetstream"])
def backend(request):
    if request.param == "sqlite":
        return {}
    return jetstream_config(request.getfixturevalue("nats_url"))


@pytest.fixture
def make_hub(tmp_path, agents_file, backend):  # noqa: F811
    yield from _hubs(tmp_path, agents_file, backend)
