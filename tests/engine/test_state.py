"""`TrainState`: one object is the whole run. A saved state loaded into a fresh state built with another seed
continues identically (losses, decisions, parameters); the snapshot ring and the autonomy window travel
with it; trial steps are logged under their own keys; checkpoints are written atomically and pruned."""

import json

import pytest
import torch

from k1.engine.run.checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint
from k1.engine.hooks import Hook
from k1.engine.run.loop import Stage
from k1.engine.run.state import FIELDS
from k1.engine.run.train import Trainer
from k1.errors import CheckpointError

PHASE2 = ["autonomy.enabled=true", "autonomy.phase2_step=0", "autonomy.check_every=5", "autonomy.trial_steps=2",
          "autonomy.break_epsilon=-1.0", "safety.gate_threshold=1.0"]


class Tape(Hook):
    """Every step's loss (trial branches included) and every event, as the run produced them."""

    def __init__(self):
        self.losses, self.events = [], []

    def on_step_end(self, state, r):
        self.losses.append((tuple(r.key().values()), r.loss.item()))

    def on_event(self, state, event):
        if event["kind"] not in ("diagnostics", "proposals"):
            self.events.append(dict(event))


def params(state):
    return {n: p.detach().clone() for n, p in state.model.named_parameters()}


@pytest.mark.parametrize("extra", [[], PHASE2], ids=["attribution", "phase2"])
def test_a_loaded_state_continues_exactly_even_when_built_with_another_seed(extra, tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=30", "train.eval_every=10", *extra, policy={"name": "attribution"})
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 4242})})
    b = Trainer(other, tmp_path / "b", quiet=True, recorders=[])  # a fresh state, another seed
    a = Trainer(cfg, tmp_path / "a", quiet=True, recorders=[])
    a.loop.run([Stage("train", 12)])
    saved = a.state.state_dict()
    assert not torch.equal(next(b.state.model.parameters()), next(a.state.model.parameters()))
    tape_a, tape_b = Tape(), Tape()
    a.loop.hooks.append(tape_a)
    b.loop.hooks.append(tape_b)
    a.loop.run([Stage("train", 30)])
    # torch's RNG is process-global and part of the state: loading it is what makes b continue like a
    b.state.load_state_dict(saved)
    b.loop.run([Stage("train", 30)])
    assert tape_a.losses == tape_b.losses and len(tape_a.losses) >= 18
    assert tape_a.events == tape_b.events
    if extra:
        assert any(e["kind"] == "trial" for e in tape_a.events), "the phase-2 scenario should run trials"
        assert a.state.shape == b.state.shape
    pa, pb = params(a.state), params(b.state)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[n], pb[n]) for n in pa)


