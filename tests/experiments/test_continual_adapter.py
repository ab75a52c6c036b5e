"""The input-shift detector and the per-shift adapter of the shared parameters (`k1-adapter`)."""

from __future__ import annotations

import functools

import pytest
import torch

from k1.engine.run.state import TrainState
from k1.experiments.adapter import AdapterState, ShiftAdapters
from k1.experiments.continual import run_one
from k1.experiments.plugins import ContinualConfig, make_detector
from k1.experiments.shift import InputShiftDetector, ShiftDetector
from k1.experiments.strategies import strategy_config
from tests.experiments.test_continual import tiny_setup


def source(seed: int, lo: int, hi: int):
    """Batches [8, 64] of a 'domain': a random bigram chain over the bytes lo..hi."""
    g = torch.Generator().manual_seed(seed)
    trans = torch.rand(hi - lo, hi - lo, generator=g) ** 4

    def batch():
        x = torch.empty(8, 64, dtype=torch.long)
        x[:, 0] = torch.randint(0, hi - lo, (8,), generator=g)
        for t in range(1, 64):
            x[:, t] = torch.multinomial(trans[x[:, t - 1]], 1, generator=g).squeeze(1)
        return x + lo

    return batch


@pytest.fixture
def tiny(tmp_path):
    return tiny_setup(tmp_path, "k1-adapter")


# ---- the input-shift detector -----------------------------------------------------------------------------
def test_the_input_detector_fires_once_after_each_change_and_never_within_a_domain():
    a, b = source(1, 32, 96), source(2, 64, 128)  # overlapping byte ranges: a change of statistics
    d = InputShiftDetector()
    fired = [i for i in range(130) if d.update(a(), i)]
    assert fired == [], "130 batches of one domain: no shift"
    fired = [130 + i for i in range(40) if d.update(b(), 130 + i)]
    assert len(fired) == 1 and 130 <= fired[0] <= 130 + 10
    fired = [170 + i for i in range(40) if d.update(a(), 170 + i)]
    assert len(fired) == 1 and 170 <= fired[0] <= 170 + 10, "and back"


def test_the_input_detector_sees_a_change_the_loss_detector_cannot():
    """At code → science the training loss falls: the loss rule never fires there; the input rule does."""
    loss, inp = ShiftDetector(), InputShiftDetector()
    a, b = source(3, 32, 96), source(4, 40, 104)
    for i in range(40):
        loss.update(3.4, i)
        inp.update(a(), i)
    shifted = [i for i in range(40, 80) if inp.update(b(), i)]
    assert not any(loss.update(3.2, i) for i in range(40, 80)) and len(shifted) == 1


def test_the_input_detector_state_round_trips():
    a = source(5, 0, 64)
    d = InputShiftDetector()
    for i in range(20):
        d.update(a(), i)
    e = InputShiftDetector()
    e.load_state_dict(d.state_dict())
    x = a()
    assert d.update(x, 20) == e.update(x, 20) and torch.equal(d.ref, e.ref) and d.scalar.mean == e.scalar.mean


def test_the_detector_is_chosen_by_the_config():
    assert isinstance(make_detector(ContinualConfig()), InputShiftDetector)
    assert isinstance(make_detector(ContinualConfig(shift_signal="loss")), ShiftDetector)
    d = make_detector(ContinualConfig(shift_z=5.0, shift_window=2))
    assert d.scalar.z == 5.0 and d.window == 2


# ---- the adapter: routing, isolation, no label --------------------------------------------------------------
def adapted(tiny, segment: int):
    cfg, corpus = tiny
    st = TrainState(strategy_config("k1-adapter", cfg), corpus)
    ad = ShiftAdapters(cfg.model.width, corpus.vocab_size)
    state = AdapterState(ad)
    handles = ad.attach(st.model)
    for _ in range(segment):
        state.open_slot()
    with torch.no_grad():  # give every open slot something to say
        for s in range(segment):
            for p in ad.slot_parameters(s):
                p.normal_(0, 0.1)
    return st, ad, state, handles


def test_a_new_slot_changes_nothing_and_detaching_restores_the_model(tiny):
    st, _, state, handles = adapted(tiny, 0)
    x = torch.randint(0, 256, (2, 16))
    plain = st.model(x)[0]
    state.open_slot()  # zero-initialised tables
    assert torch.equal(st.model(x)[0], plain)
    for h in handles:
        h.remove()
    st.model.output_adapter = None
    assert torch.equal(st.model(x)[0], plain)


