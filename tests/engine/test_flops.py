"""The engine's FLOP counter (k1.engine.model.flops) against torch's own FlopCounterMode on real steps."""

import pytest
import torch

from k1.engine.model.baseline import DenseGPT
from k1.engine.model.flops import counted_flops, flops_per_token, forward_flops_per_token, train_flops
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig

CONFIGS = [{}, {"wiring": "levels"}, {"kinds": ["block", "mlp", "mlp"]}, {"kinds": "mlp"},
           {"kinds": ["block", "mlp", "mlp"], "routing": "top1"},
           {"kinds": ["mlp", "mlp", "mlp"], "routing": "top1", "wiring": "levels", "capacity_factor": 2.0},
           {"kinds": ["block", "mlp", "mlp"], "routing": "topk", "route_k": 2},
           {"kinds": ["mlp", "mlp", "mlp"], "routing": "topk", "route_k": 3, "wiring": "levels"}]


def tree(**kw) -> AgentTree:
    cfg = ModelConfig(branching=[3, 2], width=32, mlp_width=48, n_heads=2, context=16, **kw)
    return AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 64)


@pytest.mark.parametrize("kw", CONFIGS)
def test_counts_match_flop_counter_mode(kw):
    model = tree(**kw)
    x = torch.randint(0, 64, (2, 16))
    count = flops_per_token(model, batch_tokens=x.numel())
    assert counted_flops(lambda: model(x, x)) == x.numel() * count.forward
    assert counted_flops(lambda: model(x, x)[1].backward()) == x.numel() * count.train()


def test_dense_gpt_with_its_widened_mlp():
    cfg = ModelConfig(branching=[3, 2], width=32, mlp_width=48, n_heads=2, context=16)
    model = DenseGPT(cfg, 64, n_layers=3)
    x = torch.randint(0, 64, (2, 16))
    assert counted_flops(lambda: model(x, x)[1].backward()) == train_flops(model, x.numel())


def test_skippable_work_is_the_weight_gradients_only():
    model = tree()
    c = flops_per_token(model)
    assert forward_flops_per_token(model) == c.forward
    none_updated = c.train([0.0, 0.0, 0.0])
    assert none_updated == c.forward + c.backward_input + c.weight_shared
    assert c.train() - none_updated == pytest.approx(sum(c.weight_levels))
    with pytest.raises(ValueError):
        c.train([1.0])


def test_routed_cost_follows_depth_not_size():
    small = flops_per_token(tree(kinds=["block", "mlp", "mlp"], routing="top1"))
    cfg = ModelConfig(branching=[6, 4], width=32, mlp_width=48, n_heads=2, context=16,
                      kinds=["block", "mlp", "mlp"], routing="top1")
    big = flops_per_token(AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 64))
    # 4× the agents: only the per-agent gate scores grow, the agent work per token stays
    assert big.forward < 1.1 * small.forward
