"""Top-1 routed compute: each token visits one agent per level, causality holds, the router learns, the
option refuses attention agents below the root, and every policy trains a routed tree sparsely."""

import pytest
import torch

from k1.config import validate
from k1.engine.shape import TreeShape
from k1.engine.tree import AgentTree, ModelConfig
from k1.errors import ConfigError


def routed(branching=(3, 2), wiring="tree", **kw) -> AgentTree:
    kinds = ["block"] + ["mlp"] * len(branching)
    cfg = ModelConfig(branching=list(branching), kinds=kinds, width=32, mlp_width=48, n_heads=2, context=16,
                      wiring=wiring, routing="top1", **kw)
    torch.manual_seed(0)
    model = AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 64)
    for level in model.levels:  # distinct gate keys, so routing is not a tie
        torch.nn.init.normal_(level.gate_key, 0, 1.0)
    return model


@pytest.mark.parametrize("wiring", ["tree", "levels"])
def test_one_sequence_is_causal(wiring):
    model = routed(wiring=wiring, capacity_factor=4.0)
    x = torch.randint(0, 64, (1, 16))
    x2 = x.clone()
    x2[0, 9] = (x2[0, 9] + 1) % 64
    a, b = model(x)[0], model(x2)[0]
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_each_token_visits_one_child_of_its_agent_per_level():
    model = routed(capacity_factor=8.0)  # capacity for every token: nothing dropped
    model(torch.randint(0, 64, (2, 16)))
    mass, sizes, offs = model.last_gate_mass, model.shape.level_sizes(), model.shape.level_offsets()
    assert mass[0] == 1.0
    for lv in range(1, len(sizes)):
        level_mass = mass[offs[lv]:offs[lv] + sizes[lv]]
        assert 0 < level_mass.sum() <= 1.0 + 1e-6  # path weights of one visited agent per token


def test_cost_follows_capacity_not_tree_size():
    """Every agent's MLP sees capacity rows, whatever the branching: count the rows through fc_w."""
    rows = {}
    for branching in ((2, 2), (4, 4)):
        model = routed(branching)
        seen = []
        orig = model.levels[2]._mlp
        model.levels[2]._mlp = lambda x, normed=None: seen.append(x.shape[0] * x.shape[1]) or orig(x, normed)
        model(torch.randint(0, 64, (2, 16)))
        rows[branching] = seen[0]
    # 32 tokens, capacity factor 1.25: ≈ 40 rows for 4 agents and for 16 agents alike
    assert abs(rows[(2, 2)] - rows[(4, 4)]) <= 16 and rows[(4, 4)] < 2 * 32


def test_router_and_agents_get_gradients():
    model = routed()
    x = torch.randint(0, 64, (4, 16))
    _, loss = model(x, x)
    loss.backward()
    assert model.aux_loss is not None and model.aux_loss > 0
    for level in model.levels[1:]:
        assert level.gate_key.grad.abs().sum() > 0
        assert level.fc_w.grad.flatten(1).norm(dim=1).gt(0).any()


def test_evaluation_loss_is_the_data_loss_only():
    model = routed()
    x = torch.randint(0, 64, (2, 16))
    model.train()
    train_loss = model(x, x)[1]
    model.eval()
    logits, eval_loss = model(x, x)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 64), x.view(-1))
    assert torch.equal(eval_loss, ce)
    assert train_loss > eval_loss


def test_attention_below_the_root_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="routing"):
        validate({"model": {"branching": [2, 2], "routing": "top1"}})


@pytest.mark.parametrize("policy", ["attribution", "hybrid", "dense"])
def test_every_policy_trains_a_routed_tree(policy, tiny_cfg, tmp_path):
    from k1.engine.step import train_step
    from k1.engine.train import Trainer

    cfg = tiny_cfg("model.branching=[3, 2]", 'model.kinds=["block", "mlp", "mlp"]', 'model.routing="top1"',
                   "model.defer_weight_grads=true", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, callbacks=[])
    before = {n: p.detach().clone() for n, p in tr.state.model.named_parameters()}
    for _ in range(3):
        rec = train_step(tr.state, *tr.state.sampler.next())
    assert bool(rec.finite)
    moved = sum(not torch.equal(before[n], p) for n, p in tr.state.model.named_parameters())
    assert moved > 0
