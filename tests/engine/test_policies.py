"""Policies on hand-made signals whose answer can be worked out by hand."""

import torch

from k1.engine.update.policies import (AttributionConfig, AttributionPolicy, HybridConfig, HybridPolicy, RandomConfig,
                                RandomPolicy, TrustConfig, TrustPolicy)
from k1.engine.model.shape import TreeShape
from k1.engine.update.signals import StepSignals, flat_parents_tensor
from k1.engine.update.trust import TrustVector

SHAPE = TreeShape.from_branching([2, 2])  # root; n0 n1; n0.a0 n0.a1 n1.a0 n1.a1


def signals(grad):
    g = torch.tensor(grad)
    return StepSignals(g, torch.ones_like(g), torch.tensor(1.0), flat_parents_tensor(SHAPE, "cpu"))


def test_attribution_drills_down_by_largest_sibling_gradient():
    # n0 has the larger gradient than n1 although n1.a0 is the largest leaf overall: the drill-down compares
    # siblings only, so it must go root → n0 → n0.a1.
    sig = signals([1.0, 0.5, 0.4, 0.1, 0.2, 0.9, 0.3])
    plan = AttributionPolicy(AttributionConfig(), SHAPE).plan(sig, None, 0)
    names = SHAPE.names()
    assert [names[i] for i in plan.path.tolist()] == ["root", "n0", "n0.a1"]
    assert plan.scale.tolist() == [0.05, 0.05, 0.0, 0.0, 1.0, 0.0, 0.0] or torch.allclose(
        plan.scale, torch.tensor([0.05, 0.05, 0.0, 0.0, 1.0, 0.0, 0.0]))


def test_attribution_fixed_scales_follow_5_5_15_100_on_a_four_level_tree():
    shape = TreeShape.from_branching([4, 3, 2])
    g = torch.rand(41, generator=torch.Generator().manual_seed(0))
    sig = StepSignals(g, torch.ones(41), torch.tensor(1.0), flat_parents_tensor(shape, "cpu"))
    plan = AttributionPolicy(AttributionConfig(), shape).plan(sig, None, 0)
    assert torch.allclose(plan.scale[plan.path], torch.tensor([0.05, 0.05, 0.15, 1.0]))
    assert int(plan.selected.sum()) == 4


def test_attribution_proportional_scales():
    sig = signals([1.0, 0.5, 0.4, 0.1, 0.2, 0.9, 0.3])
    plan = AttributionPolicy(AttributionConfig(mode="proportional"), SHAPE).plan(sig, None, 0)
    assert torch.allclose(plan.scale[[0, 1, 4]], torch.tensor([1.0, 0.5, 0.2]))


