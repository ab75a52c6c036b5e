"""Routed compute (top-1 and top-k): each token visits k agents per level, causality holds, the router learns,
capacity bounds every agent's work, the option refuses attention agents below the root, and every policy
trains a routed tree sparsely."""

import pytest
import torch

from k1.engine.config import validate
from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig
from k1.errors import ConfigError


def routed(branching=(3, 2), wiring="tree", routing="top1", **kw) -> AgentTree:
    kinds = ["block"] + ["mlp"] * len(branching)
    cfg = ModelConfig(branching=list(branching), kinds=kinds, width=32, mlp_width=48, n_heads=2, context=16,
                      wiring=wiring, routing=routing, **kw)
    torch.manual_seed(0)
    model = AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 64)
    for level in model.levels:  # distinct gate keys, so routing is not a tie
        torch.nn.init.normal_(level.gate_key, 0, 1.0)
    return model


@pytest.mark.parametrize("routing", ["top1", "topk"])
@pytest.mark.parametrize("wiring", ["tree", "levels"])
def test_one_sequence_is_causal(wiring, routing):
    model = routed(wiring=wiring, routing=routing, capacity_factor=4.0)
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


@pytest.mark.parametrize("routing", ["top1", "topk"])
def test_router_and_agents_get_gradients(routing):
    model = routed(routing=routing)
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


@pytest.mark.parametrize("policy,routing", [("attribution", "top1"), ("hybrid", "top1"), ("dense", "top1"),
                                            ("attribution", "topk"), ("dense", "topk")])
def test_every_policy_trains_a_routed_tree(policy, routing, tiny_cfg, tmp_path):
    from k1.engine.run.step import train_step
    from k1.engine.run.train import Trainer

    cfg = tiny_cfg("model.branching=[3, 2]", 'model.kinds=["block", "mlp", "mlp"]', f'model.routing="{routing}"',
                   "model.defer_weight_grads=true", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    before = {n: p.detach().clone() for n, p in tr.state.model.named_parameters()}
    for _ in range(3):
        rec = train_step(tr.state, *tr.state.sampler.next())
    assert bool(rec.finite)
    moved = sum(not torch.equal(before[n], p) for n, p in tr.state.model.named_parameters())
    assert moved > 0


def visits(model, x) -> list[int]:
    """Per routed level, the dispatched rows an agent MLP received (non-zero rows of its input)."""
    seen = []
    for level in model.levels[1:]:
        orig = level._mlp
        level._mlp = lambda h, normed=None, orig=orig: seen.append(int(h.abs().sum(-1).gt(0).sum())) or orig(h, normed)
    model(x)
    return seen


def test_top_k_with_k_1_is_top_1_exactly():
    x = torch.randint(0, 64, (2, 16))
    a = routed(routing="top1")(x, x)
    b = routed(routing="topk", route_k=1)(x, x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("wiring", ["tree", "levels"])
def test_top_k_visits_k_children_per_token_and_level(wiring):
    """Branching [3, 4]: under the root 3 children (k = 2 of them), then the 8 children of a token's two
    agents (tree) or all 12 (levels): 2 visits per token on every level, with room for all of them."""
    x = torch.randint(0, 64, (2, 16))
    model = routed((3, 4), wiring=wiring, routing="topk", route_k=2, capacity_factor=16.0)
    assert visits(model, x) == [2 * x.numel()] * 2
    mass, offs, sizes = model.last_gate_mass, model.shape.level_offsets(), model.shape.level_sizes()
    for lv in (1, 2):  # path weights of the visited agents: positive, at most 1 per token
        level_mass = mass[offs[lv]:offs[lv] + sizes[lv]]
        assert (level_mass > 0).sum() >= 2 and 0 < level_mass.sum() <= 1.0 + 1e-6
    top1 = routed((3, 4), wiring=wiring, routing="top1", capacity_factor=16.0)
    assert visits(top1, x) == [x.numel()] * 2


def test_top_k_needs_at_most_k_allowed_children():
    """Branching [2, 1]: one child under each node, so a token's two agents offer exactly 2 children on
    level 2, and with k = 3 it visits only what exists (2 on level 1, 2 on level 2)."""
    x = torch.randint(0, 64, (2, 16))
    model = routed((2, 1), routing="topk", route_k=3, capacity_factor=16.0)
    assert visits(model, x) == [2 * x.numel()] * 2


def test_top_k_capacity_bounds_each_agents_rows():
    x = torch.randint(0, 64, (2, 16))
    R, k, cf = x.numel(), 2, 0.5
    model = routed((3, 4), routing="topk", route_k=k, capacity_factor=cf)
    per_level = visits(model, x)
    for n, rows in zip((3, 12), per_level):  # at most N · ceil(cf · R · k / N) rows; overflow passes unchanged
        cap = -(-int(cf * R * k) // n)
        assert rows <= n * cap and rows < R * k
    logits, loss = model(x, x)
    assert torch.isfinite(loss)


# ---- isolation per token (issue 26) -----------------------------------------------------------------------
@pytest.mark.parametrize("routing", ["top1", "topk"])
def test_an_agent_off_a_tokens_path_gets_no_gradient_from_it(routing):
    """One token's loss reaches the MLP of exactly the agents it was dispatched to (one chain per level for
    top-1, at most k per level for top-k); besides them only the gate keys of the children that competed
    for it move (the router's softmax); every other agent gets exactly zero gradient."""
    model = routed(branching=(3, 2, 2), routing=routing, capacity_factor=8.0)  # nothing dropped
    model.train()
    x = torch.randint(0, 64, (2, 16))
    k = model.route_k
    for b, t in [(0, 3), (1, 11), (0, 15)]:
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        torch.nn.functional.cross_entropy(logits[b, t][None], x[b, (t + 1) % 16][None]).backward()
        shape, offs = model.shape, model.shape.level_offsets()
        visited = {0}
        for lv in range(1, len(model.levels)):
            level = model.levels[lv]
            grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in level.agent_parameters()}
            mlp = [n for n in grads if not n.startswith("gate_")]
            on = {i for i in range(level.n_agents) if any(grads[n][i].any() for n in mlp)}
            competed = {i for i in range(level.n_agents) if grads["gate_key"][i].any()}
            ids = {offs[lv] + i for i in on}
            assert 1 <= len(on) <= k, (lv, on)
            assert all(shape.agents[a].parent in {shape.agents[v].id for v in visited} for a in ids)
            allowed = {i for i in range(level.n_agents)
                       if shape.agents[offs[lv] + i].parent in {shape.agents[v].id for v in visited}}
            assert on <= competed <= allowed  # the rest of the level: exactly zero, gate keys included
            assert all(not grads[n][i].any() for i in range(level.n_agents) if i not in allowed for n in grads)
            visited = ids


def test_router_z_loss_is_added_in_training_only():
    x = torch.randint(0, 64, (2, 16))
    plain, z = routed(route_balance=0.0), routed(route_balance=0.0, route_z=0.1)
    assert plain.state_dict().keys() == z.state_dict().keys()
    z.load_state_dict(plain.state_dict())
    plain.train(), z.train()
    a, b = plain(x, x)[1], z(x, x)[1]
    zl = z.z_loss.detach().item()
    assert zl > 0 and (b - a).item() == pytest.approx(0.1 * zl, rel=1e-4)
    z.eval()
    assert torch.equal(z(x, x)[1], plain.eval()(x, x)[1])  # evaluation: the data loss only
    with pytest.raises(Exception):
        ModelConfig(routing="top1", kinds=["block", "mlp", "mlp"], branching=[2, 2], route_z=-1.0)
