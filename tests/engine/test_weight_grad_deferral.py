"""Deferred weight gradients: the same gradients for the agents a step selects, none for the others, a
policy signal that ranks agents like the exact one, and the skipped work visible in a FLOP count."""

import pytest
import torch

from k1.engine.model.flops import counted_flops, flops_per_token, path_fractions
from k1.engine.model.level import MATRICES
from k1.engine.model.plan import UpdatePlan
from k1.engine.model.shape import TreeShape
from k1.engine.update.signals import StepSignals, flat_parents_tensor, rank_correlation
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer
from k1.engine.model.tree import AgentTree, ModelConfig


def make(defer: bool, **kw) -> AgentTree:
    cfg = ModelConfig(branching=[3, 2], width=32, mlp_width=48, n_heads=2, context=16, defer_weight_grads=defer, **kw)
    torch.manual_seed(0)
    return AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 64)


def grads(model, x, plan=None, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(x, x)[1]
    loss.backward()
    model.finish_weight_grads(plan)
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for lv, level in enumerate(model.levels):  # a subset of rows keeps its matrix gradients compact
        for name in level.row_grads:
            out[f"levels.{lv}.{name}"] = level.weight_grad(name)
    return out


@pytest.mark.parametrize("kw", [{}, {"wiring": "levels"}, {"kinds": ["block", "mlp", "mlp"]}])
def test_all_rows_give_the_eager_gradients(kw):
    x = torch.randint(0, 64, (2, 16))
    eager, deferred = grads(make(False, **kw), x), grads(make(True, **kw), x)
    for n in eager:
        assert torch.allclose(eager[n], deferred[n], atol=1e-6, rtol=1e-4), n


def test_selected_rows_get_their_gradient_and_the_others_none():
    x = torch.randint(0, 64, (2, 16))
    model = make(True)
    eager = grads(make(False), x)
    scale = torch.zeros(model.shape.n_agents)
    scale[[0, 2, 5]] = 1.0  # the root, one node, one leaf
    got = grads(model, x, UpdatePlan(scale))
    for level in model.levels[1:]:  # no full-size zero gradient is built for a strict subset of rows
        assert all(getattr(level, name).grad is None for name in MATRICES)
        assert [g.shape[0] for g in level.row_grads.values()] == [1] * len(MATRICES)
    offs = model.shape.level_offsets()
    for lv, level in enumerate(model.levels):
        for name in MATRICES:
            full = f"levels.{lv}.{name}"
            for row in range(level.n_agents):
                selected = scale[offs[lv] + row] > 0
                want = eager[full][row] if selected else torch.zeros_like(eager[full][row])
                assert torch.allclose(got[full][row], want, atol=1e-6, rtol=1e-4), (full, row)


def test_bf16_autocast_defers_too():
    x = torch.randint(0, 64, (2, 16))
    eager, deferred = grads(make(False), x, autocast=True), grads(make(True), x, autocast=True)
    for n in eager:
        assert deferred[n].dtype == torch.float32
        assert torch.allclose(eager[n], deferred[n], atol=1e-3, rtol=5e-2), n


def test_estimated_signal_ranks_agents_like_the_exact_one(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.branching=[3, 2]", policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    for _ in range(10):  # past the symmetric start
        train_step(tr.state, *tr.state.sampler.next())
    model, parents = tr.state.model, flat_parents_tensor(tr.state.shape, "cpu")
    rhos = []
    for _ in range(3):
        x, y = tr.state.sampler.next()
        signals = []
        for defer in (False, True):
            for level in model.levels:
                level.defer_weight_grads = defer
            model.zero_grad(set_to_none=True)
            loss = model(x, y)[1]
            loss.backward()
            signals.append(StepSignals.measure(model, loss, parents).grad_rms)
            for level in model.levels:
                level.clear_deferred()
        rhos.append(rank_correlation(*signals))
    assert sum(rhos) / len(rhos) > 0.8, rhos


def test_flop_count_of_a_deferred_step_skips_the_unselected_weight_gradients():
    x = torch.randint(0, 64, (2, 16))
    model = make(True)
    path = torch.tensor([0, 1, 4])  # one agent per level, like attribution's blame path
    plan = UpdatePlan(torch.zeros(model.shape.n_agents).index_fill_(0, path, 1.0), path)

    def step(p):
        model.zero_grad(set_to_none=True)
        model(x, x)[1].backward()
        model.finish_weight_grads(p)

    dense, sparse = counted_flops(lambda: step(None)), counted_flops(lambda: step(plan))
    count = flops_per_token(model)
    assert dense == x.numel() * count.train()
    assert sparse == x.numel() * count.train(path_fractions(model))
    assert sparse < dense


def test_a_stash_no_step_finished_is_dropped_by_the_next_forward():
    model = make(True)
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].backward()  # e.g. an explain pass that never steps
    first = [level.deferred_grad_sq.clone() for level in model.levels]
    model(x, x)[1].backward()
    for level, est in zip(model.levels, first):
        assert len(level._pending) == 4  # qkv, proj, fc, out of this backward only
        assert torch.allclose(level.deferred_grad_sq, est)  # not summed with the stale one


def test_clip_follows_torchs_rule_and_sees_the_compact_rows():
    from k1.engine.run.step import clip_

    torch.manual_seed(0)
    grads = [torch.randn(3, 4) * 5, torch.randn(7) * 5]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    want = torch.nn.utils.clip_grad_norm_(params, 1.0)
    got = clip_(grads, 1.0)
    assert torch.allclose(got, want)
    for p, g in zip(params, grads):
        assert torch.allclose(p.grad, g)

    model = make(True)  # a deferred step: the norm is the norm of the full gradients, zero rows included
    x = torch.randint(0, 64, (2, 16))
    path = torch.tensor([0, 1, 4])
    plan = UpdatePlan(torch.zeros(model.shape.n_agents).index_fill_(0, path, 1.0), path)
    model(x, x)[1].backward()
    compact = model.finish_weight_grads(plan)
    full = [level.weight_grad(n) for level in model.levels for n in level.row_grads]
    full += [p.grad for p in model.parameters() if p.grad is not None]
    want = torch.linalg.vector_norm(torch.cat([g.flatten() for g in full]))
    got = clip_(compact + [p.grad for p in model.parameters() if p.grad is not None], 0.0)
    assert torch.allclose(got, want)
