"""Structural plasticity: prune, merge, grow and reorganize as real surgery on the stacked levels.

Each operation is a function (shape, agent rows) → `Surgery` (new shape, new agent rows). Agent rows hold
everything an agent owns, keyed by its stable id: its parameter rows, its optimizer moment rows and its
step count, so optimizer state follows its agent through every operation. `extract` reads rows out of a
model and optimizer; `assemble` writes them into freshly built ones. Ids are never reused.

Rules (DESIGN.md, "Self-organisation"):
- prune removes an agent *and its subtree* (children cannot be re-parented across levels); never the root,
  never below `min_agents`.
- merge fuses two leaf siblings: parameters and moments are averaged, the step count is the larger, the
  gate bias becomes log(e^b1 + e^b2) so the pair's combined gate mass is kept (keys are averaged).
- grow adds a child whose residual branches are zero (an identity map). Under a leaf it inherits all of
  its parent's path weight, so the network's output is exactly unchanged; under an agent that already has
  children its gate bias starts at `GROW_BIAS` (share ≈ e^-4 of a sibling's), a small change the trial judges.
- reorganize moves an agent (with its subtree) to another parent on the same level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from k1.engine.model.level import RESIDUAL_OUTPUTS, AgentLevel
from k1.engine.model.shape import LEVEL_PREFIXES, AgentSpec, TreeShape
from k1.errors import ConfigError

AgentRows = dict[int, dict[str, torch.Tensor]]  # id → {"param.<n>", "<moment>.<n>", "steps"}
GROW_BIAS = -4.0  # e^-4 ≈ 1.8 % of one sibling's gate mass at insertion: small, yet enough gradient to learn


@dataclass(frozen=True)
class Surgery:
    op: str
    shape: TreeShape
    rows: AgentRows
    detail: dict = field(default_factory=dict)
    merged: dict[int, list[int]] = field(default_factory=dict)  # survivor → ids whose trust it averages


def extract(model, optimizer) -> AgentRows:
    """Every agent's parameter rows, optimizer-state rows and step count, by id (clones)."""
    rows: AgentRows = {}
    offs = model.shape.level_offsets()
    for lv, level in enumerate(model.agent_levels()):
        for i in range(level.n_agents):
            a = model.shape.agents[offs[lv] + i]
            r = {f"param.{n}": p.detach()[i].clone() for n, p in level.agent_parameters()}
            for n, _ in level.agent_parameters():
                for k, v in optimizer.state.get(f"levels.{lv}.{n}", {}).items():
                    r[f"{k}.{n}"] = v[i].clone()
            r["steps"] = optimizer.agent_steps[lv][i].clone()
            rows[a.id] = r
    return rows


@torch.no_grad()
def assemble(old_model, old_optimizer, new_model, new_optimizer, rows: AgentRows) -> None:
    """Fill a freshly built model/optimizer (new shape) from agent rows and the old shared state."""
    for (n, p_new), (_, p_old) in zip(new_model.shared_parameters(), old_model.shared_parameters()):
        p_new.copy_(p_old)
    for n, _ in new_model.shared_parameters():
        if n in old_optimizer.state:
            new_optimizer.state[n] = {k: v.clone() for k, v in old_optimizer.state[n].items()}
    new_optimizer.shared_steps = old_optimizer.shared_steps.clone()
    offs = new_model.shape.level_offsets()
    for lv, level in enumerate(new_model.agent_levels()):
        ids = [new_model.shape.agents[offs[lv] + i].id for i in range(level.n_agents)]
        for n, p in level.agent_parameters():
            p.copy_(torch.stack([rows[a][f"param.{n}"] for a in ids]))
            keys = sorted({k.split(".")[0] for a in ids for k in rows[a] if k.endswith("." + n) and not k.startswith("param.")})
            if keys:
                new_optimizer.state[f"levels.{lv}.{n}"] = {
                    k: torch.stack([rows[a].get(f"{k}.{n}", torch.zeros_like(p[0])) for a in ids]) for k in keys}
        new_optimizer.agent_steps[lv] = torch.stack([rows[a]["steps"] for a in ids])


# ---- operations ----------------------------------------------------------------------------------
def prune(shape: TreeShape, rows: AgentRows, agent_id: int, min_agents: int = 3) -> Surgery:
    if agent_id == shape.agents[0].id:
        raise ConfigError("prune: the root cannot be pruned")
    gone = _subtree(shape, agent_id)
    if shape.n_agents - len(gone) < min_agents:
        raise ConfigError(f"prune: removing {len(gone)} agents would leave fewer than {min_agents}")
    keep = [a for a in shape.agents if a.id not in gone]
    return Surgery("prune", _reshape(shape, keep), {k: v for k, v in rows.items() if k not in gone},
                   {"agent": _name(shape, agent_id), "removed": [_name(shape, i) for i in sorted(gone)]})


