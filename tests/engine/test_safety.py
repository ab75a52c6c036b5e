"""Safety rails: NaN and spike rollback with a learning-rate cut, destructive changes rolled back by the
validation gate, no committed progress lost."""

import pytest
import torch

from k1.engine.selforg.autonomy import Proposal
from k1.engine.run.train import Trainer


@pytest.fixture
def trainer(tiny_cfg, tmp_path):
    """A state with the rails and autonomy, driven one piece at a time through the loop's public parts."""
    cfg = tiny_cfg("autonomy.enabled=true", "autonomy.trial_steps=4", "train.steps=1000", policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    tr.loop.start()  # the rails push the starting snapshot
    return tr


def steps(tr, n):
    """n steps; the rails check the buffered losses at the last one (a log interval)."""
    for i in range(n):
        tr.loop.step(log_due=i == n - 1)


def params(tr):
    return {n: p.detach().clone() for n, p in tr.state.model.named_parameters()}


def test_nan_triggers_rollback_to_the_last_snapshot_and_a_lr_cut(trainer):
    tr = trainer
    steps(tr, 5)
    tr.loop.evaluate()  # a healthy evaluation: snapshot at step 5
    committed = params(tr)
    steps(tr, 2)
    with torch.no_grad():
        tr.state.model.ln_f.weight[0] = float("nan")
    steps(tr, 3)
    assert tr.state.record.events[-1]["kind"] == "rollback" and tr.state.record.events[-1]["reason"] == "non-finite loss"
    assert tr.state.record.events[-1]["restored_step"] == 5 and tr.state.lr_scale == 0.5
    for n, p in tr.state.model.named_parameters():
        assert torch.equal(p, committed[n]), n
    steps(tr, 5)  # and training goes on
    assert tr.state.record.events[-1]["kind"] == "rollback" and len([e for e in tr.state.record.events if e["kind"] == "rollback"]) == 1
    assert torch.isfinite(tr.state.model(*tr.state.sampler.next())[1])


def test_loss_spike_triggers_rollback(trainer):
    tr = trainer
    steps(tr, 10)
    tr.loop.evaluate()
    with torch.no_grad():
        tr.state.model.tok_emb.weight.mul_(300.0)  # a destructive jolt: the loss jumps far above its EMA
    steps(tr, 2)
    assert tr.state.record.events[-1]["kind"] == "rollback" and tr.state.record.events[-1]["reason"] == "loss spike"


def test_destructive_change_is_rolled_back_and_control_progress_kept(trainer):
    tr = trainer
    steps(tr, 10)
    start = tr.state.step
    tr.loop.trial(Proposal("tune", "test: a destructive learning rate", {"lr_scale": 2000.0}))
    e = tr.state.record.events[-1]
    assert e["decision"] == "rollback" and e["held_out_with_change"] > e["held_out_control"]
    assert tr.state.step == start + 4 and tr.state.lr_scale == 1.0  # the control branch's 4 steps are kept
    assert tr.state.trial_loss() == pytest.approx(e["held_out_control"], abs=1e-6)


def test_destructive_prune_is_rolled_back(trainer):
    tr = trainer
    steps(tr, 30)
    shape = tr.state.shape
    root_child = next(a.id for a in shape.agents if a.name == "n0")
    tr.state.autonomy.stage = 3  # prune is an allowed action: judged by the validation gate
    tr.loop.trial(Proposal("prune", "test: remove half of the tree", {"agent": root_child}))
    e = tr.state.record.events[-1]
    assert e["action"] == "prune"
    if e["decision"] == "rollback":
        assert tr.state.shape == shape
    else:  # the gate may honestly find the pruned tree no worse; then the surgery must have happened
        assert e["held_out_with_change"] <= e["held_out_control"] and tr.state.shape != shape
