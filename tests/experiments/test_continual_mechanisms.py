"""The continual mechanisms that need no domain label (`k1-grow`, `k1-usage`, `k1-ewc`): the loss-surprise
shift detector, sparsity (an agent a plan leaves out stays bit-identical), the growth bookkeeping, and that
no mechanism acts on a stage boundary."""

import json
import random

import pytest
import torch

from k1.data import load_corpus
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer
from k1.engine.selforg.plasticity import extract
from k1.experiments.adapter import AdapterOnShift
from k1.experiments.continual import check_run, run_one
from k1.experiments.plugins import ContinualConfig
from k1.experiments.shift import ConsolidateOnShift, GrowOnShift, ShiftDetector
from k1.experiments.strategies import STRATEGIES, strategy_config
from k1.testing import tiny_config

DOMAINS = ["prose", "code", "science"]


@pytest.fixture
def tiny(tmp_path):
    cfg = tiny_config(tmp_path / "data", ["train.batch_size=4", "train.eval_batches=1", "optim.warmup_steps=2"])
    cfg, _ = check_run(cfg, DOMAINS, ["k1-grow"], 1, 4)
    return cfg, load_corpus(cfg.data)


def rows(tr) -> dict[int, dict[str, torch.Tensor]]:
    return {i: {k: v for k, v in r.items() if k.startswith("param.")}
            for i, r in extract(tr.state.model, tr.state.optimizer).items()}


# ---- the shift detector ---------------------------------------------------------------------------------
def test_the_detector_fires_on_a_lasting_jump_and_not_on_noise_or_a_falling_loss():
    rng = random.Random(0)
    d = ShiftDetector()
    losses = [4.0 - 0.01 * i + rng.gauss(0, 0.03) for i in range(120)]  # learning: falling, noisy
    fired = [i for i, x in enumerate(losses) if d.update(x, i)]
    assert fired == []
    jump = [losses[-1] + 0.4 + rng.gauss(0, 0.03) for _ in range(10)]  # new data: the loss jumps and stays
    fired = [120 + i for i, x in enumerate(jump) if d.update(x, 120 + i)]
    assert fired == [120 + d.patience - 1] and d.shifts == fired
    one = ShiftDetector()  # a single spike is not a shift
    for i, x in enumerate(losses):
        one.update(x, i)
    assert not one.update(losses[-1] + 1.0, 120) and not any(one.update(losses[-1], 121 + i) for i in range(5))


def test_the_detector_state_round_trips():
    d = ShiftDetector()
    for i in range(30):
        d.update(3.0 + 0.01 * (i % 3), i)
    e = ShiftDetector()
    e.load_state_dict(json.loads(json.dumps(d.state_dict())))
    assert e.state_dict() == d.state_dict()


# ---- no label reaches a mechanism ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["k1-grow", "k1-usage", "k1-adapter"])
def test_no_mechanism_acts_on_a_stage_boundary(tiny, name):
    """Their hooks that change training react to the loss only; the one that reads stage ends
    (`ForgettingSources`) measures, and changes nothing it does not put back."""
    cfg, corpus = tiny
    tr = Trainer(strategy_config(name, cfg), "/nonexistent", corpus=corpus, quiet=True, recorders=[])
    hooks = STRATEGIES.get(name).hooks(ContinualConfig(), 1, tr.state, 3)
    acting = [h for h in hooks if isinstance(h, (GrowOnShift, ConsolidateOnShift, AdapterOnShift))]
    assert len(acting) == 1
    for h in acting:
        for method in ("on_stage_start", "on_stage_end"):
            assert getattr(type(h), method) is getattr(type(h).__mro__[-2], method), f"{type(h).__name__}.{method}"


# ---- sparsity --------------------------------------------------------------------------------------------
def test_usage_updates_k_agents_and_leaves_the_rest_bit_identical(tiny, tmp_path):
    cfg, corpus = tiny
    tr = Trainer(strategy_config("k1-usage", cfg), tmp_path / "u", corpus=corpus, quiet=True, recorders=[])
    for step in range(4):
        before = rows(tr)
        plan = train_step(tr.state, *tr.state.sampler.next()).plan
        after = rows(tr)
        sel = plan.selected.tolist()
        assert sum(sel) == tr.state.shape.n_levels
        ids = [a.id for a in tr.state.shape.agents]
        for flat, aid in enumerate(ids):
            same = all(torch.equal(before[aid][k], after[aid][k]) for k in before[aid])
            assert same != sel[flat], (step, flat)
        if step == 1:
            tr.state.policy.consolidate()  # a shift: the root, used by everything, now scores 0
    assert not plan.selected[0]


