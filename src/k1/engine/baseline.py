"""`DenseGPT`: the backprop baseline — a plain pre-norm GPT with the tree's embedding, head and width.

It is an `AgentTree` whose shape is a chain (branching [1, 1, ...]): each block refines the previous one,
every gate is a softmax over one sibling (exactly 1) and the last block is the only leaf, which makes it
a standard L-layer GPT that shares every kernel with the tree, so speed and loss compare like for like.
The depth L is chosen so that the parameter count matches the tree's (within 5 %, tested).
"""

from __future__ import annotations

from k1.engine.level import agent_param_count
from k1.engine.shape import TreeShape
from k1.engine.tree import AgentTree, ModelConfig


def matching_depth(tree_shape: TreeShape, cfg: ModelConfig) -> int:
    """Number of `block` layers whose parameters best match the tree's agents."""
    tree_agents = sum(
        n * agent_param_count(kind, cfg.width, cfg.mlp_width)
        for kind, n in zip(tree_shape.kinds, tree_shape.level_sizes())
    )
    return max(1, round(tree_agents / agent_param_count("block", cfg.width, cfg.mlp_width)))


class DenseGPT(AgentTree):
    """A GPT with `n_layers` blocks; pass `match=tree_shape` to size it to a tree's parameter budget."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_layers: int | None = None,
                 match: TreeShape | None = None):
        if n_layers is None:
            n_layers = matching_depth(match or TreeShape.from_branching(cfg.branching, cfg.kinds), cfg)
        chain = TreeShape.chain(n_layers, "block")
        super().__init__(chain, cfg.model_copy(update={"wiring": "tree"}), vocab_size)
        self.n_layers = n_layers
