"""`Pool`: the members of a pool file and its settings, loaded together and closed together."""

from __future__ import annotations

from pathlib import Path

from k1.errors import ConfigError
from k1.pool.config import PoolConfig, read_pool_config
from k1.pool.members import Member, load_member


class Pool:
    """Members by name, in pool-file order, and the pool settings."""

    def __init__(self, config: PoolConfig, members: list[Member]):
        self.config = config
        self.members: dict[str, Member] = {m.name: m for m in members}

    def __getitem__(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise ConfigError(f"no member {name!r} in the pool; choose one of: {', '.join(self.members)}") from None

    def with_role(self, role: str) -> list[Member]:
        return [m for m in self.members.values() if role in m.roles]

    def close(self) -> None:
        for m in self.members.values():
            m.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_pool(path: str | Path) -> Pool:
    """Read a pool file and load every member it lists."""
    cfg = read_pool_config(path)
    return Pool(cfg, [load_member(spec) for spec in cfg.members])
