"""Continual-learning strategies of `k1 continual`: each is a template (which model, which update policy)
plus plugins (`plugins.py`: replay, EWC, the domain boundary, autonomy, ...), registered by name in
`STRATEGIES`; docs/continual.md gives each K-1 mechanism's rationale.

The stage loop and the metrics live in `continual.py`, the report in `continual_report.py`; this file only
composes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from k1.engine.config import RunConfig
from k1.errors import ConfigError
from k1.experiments.ewc import EWCPenalty
from k1.experiments.plugins import (
    EWC,
    PLUGINS,
    AdapterAtShift,
    Autonomy,
    Boundary,
    ConsolidateAtShift,
    Context,
    ContinualConfig,
    FreezeShared,
    GrowAtShift,
    HardRoutes,
    ModelOptions,
    PathK,
    Plugin,
    Replay,
    _policy,
)
from k1.experiments.replay import ReplaySampler, ReservoirBuffer
from k1.registry import Registry

__all__ = [
    "PLUGINS",
    "QUICK_STRATEGIES",
    "STRATEGIES",
    "STRATEGY_ORDER",
    "ContinualConfig",
    "EWCPenalty",
    "ReplaySampler",
    "ReservoirBuffer",
    "Strategy",
    "check_strategies",
    "strategy_config",
]


@dataclass(frozen=True)
class Strategy:
    """One row of the continual table: the template (architecture and update policy) and its plugins."""

    name: str
    arch: str  # "dense": DenseGPT; "tree": the AgentTree
    policy: str  # update policy
    plugins: tuple[Plugin, ...] = ()

    def config(self, base: RunConfig, steps_per_domain: int | None = None) -> RunConfig:
        """`base` with this strategy's architecture and policy, autonomy off, then each plugin's changes."""
        policy = base.policy if base.policy.name == self.policy else _policy({"name": self.policy})
        autonomy = base.autonomy.model_copy(update={"enabled": False})
        cfg = base.model_copy(update={"arch": self.arch, "policy": policy, "autonomy": autonomy, "name": self.name})
        for p in self.plugins:
            cfg = p.configure(cfg, steps_per_domain)
        return cfg

    def hooks(self, ccfg: ContinualConfig, seed: int, state, n_stages: int) -> list:
        ctx = Context(ccfg, seed, state, n_stages)
        return [h for p in self.plugins for h in p.hooks(ctx)]

    def uses(self, plugin: str) -> bool:
        return any(p.name == plugin for p in self.plugins)


STRATEGIES: Registry[Strategy] = Registry("strategy")
for _s in [
    Strategy("gpt-naive", "dense", "dense"),
    Strategy("gpt-replay", "dense", "dense", (Replay(),)),
    Strategy("gpt-ewc", "dense", "dense", (EWC(),)),
    Strategy("tree-naive", "tree", "dense"),
    Strategy("tree-replay", "tree", "dense", (Replay(),)),
    Strategy("tree-ewc", "tree", "dense", (EWC(),)),
    Strategy("random-k", "tree", "random", (PathK(),)),
    Strategy("k1-attribution", "tree", "attribution"),
    Strategy("k1-hybrid", "tree", "hybrid", (PathK(),)),
    Strategy("k1-auto", "tree", "attribution", (Autonomy(),)),
    Strategy("k1-replay", "tree", "attribution", (Replay(),)),
    Strategy("k1-protect", "tree", "protect", (Boundary(),)),
    Strategy("k1-balance", "tree", "attribution", (ModelOptions((("gate_balance", 0.1),)),)),
    # the mechanisms of docs/continual.md that need no domain label: shifts are detected from the loss
    Strategy("k1-grow", "tree", "grow", (GrowAtShift(),)),
    Strategy("k1-usage", "tree", "usage", (ConsolidateAtShift(),)),
    Strategy("k1-ewc", "tree", "attribution", (EWC(),)),
    # controls for *which* agents: attribution's scales and path length, the path drawn at random
    Strategy("random-path", "tree", "random-path"),
    Strategy("random-path-ewc", "tree", "random-path", (EWC(),)),
    # isolation where the forgetting is: the shared parameters (embeddings, final norm, tied head)
    Strategy("tree-freeze", "tree", "dense", (FreezeShared(),)),
    Strategy("k1-freeze", "tree", "attribution", (FreezeShared(),)),
    Strategy("random-path-freeze", "tree", "random-path", (FreezeShared(),)),
    Strategy("k1-ewc-shared", "tree", "attribution", (EWC("shared"),)),
    # isolation per token: hard routes (a token's gradient reaches only its path)
    Strategy("tree-route", "tree", "dense", (HardRoutes(),)),
    Strategy("k1-route", "tree", "attribution", (HardRoutes(),)),
    Strategy("random-path-route", "tree", "random-path", (HardRoutes(),)),
    Strategy("k1-usage-route", "tree", "usage", (HardRoutes(), ConsolidateAtShift())),
    Strategy("k1-adapter", "tree", "attribution", (AdapterAtShift(),)),
    Strategy("k1-route-adapter", "tree", "attribution", (HardRoutes(), AdapterAtShift())),
]:
    STRATEGIES.add(_s.name, _s)
STRATEGY_ORDER = STRATEGIES.names()  # table order
# `k1 continual --quick`: a smoke test of every kind of row at one seed — a dense baseline, the tree
# without and with the two classic baselines, the random control and the K-1 mechanisms
QUICK_STRATEGIES = ["gpt-naive", "tree-naive", "tree-replay", "tree-ewc", "random-k", "k1-attribution",
                    "k1-replay"]


def check_strategies(names: Sequence[str]) -> list[str]:
    """The requested strategies in the order given; a one-line ConfigError for an unknown or repeated one."""
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        if n not in STRATEGIES:
            raise ConfigError(f"unknown strategy {n!r} in --strategies; choose from {', '.join(STRATEGY_ORDER)}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"--strategies {','.join(names)!r}: list each strategy once, at least one")
    return names


def strategy_config(name: str, base: RunConfig, steps_per_domain: int | None = None) -> RunConfig:
    return STRATEGIES.get(name).config(base, steps_per_domain)
