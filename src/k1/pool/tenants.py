"""Tenants: who holds which API key, and what that key may do (LiteLLM's virtual keys, vLLM's cache salt).

A single key (`--api-key-file`, `$K1_POOL_API_KEY`) is the simple default: its holder is the operator
(`admin`). Several users share one server through a keys file (TOML, read from a file, never from argv):

```toml
[[tenant]]
name = "alice"
key = "a long random string"
concurrency = 4        # requests in flight at once; more get 429 at once (nobody else's worker is held)
budget_share = 0.5     # at most this share of [pool] budget_atp
# trusted = false      # true: the classes it states teach the task classifier, its feedback moves global state
# admin = false        # true: /v1/pool's recent prompts, every request's feedback (implies trusted)
# probe = false        # true: its calls are answered and charged, and the pool learns nothing from them
```

A `probe` tenant measures the pool without teaching it (a bench's baselines, pinned members on the same
prompts): its calls leave no experience, outcome, trust, self-verification, metabolic outcome or context
history, as DREAM's replays do.

Each tenant has its own sessions, its own KV prefix cache (the cache salt is its name), feedback only for its
own requests, a concurrency limit and a budget share. What one tenant can and cannot see of another is in
docs/pool.md.
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from k1.common.config_files import read_toml
from k1.errors import ConfigError


@dataclass(frozen=True)
class Tenant:
    name: str
    admin: bool = False
    trusted: bool = False
    concurrency: int = 1 << 30
    budget_share: float = 1.0
    probe: bool = False  # answered and charged; the pool learns nothing from its calls

    @property
    def cache_salt(self) -> str:
        """Keys the tenant's KV prefix cache entries: no prompt of one tenant is ever resumed for another."""
        return self.name

    def owns(self, other: str | None) -> bool:
        """May this tenant act on (give feedback for) a request of tenant `other`?"""
        return self.admin or other == self.name


# in-process callers (the CLI, DREAM, the benches, a single-key or keyless server): the operator
OPERATOR = Tenant("operator", admin=True, trusted=True)


class _TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key: str = Field(min_length=16, max_length=512)
    admin: bool = False
    trusted: bool = False
    concurrency: int = Field(default=4, ge=1, le=1024)
    budget_share: float = Field(default=1.0, gt=0, le=1)
    probe: bool = False


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: list[_TenantSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> _KeysFile:
        if any(t.name == OPERATOR.name for t in self.tenant):
            raise ValueError(f"the name {OPERATOR.name!r} is the in-process operator's; choose another")
        for what in ("name", "key"):
            seen = [getattr(t, what) for t in self.tenant]
            if len(set(seen)) != len(seen):
                raise ValueError(f"every tenant needs its own {what}; two share one")
        return self


class Tenants:
    """Key → tenant. `find` compares the given key against every key in constant time."""

    def __init__(self, keys: dict[str, Tenant]):
        self.keys = dict(keys)

    @property
    def open(self) -> bool:
        """No key at all: whoever reaches the port is the operator (bind to 127.0.0.1 only)."""
        return not self.keys

    def find(self, given: str) -> Tenant | None:
        found = None
        for key, tenant in self.keys.items():  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(given.encode(), key.encode()):
                found = tenant
        return found

    def __iter__(self):
        return iter(self.keys.values())

    @classmethod
    def single(cls, key: str | None) -> Tenants:
        return cls({key: OPERATOR} if key else {})

    @classmethod
    def from_file(cls, path: str | Path) -> Tenants:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"keys file {path}: no such file")
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"keys file {path} can be read by other users; run `chmod 600 {path}`")
        try:
            cfg = _KeysFile.model_validate(read_toml(path, "keys file"))
        except ValidationError as e:  # never echo a value: it may be a key
            raise ConfigError("; ".join(f"keys file {path}: {'.'.join(map(str, x['loc'])) or '<root>'}: "
                                        f"{x['msg'].removeprefix('Value error, ')}" for x in e.errors())) from None
        return cls({t.key: Tenant(t.name, admin=t.admin, trusted=t.trusted or t.admin, concurrency=t.concurrency,
                                  budget_share=t.budget_share, probe=t.probe) for t in cfg.tenant})
