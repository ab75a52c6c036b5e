"""`TreeShape`: the immutable topology of an agent tree (ids, names, levels, parents).

Ids are stable and never reused; structural operations (issue 3) return a new shape. The model and the
optimizer address agents by a *flat index* (level-major order: all of level 0, then level 1, ...), which
`TreeShape` maps to and from ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from k1.errors import ConfigError

# Name prefixes per level below the root: n2, n2.a1, n2.a1.s0, then t/u/v for deeper trees.
LEVEL_PREFIXES = ("n", "a", "s", "t", "u", "v", "w")


@dataclass(frozen=True)
class AgentSpec:
    """One agent: a stable id, a hierarchical name, its level and its parent's id (None for the root)."""

    id: int
    name: str
    level: int
    parent: int | None


@dataclass(frozen=True)
class TreeShape:
    """Topology of the tree; agents are kept level-major, siblings in creation order."""

    agents: tuple[AgentSpec, ...]
    kinds: tuple[str, ...]  # agent kind per level ("block" or "mlp"); stacked levels share one kind
    next_id: int = field(default=0)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_branching(cls, branching: list[int], kinds: list[str] | str = "block") -> "TreeShape":
        """Root plus one level per branching factor: [4, 3, 2] → 1 + 4 + 12 + 24 = 41 agents."""
        if any(b < 1 for b in branching):
            raise ConfigError(f"model.branching: every factor must be >= 1, got {branching}")
        n_levels = len(branching) + 1
        if n_levels - 1 > len(LEVEL_PREFIXES):
            raise ConfigError(f"model.branching: at most {len(LEVEL_PREFIXES)} levels below the root")
        kinds = [kinds] * n_levels if isinstance(kinds, str) else list(kinds)
        if len(kinds) != n_levels:
            raise ConfigError(
                f"model.kinds: need one kind per level ({n_levels} for branching {branching}), got {len(kinds)}"
            )
        agents = [AgentSpec(0, "root", 0, None)]
        frontier = [agents[0]]
        for level, b in enumerate(branching, start=1):
            nxt = []
            for parent in frontier:
                for j in range(b):
                    prefix = "" if parent.level == 0 else parent.name + "."
                    # top-level nodes are numbered across the level (n0..n3), deeper ones per parent
                    spec = AgentSpec(len(agents), f"{prefix}{LEVEL_PREFIXES[level - 1]}{j}", level, parent.id)
                    agents.append(spec)
                    nxt.append(spec)
            frontier = nxt
        return cls(tuple(agents), tuple(kinds), next_id=len(agents))

    @classmethod
    def chain(cls, n_layers: int, kind: str = "block") -> "TreeShape":
        """A chain of `n_layers` agents named layer0, layer1, ... (the dense baseline's shape)."""
        agents = tuple(AgentSpec(i, f"layer{i}", i, None if i == 0 else i - 1) for i in range(n_layers))
        return cls(agents, (kind,) * n_layers, next_id=n_layers)

    # ---- queries ------------------------------------------------------------------------------
    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def n_levels(self) -> int:
        return len(self.kinds)

    def level_sizes(self) -> list[int]:
        sizes = [0] * self.n_levels
        for a in self.agents:
            sizes[a.level] += 1
        return sizes

    def level_offsets(self) -> list[int]:
        """Flat index of the first agent of each level."""
        offs, total = [], 0
        for n in self.level_sizes():
            offs.append(total)
            total += n
        return offs

    def flat_index(self) -> dict[int, int]:
        """Agent id → flat (level-major) index."""
        return {a.id: i for i, a in enumerate(self.agents)}

    def flat_parents(self) -> list[int]:
        """Flat index of each agent's parent (-1 for the root)."""
        idx = self.flat_index()
        return [-1 if a.parent is None else idx[a.parent] for a in self.agents]

    def parent_index(self, level: int) -> list[int]:
        """For each agent of `level`, the index *within level-1* of its parent (level 0: [0])."""
        if level == 0:
            return [0]
        offs = self.level_offsets()
        parents = self.flat_parents()
        return [parents[offs[level] + i] - offs[level - 1] for i in range(self.level_sizes()[level])]

    def is_leaf(self) -> list[bool]:
        has_child = {a.parent for a in self.agents}
        return [a.id not in has_child for a in self.agents]

    def names(self) -> list[str]:
        return [a.name for a in self.agents]

    def children(self, agent_id: int) -> list[AgentSpec]:
        return [a for a in self.agents if a.parent == agent_id]

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kinds": list(self.kinds),
            "next_id": self.next_id,
            "agents": [[a.id, a.name, a.level, a.parent] for a in self.agents],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TreeShape":
        agents = tuple(AgentSpec(int(i), str(n), int(lv), None if p is None else int(p)) for i, n, lv, p in d["agents"])
        return cls(agents, tuple(d["kinds"]), next_id=int(d["next_id"]))