def test_a_tokens_gradient_reaches_only_its_own_slot_and_its_own_rows(tiny, monkeypatch):
    st, ad, _, _ = adapted(tiny, 2)
    x = torch.randint(0, 256, (2, 16))
    route = torch.tensor([[1] * 16, [2] * 16])  # row 0 → segment 1 (slot 0), row 1 → segment 2 (slot 1)
    monkeypatch.setattr(ad, "assign", lambda idx: route)
    for row, own, other in ((0, 0, 1), (1, 1, 0)):
        ad.zero_grad()
        st.model.zero_grad()
        st.model(x)[0][row].logsumexp(-1).sum().backward()
        assert all(p.grad is None or not p.grad.any() for p in ad.slot_parameters(other)), "other slot untouched"
        table = ad.table[own].grad
        touched = table.abs().sum(1).nonzero().flatten().tolist()
        assert touched and set(touched) <= set(x[row].tolist()), "only the rows of the row's own tokens"
        assert ad.head[own].grad.any()


def _delta_in_by_segment(ad: ShiftAdapters, idx, e):
    """The first `delta_in`: a masked sum over the open segments, one pass each (the reference)."""
    out = torch.zeros_like(e)
    for seg in range(1, ad.segment + 1):
        out = out + (ad.route == seg).unsqueeze(-1).to(e.dtype) * ad.table[seg - 1][idx]
    return out


def test_the_one_gather_delta_in_gives_the_masked_sums_values_and_gradients_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for segment in (0, 1, 3):
        ad = ShiftAdapters(width=8, vocab_size=32, slots=4)
        with torch.no_grad():
            for p in ad.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        ad.segment = segment
        idx = torch.randint(0, 32, (3, 20), generator=g)
        ad.route = torch.randint(0, segment + 1, (3, 20), generator=g) if segment else None
        e = torch.randn(3, 20, 8, generator=g)
        w = torch.randn(3, 20, 8, generator=g)
        grads = []
        for f in (ad.delta_in, functools.partial(_delta_in_by_segment, ad)):
            ad.zero_grad()
            out = f(idx, e)
            if out.requires_grad:
                (out * w).sum().backward()
            grads.append((out.detach(), [p.grad if p.grad is not None else torch.zeros_like(p) for p in ad.table]))
        (new, g_new), (old, g_old) = grads
        assert torch.equal(new, old) and all(torch.equal(a, b) for a, b in zip(g_new, g_old)), segment
        assert segment == 0 or any(t.any() for t in g_new)


def test_only_the_current_slot_learns_and_older_ones_stay_bit_identical(tiny, monkeypatch):
    st, ad, state, _ = adapted(tiny, 2)
    x = torch.randint(0, 256, (2, 16))
    monkeypatch.setattr(ad, "assign", lambda idx: torch.tensor([[1] * 16, [2] * 16]))
    old = [p.detach().clone() for p in ad.slot_parameters(0)]
    new = [p.detach().clone() for p in ad.slot_parameters(1)]
    st.model(x)[0].logsumexp(-1).sum().backward()
    state.step(1e-2)
    assert all(torch.equal(a, p) for a, p in zip(old, ad.slot_parameters(0)))
    assert any(not torch.equal(a, p) for a, p in zip(new, ad.slot_parameters(1)))


def test_routing_reads_the_input_alone(tiny):
    """Tokens go to the segment whose pair counts their prefix fits: no label exists to pass."""
    _, ad, state, _ = adapted(tiny, 0)
    a, b = source(6, 0, 64), source(7, 128, 192)
    for _ in range(5):
        ad.observe(a())
    state.open_slot()
    for _ in range(5):
        ad.observe(b())
    ra, rb = ad.assign(a()), ad.assign(b())
    assert (ra[:, 1:] == 0).float().mean() > 0.95 and (rb[:, 1:] == 1).float().mean() > 0.95


def test_k1_adapter_freezes_the_shared_part_at_a_detected_shift_and_trains_end_to_end(tiny, tmp_path):
    from k1.engine.hooks import Hook

    cfg, corpus = tiny
    seen = []

    class Watch(Hook):
        def on_step_end(self, state, r):
            seen.append((state.optimizer.shared_scale, {n: p.detach().clone() for n, p in state.model.shared_parameters()}))

    out = run_one(cfg, ContinualConfig(shift_warmup=0, shift_patience=1, shift_z=0.5), "k1-adapter", 1, corpus,
                  tmp_path / "a", extra_hooks=[Watch()])
    assert out["shifts_detected"], "the tiny domains differ: the detector fires"
    frozen = [shared for scale, shared in seen if scale == 0.0]
    assert frozen and seen[0][0] == 1.0
    assert all(torch.equal(frozen[0][n], frozen[-1][n]) for n in frozen[0]), "frozen from the first shift on"
    assert all(torch.isfinite(torch.tensor(r)).all() for r in out["R"])


def test_the_adapter_refuses_a_large_vocabulary_in_one_line(tiny):
    from k1.errors import ConfigError
    from k1.experiments.strategies import STRATEGIES

    cfg, corpus = tiny
    st = TrainState(strategy_config("k1-adapter", cfg), corpus)
    corpus.vocab_size = 5000
    with pytest.raises(ConfigError, match="byte-sized vocabulary"):
        STRATEGIES.get("k1-adapter").hooks(ContinualConfig(), 1, st, 3)


