"""Building a run's parts from its config: the device, and the model (a tree, or the dense baseline sized
to it)."""

from __future__ import annotations

import torch

from k1.engine.config import RunConfig
from k1.engine.model.baseline import DenseGPT
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree


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
