"""The error hierarchy: one class per kind of bad input, each raised with what, where and how to fix it.

`cli.py` catches `K1Error` in one place and prints its message as one line (exit code 2).
"""


class K1Error(Exception):
    """Base of every error caused by user input (config, data, checkpoint, backend, bridge)."""


class ConfigError(K1Error):
    """A malformed or inconsistent configuration (TOML file, --set override, preset name)."""


class DataError(K1Error):
    """A missing, empty or too-small corpus, or an unreadable data source."""


class CheckpointError(K1Error):
    """A missing, corrupt or incompatible checkpoint or run directory."""


class BackendError(K1Error):
    """A model backend that cannot be reached or answers badly."""


class BridgeError(K1Error):
    """A bad frame, a failed handshake or a dropped connection on the agent bridge."""
