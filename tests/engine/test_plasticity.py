"""Structural surgery: each operation changes the model as intended, keeps forward/backward working, moves
optimizer-state rows with their agents, reloads exactly from a checkpoint, and is logged."""

import json

import pytest
import torch

from k1.engine.model.level import AgentLevel
from k1.engine.selforg.plasticity import extract, grow, merge, prune, reorganize
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer
from k1.errors import ConfigError


@pytest.fixture
def trainer(tiny_cfg, tmp_path):
    tr = Trainer(tiny_cfg("model.branching=[2, 2]", policy={"name": "dense"}), tmp_path / "run", quiet=True,
                 recorders=[])
    tr.out_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # non-trivial moments
        train_step(tr.state, *tr.state.sampler.next())
    return tr


def by_name(tr, name):
    return next(a.id for a in tr.state.shape.agents if a.name == name)


def row_of(tr, agent_id):
    """(level module, row index) of an agent in the current model."""
    flat = tr.state.shape.flat_index()[agent_id]
    offs = tr.state.shape.level_offsets()
    lv = max(l for l, o in enumerate(offs) if o <= flat)
    return lv, flat - offs[lv]


def factory(tr):
    c = tr.state.cfg.model
    return lambda kind, n: AgentLevel(kind, n, c.width, c.mlp_width, c.n_heads, depth=3)


def loss_on(tr, x, y):
    with torch.no_grad():
        return tr.state.model(x, y)[1].item()


def forward_backward_ok(tr):
    x, y = tr.state.sampler.next()
    rec = train_step(tr.state, x, y)
    assert torch.isfinite(rec.loss) and rec.signals.grad_rms.numel() == tr.state.shape.n_agents


def test_prune_removes_the_subtree_and_rows_follow_their_agents(trainer):
    tr = trainer
    keep = by_name(tr, "n1.a0")
    lv, r = row_of(tr, keep)
    w_before = tr.state.model.levels[lv].fc_w[r].clone()
    m_before = tr.state.optimizer.state[f"levels.{lv}.fc_w"]["exp_avg"][r].clone()
    tr.state.apply_surgery(prune(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n0"), min_agents=3))
    assert tr.state.shape.names() == ["root", "n1", "n1.a0", "n1.a1"]
    lv, r = row_of(tr, keep)
    assert torch.equal(tr.state.model.levels[lv].fc_w[r], w_before)
    assert torch.equal(tr.state.optimizer.state[f"levels.{lv}.fc_w"]["exp_avg"][r], m_before)
    forward_backward_ok(tr)
    with pytest.raises(ConfigError):
        prune(tr.state.shape, extract(tr.state.model, tr.state.optimizer), tr.state.shape.agents[0].id)
    with pytest.raises(ConfigError, match="fewer than"):
        prune(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n1"), min_agents=3)


def test_grow_under_a_leaf_leaves_the_output_unchanged(trainer):
    tr = trainer
    x, y = tr.state.sampler.next()
    before = loss_on(tr, x, y)
    s = grow(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n0.a1"), factory(tr))
    tr.state.apply_surgery(s)
    assert "n0.a1.s0" in tr.state.shape.names() and tr.state.shape.n_levels == 4
    assert loss_on(tr, x, y) == pytest.approx(before, abs=1e-6)
    forward_backward_ok(tr)


def test_grow_beside_siblings_changes_the_output_only_slightly(trainer):
    tr = trainer
    x, y = tr.state.sampler.next()
    before = loss_on(tr, x, y)
    tr.state.apply_surgery(grow(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n0"), factory(tr)))
    assert "n0.a2" in tr.state.shape.names()
    assert loss_on(tr, x, y) == pytest.approx(before, rel=0.01)
    forward_backward_ok(tr)


def test_merge_fuses_leaf_siblings_and_keeps_their_gate_mass(trainer):
    tr = trainer
    a, b = by_name(tr, "n0.a0"), by_name(tr, "n0.a1")
    (la, ra), (lb, rb) = row_of(tr, a), row_of(tr, b)
    mean_w = (tr.state.model.levels[la].fc_w[ra] + tr.state.model.levels[lb].fc_w[rb]) / 2
    x, _ = tr.state.sampler.next()
    tr.state.model(x)
    mass_before = tr.state.model.last_gate_mass[tr.state.shape.flat_index()[a]] + tr.state.model.last_gate_mass[tr.state.shape.flat_index()[b]]
    tr.state.apply_surgery(merge(tr.state.shape, extract(tr.state.model, tr.state.optimizer), a, b))
    assert "n0.a1" not in tr.state.shape.names() and "n0.a0" in tr.state.shape.names()
    lv, r = row_of(tr, a)
    assert torch.allclose(tr.state.model.levels[lv].fc_w[r], mean_w)
    tr.state.model(x)
    assert tr.state.model.last_gate_mass[tr.state.shape.flat_index()[a]] == pytest.approx(float(mass_before), abs=0.02)
    forward_backward_ok(tr)


def test_reorganize_moves_an_agent_to_another_parent(trainer):
    tr = trainer
    agent, new_parent = by_name(tr, "n0.a1"), by_name(tr, "n1")
    lv, r = row_of(tr, agent)
    w = tr.state.model.levels[lv].qkv_w[r].clone()
    tr.state.apply_surgery(reorganize(tr.state.shape, extract(tr.state.model, tr.state.optimizer), agent, new_parent))
    spec = next(a for a in tr.state.shape.agents if a.id == agent)
    assert spec.parent == new_parent and len(tr.state.shape.children(new_parent)) == 3
    lv, r = row_of(tr, agent)
    assert torch.equal(tr.state.model.levels[lv].qkv_w[r], w)
    forward_backward_ok(tr)


def test_checkpoint_after_surgery_reloads_exactly(trainer, tiny_cfg):
    tr = trainer
    tr.state.apply_surgery(grow(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n1.a0"), factory(tr)))
    tr.state.apply_surgery(prune(tr.state.shape, extract(tr.state.model, tr.state.optimizer), by_name(tr, "n0.a0")))
    train_step(tr.state, *tr.state.sampler.next())
    path = tr.loop.save()
    other = Trainer(tr.cfg, tr.out_dir, quiet=True, recorders=[])
    other.restore(path)
    assert other.state.shape == tr.state.shape
    for (n, p), (_, q) in zip(tr.state.model.named_parameters(), other.state.model.named_parameters()):
        assert torch.equal(p, q), n
    x, y = tr.state.sampler.next()
    other.state.sampler.load_state_dict(tr.state.sampler.state_dict())
    assert torch.equal(train_step(tr.state, x, y).loss, train_step(other.state, x, y).loss)


def test_surgery_events_reach_the_attribution_log(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=40", "autonomy.enabled=true", "autonomy.check_every=10", "autonomy.phase2_step=10",
                   "autonomy.trial_steps=2", policy={"name": "attribution"})
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    events = [json.loads(x) for x in open(tmp_path / "run" / "attribution.jsonl") if '"event"' in x]
    trials = [e for e in events if e["event"] == "trial"]
    assert trials and all({"action", "decision", "held_out_control", "held_out_with_change"} <= set(e)
                          for e in trials if e["decision"] != "invalid")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any(e["kind"] == "trial" for e in summary["events"])
    assert "trial" in (tmp_path / "run" / "summary.md").read_text()