def test_every_field_is_in_a_checkpoint_and_snapshots_carry_only_theirs(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=12", "train.eval_every=4", *PHASE2)
    tr = Trainer(cfg, tmp_path / "run", quiet=True)
    tr.fit()
    _, state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert set(FIELDS) - {"model"} <= set(state)
    ring = state["ring"]
    assert len(ring) == tr.state.ring.ring.maxlen  # snapshots from the start and each evaluation, saved
    snap_fields = {f for f, s in FIELDS.items() if s}
    assert all(snap_fields <= set(s) and not ({"sampler", "ring", "record"} & set(s)) for s in ring)
    assert state["autonomy"]["w_sel"].shape[0] == tr.state.shape.n_agents


class Poison(Hook):
    """Fault injection: a NaN in the weights after step `at` (the next log interval must roll back)."""

    def __init__(self, at):
        self.at = at

    def on_check(self, state, step):
        if step == self.at:
            with torch.no_grad():
                state.model.ln_f.weight[0] = float("nan")


class Kill(Hook):
    """Fault injection: the process dies after step `at` (no save, as under SIGKILL)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, state, r):
        if r.step == self.at:
            raise RuntimeError("killed")


def test_a_rollback_after_a_resume_restores_the_same_snapshot(tiny_cfg, tmp_path):
    """The ring is part of the checkpoint: an uninterrupted run and a resumed one roll back alike."""
    cfg = tiny_cfg("train.steps=20", "train.eval_every=5", "train.checkpoint_every=7", policy={"name": "dense"})
    full = Trainer(cfg, tmp_path / "full", quiet=True, recorders=[Poison(9)])
    full.fit()
    with pytest.raises(RuntimeError, match="killed"):
        Trainer(cfg, tmp_path / "cut", quiet=True, recorders=[Kill(8)]).fit()  # last checkpoint: step 7
    resumed = Trainer(cfg, tmp_path / "cut", quiet=True, recorders=[Poison(9)])
    assert resumed.restore() == 7
    resumed.fit()
    ev_full, ev_res = ([e for e in t.state.record.events if e["kind"] == "rollback"] for t in (full, resumed))
    assert ev_full and ev_full == ev_res and ev_full[0]["restored_step"] == 5
    p_full, p_res = params(full.state), params(resumed.state)
    assert all(torch.equal(p_full[n], p_res[n]) for n in p_full)


def test_trial_steps_are_logged_with_their_trial_and_branch(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=30", "train.log_every=5", *PHASE2)
    s = Trainer(cfg, tmp_path / "run", quiet=True).fit()
    trials = [e for e in s["events"] if e["kind"] == "trial" and e["decision"] != "invalid"]
    assert trials
    rows = [json.loads(x) for x in open(tmp_path / "run" / "attribution.jsonl")]
    steps = [r for r in rows if "event" not in r]
    keys = [(r["step"], r.get("trial"), r.get("branch")) for r in steps]
    assert len(keys) == len(set(keys)), "no two logged steps share (step, trial, branch)"
    for t in trials:
        for branch in ("control", "change"):
            logged = [r for r in steps if r.get("trial") == t["trial"] and r.get("branch") == branch]
            assert len(logged) == cfg.autonomy.trial_steps, (t["trial"], branch)
    metrics = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert any(m.get("trial") for m in metrics if m["kind"] == "train")
    assert s["steps_executed"] == s["steps"] + sum(cfg.autonomy.trial_steps for t in trials) + \
        sum(cfg.autonomy.trial_steps for e in s["events"] if e["kind"] == "trial" and e["decision"] == "invalid")


def test_keep_checkpoints_keeps_the_newest_and_the_best(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=24", "train.checkpoint_every=3", "train.keep_checkpoints=2", "train.eval_every=6")
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    kept = [int(p.name.split("-")[1]) for p in checkpoint_dirs(tmp_path / "run")]
    assert kept[-2:] == [21, 24] and len(kept) <= 3
    assert all(s % 6 == 0 for s in kept[:-2]), "an extra checkpoint is only ever the best evaluated one"


def test_a_save_interrupted_between_files_leaves_the_last_complete_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.steps=9", "train.checkpoint_every=3", policy={"name": "random"})
    run = tmp_path / "run"
    full = Trainer(cfg, tmp_path / "full", quiet=True, recorders=[])
    full.fit()
    tr = Trainer(cfg, run, quiet=True, recorders=[])
    import k1.engine.run.checkpoint as ck

    real, calls = ck.save_file, []

    def dies_on_second_file(tensors, path):
        calls.append(path)
        if len(calls) == 4:  # step 6: model.safetensors written, then the process "dies"
            raise RuntimeError("killed")
        real(tensors, path)

    monkeypatch.setattr(ck, "save_file", dies_on_second_file)
    with pytest.raises(RuntimeError, match="killed"):
        tr.loop.run([Stage("train", 9)])
    monkeypatch.setattr(ck, "save_file", real)
    assert (run / "checkpoints" / "step-6.tmp").is_dir() and not (run / "checkpoints" / "step-6").exists()
    # and a torn directory of the old, non-atomic kind is skipped with a warning
    torn = run / "checkpoints" / "step-8"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    resumed = Trainer(cfg, run, quiet=True, recorders=[])
    assert resumed.restore() == 3
    resumed.fit()
    assert params(resumed.state).keys() == params(full.state).keys()
    assert all(torch.equal(params(resumed.state)[n], params(full.state)[n]) for n in params(full.state))


def test_a_run_without_complete_checkpoints_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoints" / "step-5").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no complete checkpoint") as e:
        latest_checkpoint(tmp_path)
    assert "\n" not in str(e.value)