def test_trust_policy_prefers_trusted_agents_among_responsible_ones():
    sig = signals([1.0, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    trust = TrustVector(7)
    trust.trust = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    plan = TrustPolicy(TrustConfig(top_k=2), SHAPE).plan(sig, trust, 0)
    assert plan.selected.nonzero().flatten().tolist() == [0, 2]  # 0.9·2 > 1.0·1 > 0.9·1


def test_hybrid_phase1_is_top_k_minus_1_plus_one_random_and_phase2_uses_the_score():
    sig = signals([0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5])
    trust = TrustVector(7)
    pol = HybridPolicy(HybridConfig(top_k=3, phase2_step=10), SHAPE)
    seen_random = set()
    for _ in range(20):
        sel = pol.plan(sig, trust, 0).selected.nonzero().flatten().tolist()
        assert len(sel) == 3 and {0, 1} <= set(sel)
        seen_random |= set(sel) - {0, 1}
    assert len(seen_random) > 1  # the third agent really is drawn at random
    plan = pol.plan(sig, trust, 10)  # phase 2, equal trust and staleness: the gradient decides
    assert plan.selected.nonzero().flatten().tolist() == [0, 1, 6]


def test_random_policy_draws_k_distinct_agents_reproducibly():
    sig = signals([1.0] * 7)
    a = RandomPolicy(RandomConfig(top_k=3), SHAPE, seed=1)
    b = RandomPolicy(RandomConfig(top_k=3), SHAPE, seed=1)
    for _ in range(5):
        pa, pb = a.plan(sig, None, 0), b.plan(sig, None, 0)
        assert int(pa.selected.sum()) == 3 and torch.equal(pa.scale, pb.scale)


def test_trust_rises_for_helpful_updates_and_falls_for_harmful_ones():
    from k1.engine.model.plan import UpdatePlan
    tv = TrustVector(2)
    helpful, harmful = UpdatePlan(torch.tensor([1.0, 0.0])), UpdatePlan(torch.tensor([0.0, 1.0]))
    loss = 3.0
    tv.update(helpful, torch.tensor(loss), 0)
    for step in range(1, 41):  # agent 0's updates are followed by a lower loss, agent 1's by a higher one
        prev_helpful = step % 2 == 1
        loss = loss * (0.95 if prev_helpful else 1 / 0.95)  # oscillates around a level
        tv.update(harmful if prev_helpful else helpful, torch.tensor(loss), step)
    assert tv.trust[0] > 0.6 and tv.trust[1] < 0.4


def test_attribution_plans_without_copying_anything_from_the_host(monkeypatch):
    """The step must not build tensors from Python values: on a GPU each would be a transfer per step."""
    pol = AttributionPolicy(AttributionConfig(), SHAPE)
    sig = signals([1.0, 0.5, 0.4, 0.1, 0.2, 0.9, 0.3])

    def host_copy(*a, **k):
        raise AssertionError("plan() built a tensor from host data")

    monkeypatch.setattr(torch, "tensor", host_copy)
    monkeypatch.setattr(torch, "as_tensor", host_copy)
    assert pol.plan(sig, None, 0).selected.sum() == 3


# ---- protect (importance protection) -----------------------------------------------------------------------
def gated(grad, gate):
    g = torch.tensor(grad)
    return StepSignals(g, torch.tensor(gate), torch.tensor(1.0), flat_parents_tensor(SHAPE, "cpu"))


def test_protect_equals_attribution_until_a_domain_ends_then_shields_what_that_domain_used():
    from k1.engine.update.policies import ProtectConfig, ProtectPolicy

    protect, attribution = ProtectPolicy(ProtectConfig(), SHAPE), AttributionPolicy(AttributionConfig(), SHAPE)
    # domain 1 routes its traffic through n0 and n0.a1
    old = gated([1.0, 0.5, 0.4, 0.1, 0.2, 0.9, 0.3], [1.0, 0.9, 0.1, 0.1, 0.8, 0.05, 0.05])
    for _ in range(3):
        a, p = attribution.plan(old, None, 0), protect.plan(old, None, 0)
        assert torch.equal(a.scale, p.scale) and torch.equal(a.path, p.path)
    protect.consolidate()
    assert torch.allclose(protect.importance, old.gate_mass) and float(protect.steps_now) == 0
    # a new domain whose gradient slightly favours n0 again: attribution goes to n0, protect to n1, whose
    # gradient is comparable but which the old domain barely used
    new = gated([1.0, 0.5, 0.45, 0.1, 0.2, 0.9, 0.3], [1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25])
    names = SHAPE.names()
    assert [names[i] for i in attribution.plan(new, None, 1).path.tolist()] == ["root", "n0", "n0.a1"]
    plan = protect.plan(new, None, 1)
    assert [names[i] for i in plan.path.tolist()] == ["root", "n1", "n1.a0"]
    factor = 1 + 4.0 * old.gate_mass / old.gate_mass.max()  # shield 4
    assert torch.allclose(plan.scale[[0, 2, 5]], torch.tensor([0.05, 0.05, 1.0]) / factor[[0, 2, 5]])
    assert int(plan.selected.sum()) == 3  # still one agent per level


def test_protect_usage_survives_its_state_dict_and_restarts_after_a_change_of_shape():
    from k1.engine.update.policies import ProtectConfig, ProtectPolicy

    p = ProtectPolicy(ProtectConfig(), SHAPE)
    p.plan(gated([1.0, 0.5, 0.4, 0.1, 0.2, 0.9, 0.3], [1.0, 0.9, 0.1, 0.1, 0.8, 0.05, 0.05]), None, 0)
    p.consolidate()
    q = ProtectPolicy(ProtectConfig(), SHAPE)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.importance, p.importance) and torch.equal(q.use_now, p.use_now)
    other = ProtectPolicy(ProtectConfig(), TreeShape.from_branching([3]))
    other.load_state_dict(p.state_dict())  # a reshaped tree: its usage starts afresh
    assert float(other.importance.abs().sum()) == 0