def merge(shape: TreeShape, rows: AgentRows, keep_id: int, drop_id: int) -> Surgery:
    a, b = _spec(shape, keep_id), _spec(shape, drop_id)
    if a.parent != b.parent or keep_id == drop_id:
        raise ConfigError(f"merge: {a.name} and {b.name} are not siblings")
    if shape.children(keep_id) or shape.children(drop_id):
        raise ConfigError("merge: only leaf siblings can be merged")
    ra, rb = rows[keep_id], rows[drop_id]
    fused = {k: (ra[k] + rb[k]) / 2 for k in ra}
    fused["steps"] = torch.maximum(ra["steps"], rb["steps"])
    fused["param.gate_bias"] = torch.logaddexp(ra["param.gate_bias"], rb["param.gate_bias"])
    new_rows = {k: v for k, v in rows.items() if k != drop_id}
    new_rows[keep_id] = fused
    keep = [s for s in shape.agents if s.id != drop_id]
    return Surgery("merge", _reshape(shape, keep), new_rows, {"keep": a.name, "drop": b.name},
                   merged={keep_id: [keep_id, drop_id]})


def grow(shape: TreeShape, rows: AgentRows, parent_id: int, level_factory, generator=None) -> Surgery:
    """Add a child under `parent_id`; `level_factory(kind, n)` builds an `AgentLevel` for fresh init."""
    parent = _spec(shape, parent_id)
    level = parent.level + 1
    if level - 1 >= len(LEVEL_PREFIXES):
        raise ConfigError(f"grow: the tree may not be deeper than {len(LEVEL_PREFIXES) + 1} levels")
    kinds = shape.kinds if level < shape.n_levels else (*shape.kinds, shape.kinds[-1])
    siblings = shape.children(parent_id)
    used = {int(s.name.rsplit(".", 1)[-1][1:]) for s in siblings}
    j = max(used, default=-1) + 1
    prefix = "" if parent.level == 0 else parent.name + "."
    child = AgentSpec(shape.next_id, f"{prefix}{LEVEL_PREFIXES[level - 1]}{j}", level, parent_id)
    fresh: AgentLevel = level_factory(kinds[level], 1)
    r = {f"param.{n}": p.detach()[0].clone() for n, p in fresh.agent_parameters()}
    for n in RESIDUAL_OUTPUTS:  # identity map at insertion
        if f"param.{n}" in r:
            r[f"param.{n}"].zero_()
    r["param.gate_key"].zero_()
    r["param.gate_bias"].fill_(0.0 if not siblings else GROW_BIAS)
    r["steps"] = torch.zeros_like(next(iter(rows.values()))["steps"])
    new_shape = TreeShape((*shape.agents, child), tuple(kinds), next_id=shape.next_id + 1)
    return Surgery("grow", _reshape(new_shape, list(new_shape.agents)), {**rows, child.id: r},
                   {"parent": parent.name, "child": child.name, "new_level": level >= shape.n_levels})


def reorganize(shape: TreeShape, rows: AgentRows, agent_id: int, new_parent_id: int) -> Surgery:
    a, p = _spec(shape, agent_id), _spec(shape, new_parent_id)
    if a.parent is None or p.level != a.level - 1 or p.id == a.parent:
        raise ConfigError(f"reorganize: {p.name} is not another agent on {a.name}'s parent level")
    old_parent = _name(shape, a.parent)
    if len(shape.children(a.parent)) == 1:
        raise ConfigError(f"reorganize: {a.name} is the only child of {old_parent}")
    moved = [AgentSpec(s.id, s.name, s.level, new_parent_id) if s.id == agent_id else s for s in shape.agents]
    return Surgery("reorganize", _reshape(shape, moved), dict(rows),
                   {"agent": a.name, "from": old_parent, "to": p.name})


# ---- helpers ---------------------------------------------------------------------------------------
def _reshape(shape: TreeShape, agents: list[AgentSpec]) -> TreeShape:
    """Level-major order (stable within a level); trailing empty levels are dropped."""
    agents = sorted(agents, key=lambda s: s.level)
    depth = max(s.level for s in agents) + 1
    return TreeShape(tuple(agents), tuple(shape.kinds[:depth]), next_id=shape.next_id)


def _subtree(shape: TreeShape, agent_id: int) -> set[int]:
    out, frontier = {agent_id}, [agent_id]
    while frontier:
        kids = [s.id for f in frontier for s in shape.children(f)]
        out.update(kids)
        frontier = kids
    return out


def _spec(shape: TreeShape, agent_id: int) -> AgentSpec:
    for s in shape.agents:
        if s.id == agent_id:
            return s
    raise ConfigError(f"no agent with id {agent_id}")


def _name(shape: TreeShape, agent_id: int) -> str:
    return _spec(shape, agent_id).name

