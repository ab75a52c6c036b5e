"""A real hub on 127.0.0.1 for the agents (the same fixtures as tests/bridge)."""

from k1.bridge.testing import agents_file, make_hub  # noqa: F401  (pytest fixtures)
