"""Who may join the hub: the agents file (TOML) names each agent, its token source and its allowed roles.

Tokens are read from the file itself or from an environment variable it names, never from the command
line (where `ps` shows them). Comparison is constant-time.

    [agents.alice]
    token_env = "ALICE_TOKEN"       # or: token = "..." (keep the file chmod 600)
    roles = ["proposer"]            # the roles alice may declare; "any" = every role; [] or absent = none
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from k1.common.config_files import read_toml
from k1.errors import ConfigError

ANY = "any"  # `roles = "any"` in the agents file: the agent may declare every role


@dataclass(frozen=True)
class AgentEntry:
    name: str
    token: str
    roles: frozenset[str] = field(default_factory=frozenset)  # the roles the agent may declare
    any_role: bool = False                                    # `roles = "any"`: it may declare every role


class AgentBook:
    """The known agents; `check(name, token)` is the whole authentication."""

    def __init__(self, entries: dict[str, AgentEntry]):
        self.entries = entries

    @classmethod
    def from_file(cls, path: str | Path) -> "AgentBook":
        path = Path(path)
        doc = read_toml(path, "agents file",
                        missing=f"agents file {path}: no such file (see docs/bridge-protocol.md for its format)")
        agents = doc.get("agents")
        if not isinstance(agents, dict) or not agents:
            raise ConfigError(f"agents file {path}: needs at least one [agents.NAME] table")
        entries = {}
        for name, spec in agents.items():
            unknown = set(spec) - {"token", "token_env", "roles"}
            if unknown:
                raise ConfigError(f"agents file {path}: agents.{name}: unknown keys {sorted(unknown)}")
            if "token_env" in spec:
                token = os.environ.get(spec["token_env"])
                if not token:
                    raise ConfigError(f"agents file {path}: agents.{name}: environment variable "
                                      f"{spec['token_env']} is not set")
            elif spec.get("token"):
                token = str(spec["token"])
            else:
                raise ConfigError(f"agents file {path}: agents.{name}: give `token` or `token_env`")
            roles = spec.get("roles", [])
            if roles == ANY:
                entries[name] = AgentEntry(name, token, frozenset(), any_role=True)
            elif isinstance(roles, list) and all(isinstance(r, str) for r in roles):
                entries[name] = AgentEntry(name, token, frozenset(roles))
            else:
                raise ConfigError(f'agents file {path}: agents.{name}: roles is a list of role names or "any", '
                                  f"got {roles!r}")
        return cls(entries)

    def check(self, name: str, token: str) -> bool:
        entry = self.entries.get(name)
        # compare against a dummy when the name is unknown, so timing does not reveal which names exist
        expected = entry.token if entry else "\0" * max(len(token), 1)
        return hmac.compare_digest(expected.encode(), token.encode()) and entry is not None

    def allowed_roles(self, name: str, roles: list[str]) -> bool:
        entry = self.entries[name]
        return entry.any_role or set(roles) <= entry.roles


def read_token(token_file: str | Path | None, env_var: str = "K1_BRIDGE_TOKEN") -> str:
    """A client's token: from --token-file, else from $K1_BRIDGE_TOKEN; never a command-line value."""
    if token_file is not None:
        p = Path(token_file)
        if not p.is_file():
            raise ConfigError(f"--token-file {p}: no such file")
        return p.read_text().strip()
    token = os.environ.get(env_var)
    if not token:
        raise ConfigError(f"no token: pass --token-file or set {env_var}")
    return token


def write_agents_file(path: str | Path, agents: dict[str, tuple[str, list[str] | str]]) -> Path:
    """Write an agents file from name → (token, roles or "any"); used by tests, the bench and `k1 bridge` demos."""
    import tomli_w

    path = Path(path)
    path.write_text(tomli_w.dumps({"agents": {n: {"token": t, "roles": r} for n, (t, r) in agents.items()}}))
    path.chmod(0o600)
    return path
