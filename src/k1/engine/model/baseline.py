"""`DenseGPT`: the backprop baseline — a plain pre-norm GPT with the tree's embedding, head and width.

It is an `AgentTree` whose shape is a chain: each block refines the previous one, every gate is a softmax
over one sibling (exactly 1) and the last block is the only leaf, which makes it a standard L-layer GPT
that shares every kernel with the tree, so speed and loss compare like for like.

Its parameter count matches the tree's (within 5 %, tested). Without `n_layers` it has as many blocks as
the tree has agents (same MLP width); with `n_layers` (the trainer passes the tree's depth, 4 for [4, 3, 2])
its MLP is widened to keep the budget. The trainer uses the shallow form, because the deep one is a straw
man: after 150 steps on the built-in data a 41-block GPT reaches 4.645 bits/byte and a 4-block one 3.836
(`k1 train --preset default --steps 150 --set 'arch="dense"' --set 'policy="dense"'
--set model.dense_layers=41`, then `=4`).
"""

from __future__ import annotations

from k1.engine.model.level import agent_param_count
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig


def matching_depth(tree_shape: TreeShape, cfg: ModelConfig) -> int:
    """Number of `block` layers whose parameters best match the tree's agents."""
    tree_agents = sum(
        n * agent_param_count(kind, cfg.width, cfg.mlp_width)
        for kind, n in zip(tree_shape.kinds, tree_shape.level_sizes())
    )
    return max(1, round(tree_agents / agent_param_count("block", cfg.width, cfg.mlp_width)))


def matching_mlp_width(tree_shape: TreeShape, cfg: ModelConfig, n_layers: int) -> int:
    """MLP width that gives `n_layers` blocks the tree's agent parameter budget."""
    budget = sum(n * agent_param_count(kind, cfg.width, cfg.mlp_width)
                 for kind, n in zip(tree_shape.kinds, tree_shape.level_sizes())) / n_layers
    fixed = agent_param_count("block", cfg.width, 0)  # attention, norms, biases, gate key
    per_m = agent_param_count("block", cfg.width, 1) - fixed  # each MLP unit: C in + C out + 1 bias
    return max(1, round((budget - fixed) / per_m))


class DenseGPT(AgentTree):
    """A GPT with `n_layers` blocks; pass `match=tree_shape` to size it to a tree's parameter budget."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_layers: int | None = None,
                 match: TreeShape | None = None):
        tree = match or TreeShape.from_branching(cfg.branching, cfg.kinds)
        update: dict = {"wiring": "tree"}
        if n_layers is None:
            n_layers = matching_depth(tree, cfg)
        else:
            update["mlp_width"] = matching_mlp_width(tree, cfg, n_layers)
        chain = TreeShape.chain(n_layers, "block")
        super().__init__(chain, cfg.model_copy(update=update), vocab_size)
        self.n_layers = n_layers
