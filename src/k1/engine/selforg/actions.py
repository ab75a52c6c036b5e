"""Organizer actions, registered by name: what a trial applies to the state (tune, grow, prune, merge,
reorganize). Each is `action(state, args) -> detail` and raises `ConfigError` when it is not a valid
operation on the current tree (the trial is then recorded as invalid and the control branch kept)."""

from __future__ import annotations

from k1.engine.model.level import AgentLevel
from k1.engine.selforg.plasticity import extract, grow, merge, prune, reorganize
from k1.registry import Registry

ACTIONS: Registry = Registry("organizer action")


@ACTIONS.register("tune")
def tune(state, args: dict) -> dict:
    old = {"lr_scale": state.lr_scale, "top_k": state.policy.k}
    state.lr_scale = args["lr_scale"]
    if args.get("top_k") is not None:
        state.policy.k = min(args["top_k"], state.shape.n_agents)
    return {"from": old, "to": {"lr_scale": state.lr_scale, "top_k": state.policy.k}}


def _surgery(state, s) -> dict:
    state.apply_surgery(s)
    return {"surgery": s.op, **s.detail}


@ACTIONS.register("grow")
def grow_action(state, args: dict) -> dict:
    cfg, shape = state.cfg.model, state.shape
    factory = lambda kind, n: AgentLevel(kind, n, cfg.width, cfg.mlp_width, cfg.n_heads,  # noqa: E731
                                         depth=shape.n_levels).to(state.device)
    return _surgery(state, grow(shape, extract(state.model, state.optimizer), args["parent"], factory))


@ACTIONS.register("prune")
def prune_action(state, args: dict) -> dict:
    rows = extract(state.model, state.optimizer)
    return _surgery(state, prune(state.shape, rows, args["agent"], min_agents=state.cfg.autonomy.agent_bounds[0]))


@ACTIONS.register("merge")
def merge_action(state, args: dict) -> dict:
    return _surgery(state, merge(state.shape, extract(state.model, state.optimizer), args["keep"], args["drop"]))


@ACTIONS.register("reorganize")
def reorganize_action(state, args: dict) -> dict:
    rows = extract(state.model, state.optimizer)
    return _surgery(state, reorganize(state.shape, rows, args["agent"], args["parent"]))