def test_an_adapted_run_resumes_to_the_same_numbers(tiny, tmp_path):
    from tests.experiments.test_continual import Interrupt

    cfg, corpus = tiny
    ccfg = ContinualConfig(shift_warmup=0, shift_patience=1, shift_z=0.5)
    whole = run_one(cfg, ccfg, "k1-adapter", 2, corpus, tmp_path / "whole", checkpoint_every=2)
    with pytest.raises(RuntimeError):
        run_one(cfg, ccfg, "k1-adapter", 2, corpus, tmp_path / "cut", checkpoint_every=2,
                extra_hooks=[Interrupt(11, RuntimeError)])
    again = run_one(cfg, ccfg, "k1-adapter", 2, corpus, tmp_path / "cut", checkpoint_every=2)
    assert again["resumed_from"] == "step-10"
    for key in ("R", "shifts_detected", "train_flops"):
        assert again[key] == whole[key], key


def test_rounds_reads_runs_from_several_folders_and_marks_the_primary_test(tmp_path, capsys):
    import json

    from k1.experiments import rounds

    def put(out, name, seed, forgetting):
        d = tmp_path / out / "runs" / f"{name}-seed{seed}"
        d.mkdir(parents=True)
        R = [[4.0, 5.0], [4.0 + forgetting, 4.5]]
        d.joinpath("continual_run.json").write_text(json.dumps(
            {"seed": seed, "R": R, "final_avg": (R[1][0] + R[1][1]) / 2, "forgetting_max": forgetting,
             "just_learnt": 4.25, "shifts_detected": [40]}))

    for s in range(1337, 1345):
        put("old", "k1-route", s, 0.05)
        put("old", "tree-naive", s, 0.2)
        put("new", "k1-route-adapter", s, 0.01 + 0.001 * (s - 1337))
    rounds.main([str(tmp_path / "old"), str(tmp_path / "new")])
    out = capsys.readouterr().out
    assert "| k1-route-adapter − k1-route (primary) | forgetting_max | 8 |" in out and "0.0078" in out
    assert "| k1-route | 8 | 4.275 ± 0.000 | 0.050 ± 0.000 |" in out and "0.25×" in out
    put("new", "k1-route", 1337, 0.0)
    with pytest.raises(SystemExit, match="both"):
        rounds.main([str(tmp_path / "old"), str(tmp_path / "new")])
    rounds.main([f"{tmp_path / 'old'}:tree-naive", str(tmp_path / "new")])  # the new folder's k1-route
    assert "| k1-route | 1 | " in capsys.readouterr().out
    rounds.main(["--order", f"X={tmp_path / 'old'}+{tmp_path / 'new'}:k1-route-adapter",
                 "--order", f"Y={tmp_path / 'old'}+{tmp_path / 'new'}:k1-route-adapter"])
    out = capsys.readouterr().out
    assert "| X | k1-route-adapter − k1-route | 8 | -0.037 ± 0.002 | 8/8 | 0.0078 | 0.0156 |" in out  # Holm over 2


def _adam_step_read_on_host(state: AdapterState, lr: float, finite: bool, steps: list[int]) -> None:
    """The first `AdapterState.step`: the finite flag read on the host (a sync every training step), the step
    count a Python int (the reference)."""
    ad, seg = state.adapters, state.adapters.segment
    if seg == 0 or not finite:
        return
    current = {id(p) for p in ad.slot_parameters(seg - 1)}
    steps[0] += 1
    b1, b2 = state.betas
    with torch.no_grad():
        for p, m, v in zip(ad.parameters(), state.m, state.v):
            if id(p) not in current or p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            mh, vh = m / (1 - b1 ** steps[0]), v / (1 - b2 ** steps[0])
            p.sub_(lr * mh / (vh.sqrt() + state.eps))


def test_the_adapter_step_skips_a_non_finite_step_on_the_device_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    runs = []
    for on_device in (True, False):
        ad = ShiftAdapters(width=8, vocab_size=32, slots=3)
        state, steps = AdapterState(ad), [0]
        state.open_slot()
        state.open_slot()
        g.manual_seed(0)
        for i, finite in enumerate([True, True, False, True, True]):
            for p in ad.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            if on_device:
                state.step(1e-2, torch.tensor(finite))
            else:
                _adam_step_read_on_host(state, 1e-2, finite, steps)
        runs.append(([p.detach().clone() for p in ad.parameters()], [m.clone() for m in state.m + state.v]))
    (p_new, mv_new), (p_old, mv_old) = runs
    assert all(torch.equal(a, b) for a, b in zip(p_new, p_old)) and all(torch.equal(a, b) for a, b in zip(mv_new, mv_old))
    assert any(p.any() for p in p_new), "the current slot moved"
