"""`Pool`: the members of a pool file and its settings, loaded together and closed together.

Local members loaded from a pool file can be unloaded (REST) and come back on their next use.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from k1.common.config_files import validate_as
from k1.errors import ConfigError
from k1.pool.config import PoolConfig, PoolSettings, read_pool_config
from k1.pool.members import Member

log = logging.getLogger(__name__)
# transformers builds a model on the meta device by patching torch globally: two members reloading at once in
# two request threads broke each other ("Cannot copy out of meta tensor"), so reloads take turns
_RELOADING = threading.Lock()


def load_member(spec) -> Member:
    """Build a member from a pool-file entry (a dict or a validated spec): {"name", "kind", ...}."""
    if isinstance(spec, dict):
        spec = validate_as(PoolConfig, {"members": [spec]}, "member").members[0]
    if spec.kind == "k1":
        from k1.pool.members.k1 import K1Member
        return K1Member.from_run(spec.run, name=spec.name, roles=spec.roles, stop=spec.stop)
    if spec.kind == "hf":
        import torch

        from k1.pool.members.hf import HFMember
        return HFMember.from_pretrained(spec.path, spec.name, spec.roles, gguf_file=spec.gguf_file,
                                        dtype=getattr(torch, spec.dtype), device=spec.device)
    from k1.pool.members.openai import OpenAIMember
    kw = spec.model_dump(exclude={"name", "kind", "roles", "base_url", "api_key_env"})
    return OpenAIMember.from_spec(spec.name, spec.base_url, api_key_env=spec.api_key_env, roles=spec.roles, **kw)


class Pool:
    """Members by name, in pool-file order, and the pool settings (`[pool]` of the file)."""

    def __init__(self, members: list[Member], settings: PoolSettings = PoolSettings(), specs: dict | None = None,
                 config: PoolConfig | None = None):
        self.settings, self.config = settings, config
        if not members:
            raise ConfigError("a pool needs at least one member")
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.specs = dict(specs or {})  # name → the spec it was loaded from (what an unloaded member reloads)
        self.unloaded: set[str] = set()
        self.last_used: dict[str, float] = {}
        self.on_reload = None  # (name, member) → None: what a reloaded member gets before use (DREAM's weights)

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def __getitem__(self, name: str) -> Member:
        if name not in self.members:
            raise ConfigError(f"no member {name!r} in the pool; choose one of: {', '.join(self.members)}")
        if name in self.unloaded:
            with _RELOADING:
                if name in self.unloaded:
                    log.info("reloading member %s", name)
                    m = load_member(self.specs[name])
                    if self.on_reload is not None:
                        self.on_reload(name, m)  # before anyone can use it
                    self.members[name] = m
                    self.unloaded.discard(name)
        self.last_used[name] = time.time()
        return self.members[name]

    def with_role(self, role: str) -> list[Member]:
        return [self[m.name] for m in self.members.values() if role in m.roles]

    def unload_idle(self, idle_s: float, now: float | None = None) -> list[str]:
        """Close local members unused for `idle_s` seconds (they reload on next use); → their names."""
        now = time.time() if now is None else now
        done = []
        for name, m in self.members.items():
            if (name in self.specs and name not in self.unloaded and getattr(m, "is_local", False)
                    and now - self.last_used.get(name, 0.0) >= idle_s):
                m.close()
                self.unloaded.add(name)
                done.append(name)
        return done

    def close(self) -> None:
        for name, m in self.members.items():
            if name not in self.unloaded:
                m.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_pool(path: str | Path) -> Pool:
    """Read a pool file and load every member it lists."""
    cfg = read_pool_config(path)
    return Pool([load_member(spec) for spec in cfg.members], cfg.pool, {s.name: s for s in cfg.members}, cfg)
