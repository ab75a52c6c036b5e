"""Building a run's parts from its config: the device, the model (a tree, or the dense baseline sized to
it), and what is built for the model's shape (`install`: optimizer, policy, FLOP tables)."""

from __future__ import annotations

import torch

from k1.engine.config import RunConfig
from k1.engine.model.baseline import DenseGPT
from k1.engine.model.flops import flops_per_token
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree
from k1.engine.update.optim import build_optimizer
from k1.engine.update.policies import build_policy
from k1.engine.update.signals import flat_parents_tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: RunConfig, vocab_size: int, shape: TreeShape | None = None) -> AgentTree:
    model_cfg = cfg.model.model_copy(update={"vocab_size": vocab_size})
    if cfg.arch == "dense":
        return DenseGPT(model_cfg, vocab_size, n_layers=cfg.model.dense_layers or len(cfg.model.branching) + 1)
    shape = shape or TreeShape.from_branching(cfg.model.branching, cfg.model.kinds)
    return AgentTree(shape, model_cfg, vocab_size)


def install(state, model) -> None:
    """Make `model` the state's current model and build what depends on its shape: a fresh optimizer, the
    policy rebuilt for the shape (keeping its random stream and top-K knob), the FLOP tables. Used at the
    start, after surgery and when a snapshot or checkpoint has another shape."""
    state.model, state.shape = model, model.shape
    state.parents = flat_parents_tensor(state.shape, state.device)
    state.optimizer = build_optimizer(model, state.cfg.optim)
    old = state.policy
    state.policy = build_policy(state.cfg.policy, state.shape, state.device, state.cfg.train.seed)
    if old is not None:
        state.policy.load_state_dict(old.state_dict())
        state.policy.k = old.k
    state.forward = torch.compile(model) if state.cfg.train.compile else model
    state.total_params = model.num_parameters()
    state.agent_names = state.shape.names()
    # the engine's one FLOP counter (flops.py), per token of this shape, and each agent's level
    B, T = state.cfg.train.batch_size, state.cfg.model.context
    state.flops = flops_per_token(model, B * T)
    state.agent_level = torch.tensor([a.level for a in state.shape.agents], device=state.device)
    state.level_sizes = torch.tensor(state.shape.level_sizes(), device=state.device, dtype=torch.float64)
    state.level_weight_flops = torch.tensor(state.flops.weight_levels, device=state.device, dtype=torch.float64)
