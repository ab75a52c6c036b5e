"""Model correctness: causality, next-token alignment, odd shapes, both wirings, the dense baseline."""

import pytest
import torch
import torch.nn.functional as F

from k1.engine.model.baseline import DenseGPT
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig

SHAPES = [[1], [5], [2, 2, 2, 2], [4, 3, 2]]


def make(branching, wiring="tree", kinds="block", width=32):
    cfg = ModelConfig(branching=branching, wiring=wiring, kinds=kinds, width=width, mlp_width=48, n_heads=2, context=16)
    torch.manual_seed(0)
    model = AgentTree(TreeShape.from_branching(branching, kinds), cfg, 64)
    for p in model.parameters():  # non-trivial gates so the test covers the mixing path
        if p.dim() == 2 and p.shape[-1] == width:
            torch.nn.init.normal_(p, 0, 0.3)
    return model


@pytest.mark.parametrize("branching", SHAPES)
@pytest.mark.parametrize("wiring", ["tree", "levels"])
def test_changing_token_t_changes_no_logit_before_t(branching, wiring):
    model = make(branching, wiring)
    x = torch.randint(0, 64, (2, 16))
    t = 9
    x2 = x.clone()
    x2[:, t] = (x2[:, t] + 1) % 64
    a, _ = model(x)
    b, _ = model(x2)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_mlp_levels_are_causal_too():
    model = make([2, 2], kinds=["block", "mlp", "mlp"])
    x = torch.randint(0, 64, (2, 16))
    x2 = x.clone()
    x2[:, 5] = (x2[:, 5] + 3) % 64
    assert torch.equal(model(x)[0][:, :5], model(x2)[0][:, :5])


def test_loss_is_next_token_cross_entropy():
    model = make([2, 2])
    seq = torch.randint(0, 64, (2, 17))
    x, y = seq[:, :-1], seq[:, 1:]
    logits, loss = model(x, y)
    manual = torch.stack([F.cross_entropy(logits[:, t], seq[:, t + 1]) for t in range(16)]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)


def test_tree_gates_are_a_distribution_over_leaves():
    model = make([3, 2])
    model(torch.randint(0, 64, (2, 16)))
    mass = model.last_gate_mass
    sizes = model.shape.level_sizes()
    assert mass[0] == 1.0
    assert torch.allclose(mass[1:1 + sizes[1]].sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(mass[1 + sizes[1]:].sum(), torch.tensor(1.0), atol=1e-5)


def test_every_agent_receives_gradient_in_the_tree_wiring():
    model = make([2, 3])
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].backward()
    for level in model.levels:
        g = level.fc_w.grad.flatten(1).norm(dim=1)
        assert (g > 0).all()


@pytest.mark.parametrize("branching", [[4, 3, 2], [5], [2, 2, 2, 2]])
def test_dense_gpt_matches_the_tree_parameter_budget_within_5_percent(branching):
    cfg = ModelConfig(branching=branching, width=64, mlp_width=128, n_heads=4)
    tree = AgentTree(TreeShape.from_branching(branching), cfg, 256)
    dense = DenseGPT(cfg, 256)
    assert abs(dense.num_parameters() - tree.num_parameters()) / tree.num_parameters() < 0.05
    # the baseline is an ordinary GPT: one chain, the last block the only leaf, same width and embedding
    assert dense.shape.level_sizes() == [1] * dense.n_layers
    assert dense.tok_emb.weight.shape == tree.tok_emb.weight.shape


def test_dense_gpt_is_causal():
    cfg = ModelConfig(width=32, mlp_width=48, n_heads=2, context=16)
    model = DenseGPT(cfg, 64, n_layers=3)
    x = torch.randint(0, 64, (2, 16))
    x2 = x.clone()
    x2[:, 4] = (x2[:, 4] + 1) % 64
    assert torch.equal(model(x)[0][:, :4], model(x2)[0][:, :4])


@pytest.mark.parametrize("n_layers", [2, 4, 8])
def test_shallow_dense_gpt_widens_its_mlp_to_keep_the_budget(n_layers):
    cfg = ModelConfig(branching=[4, 3, 2], width=64, mlp_width=128, n_heads=4)
    tree = AgentTree(TreeShape.from_branching([4, 3, 2]), cfg, 256)
    dense = DenseGPT(cfg, 256, n_layers=n_layers)
    assert dense.n_layers == n_layers
    assert abs(dense.num_parameters() - tree.num_parameters()) / tree.num_parameters() < 0.05


@pytest.mark.parametrize("wiring", ["tree", "levels"])
def test_ablating_an_agent_changes_the_output_and_ablating_none_does_not(wiring):
    model = make([2, 2], wiring)
    x = torch.randint(0, 64, (2, 16))
    base = model(x)[0]
    none = torch.zeros(model.shape.n_agents, dtype=torch.bool)
    assert torch.equal(model(x, ablate=none)[0], base)
    one = none.clone()
    one[4] = True
    assert not torch.allclose(model(x, ablate=one)[0], base)


# ---- gate load balancing (model.gate_balance) -----------------------------------------------------------------
def test_gate_imbalance_is_zero_for_an_even_split_and_n_minus_1_when_one_child_takes_all():
    from k1.engine.model.tree import _gate_imbalance

    group = torch.tensor([0, 0, 0, 1, 1])  # parent 0 has three children, parent 1 two
    parent_w = torch.tensor([0.5, 0.5]).view(2, 1, 1).expand(2, 2, 3)
    even = torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5]).view(5, 1, 1).expand(5, 2, 3)
    assert float(_gate_imbalance(even, group, parent_w)) == pytest.approx(0.0, abs=1e-6)
    onehot = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]).view(5, 1, 1).expand(5, 2, 3)
    assert float(_gate_imbalance(onehot, group, parent_w)) == pytest.approx(0.5 * 2 + 0.5 * 1)


def test_gate_balance_adds_a_loss_that_trains_the_gate_keys_and_is_off_by_default():
    from k1.engine.model.shape import TreeShape
    from k1.engine.model.tree import AgentTree, ModelConfig

    torch.manual_seed(0)
    shape = TreeShape.from_branching([3, 2])
    plain = AgentTree(shape, ModelConfig(width=16, mlp_width=32, n_heads=2, context=8), 20)
    balanced = AgentTree(shape, ModelConfig(width=16, mlp_width=32, n_heads=2, context=8, gate_balance=1.0), 20)
    balanced.load_state_dict(plain.state_dict())
    for level in (plain.levels[1], balanced.levels[1]):
        with torch.no_grad():
            level.gate_bias.copy_(torch.tensor([3.0, 0.0, 0.0]))  # n0 takes almost every token
    x = torch.randint(0, 20, (2, 8))
    _, l_plain = plain(x, x)
    _, l_bal = balanced(x, x)
    assert plain.aux_loss is None and float(l_bal.detach()) > float(l_plain.detach()) + 0.5
    balanced.eval()
    assert torch.equal(balanced(x, x)[1], plain.eval()(x, x)[1])  # evaluation sees the data loss only
    balanced.train()
    balanced(x, x)[0].sum().mul(0).add(balanced.aux_loss).backward()
    bias_grad = balanced.levels[1].gate_bias.grad
    assert bias_grad[0] > 0 > bias_grad[1]  # the balancing term pushes the favoured child's gate down
