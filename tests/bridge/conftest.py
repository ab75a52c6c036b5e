"""A real hub on 127.0.0.1 (free port, tmp SQLite log) and the agents that may join it."""

from k1.bridge.testing import agents_file, make_hub  # noqa: F401  (pytest fixtures)