def test_usage_scores_agents_by_current_use_over_background_use(tiny):
    cfg, corpus = tiny
    tr = Trainer(strategy_config("k1-usage", cfg), "/nonexistent", corpus=corpus, quiet=True, recorders=[])
    p = tr.state.policy
    A = tr.state.shape.n_agents
    p.background = torch.full((A,), 0.5)
    p.current = torch.full((A,), 0.5)
    p.background[3], p.current[3] = 0.01, 0.5  # used now, hardly before: ranks first
    p.background[4], p.current[4] = 0.9, 0.9   # used now and before: ranks low
    s = p.scores()
    assert int(s.argmax()) == 3 and s[4] < s[5]


# ---- growth ---------------------------------------------------------------------------------------------
def test_a_shift_protects_the_tree_grows_agents_and_only_those_learn(tiny, tmp_path):
    cfg, corpus = tiny
    tr = Trainer(strategy_config("k1-grow", cfg), tmp_path / "g", corpus=corpus, quiet=True, recorders=[])
    st = tr.state
    for _ in range(2):
        train_step(st, *st.sampler.next())
    old_ids = [a.id for a in st.shape.agents]
    parents = [a for a in st.shape.agents if a.level == 1]
    params0, flops0 = st.total_params, st.flops.forward
    hook = GrowOnShift(ShiftDetector())
    detail = hook.act(st)
    assert detail["protected"] == len(old_ids) and len(detail["grown"]) == len(parents)
    assert st.shape.n_agents == len(old_ids) + len(parents)
    assert sorted(st.policy.protected_ids) == sorted(old_ids)  # kept by id through the surgery
    assert st.total_params > params0 and st.flops.forward > flops0
    new_ids = [a.id for a in st.shape.agents if a.id not in old_ids]
    assert all(next(a for a in st.shape.agents if a.id == i).parent in {p.id for p in parents} for i in new_ids)
    for _ in range(3):
        before = rows(tr)
        plan = train_step(st, *st.sampler.next()).plan
        after = rows(tr)
        for flat, a in enumerate(st.shape.agents):
            same = all(torch.equal(before[a.id][k], after[a.id][k]) for k in before[a.id])
            assert same == (a.id in old_ids) and bool(plan.selected[flat]) == (a.id not in old_ids)
    again = GrowOnShift(ShiftDetector()).act(st)  # a second shift protects the first grown agents too
    assert again["protected"] == len(new_ids) and st.shape.n_agents == len(old_ids) + 2 * len(parents)


def test_a_grown_run_resumes_and_measures_where_forgetting_comes_from(tiny, tmp_path, monkeypatch):
    """A shift forced at the start of each later domain (the tiny corpus is too short for the detector's
    warmup): the run grows, reports its grown size, resumes through a grown checkpoint, and splits the
    forgetting of each earlier domain into what the shared embedding and the new gates cause."""
    from k1.experiments import shift

    def forced(self, loss, step):
        self.n += 1
        fire = step in (5, 9)
        if fire:
            self.shifts.append(step)
        return fire

    monkeypatch.setattr(shift.ShiftDetector, "update", forced)
    cfg, corpus = tiny
    ccfg = ContinualConfig(shift_signal="loss")  # the detector forced above
    whole = run_one(cfg, ccfg, "k1-grow", 3, corpus, tmp_path / "whole", checkpoint_every=2)
    n0 = 7  # the tiny tree: 1 + 2 + 4
    assert whole["shifts_detected"] == [5, 9] and whole["agents_after_stage"] == [n0, n0 + 2, n0 + 4]
    src = whole["forgetting_sources"]
    assert [r["domain"] for r in src] == DOMAINS[:2]
    for r in src:
        assert set(r) == {"domain", "final", "shared_restored", "new_gates_off", "both"}
    assert src[1]["final"] == pytest.approx(whole["R"][2][1])
    assert whole["frac_params_changed"] < 1.0

    from tests.experiments.test_continual import Interrupt

    with pytest.raises(RuntimeError):
        run_one(cfg, ccfg, "k1-grow", 3, corpus, tmp_path / "cut", checkpoint_every=2,
                extra_hooks=[Interrupt(11, RuntimeError)])
    again = run_one(cfg, ccfg, "k1-grow", 3, corpus, tmp_path / "cut", checkpoint_every=2)
    assert again["resumed_from"] == "step-10"
    for key in ("R", "agents_after_stage", "train_flops", "params", "forgetting_sources", "shifts_detected"):
        assert again[key] == whole[key], key
