"""Real sparsity: unselected agents are bit-identical after a step (parameters, both moments, step count),
selected ones change, and the counted "parameters changed" equals a direct comparison of the tensors."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from k1.engine.model.plan import UpdatePlan

from k1.engine.update.policies import POLICIES
from k1.engine.run.step import train_step
from k1.engine.run.step import lr_at
from k1.engine.run.train import Trainer


def snapshot(trainer):
    params = {n: p.detach().clone() for n, p in trainer.state.model.named_parameters()}
    state = {n: {k: v.clone() for k, v in st.items()} for n, st in trainer.state.optimizer.state.items()}
    steps = [s.clone() for s in trainer.state.optimizer.agent_steps]
    return params, state, steps


def agent_rows(trainer, flat_i):
    """(level index, row) of a flat agent index."""
    offs = trainer.state.shape.level_offsets()
    lv = max(l for l, o in enumerate(offs) if o <= flat_i)
    return lv, flat_i - offs[lv]


@pytest.mark.parametrize("sync_free", [False, True], ids=["host-rows", "sync-free"])
@pytest.mark.parametrize("defer", [False, True], ids=["eager", "deferred"])
@pytest.mark.parametrize("optim", ["adamw", "sgd"])
@pytest.mark.parametrize("policy", POLICIES.names())
def test_unselected_agents_are_bit_identical_and_selected_ones_move(policy, optim, defer, sync_free, tiny_cfg,
                                                                     tmp_path):
    cfg = tiny_cfg("model.branching=[3, 2]", f"optim.name={optim!r}", f"model.defer_weight_grads={str(defer).lower()}",
                   policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    tr.state.optimizer.sync_free = sync_free  # the GPU default, here on CPU: static rows, masked updates
    for _ in range(3):  # fill the moments so "unchanged moments" is not trivially zero == zero
        train_step(tr.state, *tr.state.sampler.next())
    before_p, before_s, before_steps = snapshot(tr)
    rec = train_step(tr.state, *tr.state.sampler.next())
    after_p, after_s, after_steps = snapshot(tr)

    assert (rec.signals.grad_rms > 0).all(), "the test needs non-zero gradients everywhere"
    selected = rec.plan.selected.tolist()
    if policy != "dense":
        assert not all(selected)
    names = {id(p): n for n, p in tr.state.model.named_parameters()}
    for i, sel in enumerate(selected):
        lv, row = agent_rows(tr, i)
        moved = False
        for pname, p in tr.state.model.levels[lv].agent_parameters():
            full = names[id(p)]
            same_p = torch.equal(before_p[full][row], after_p[full][row])
            for k in before_s[full]:
                same_m = torch.equal(before_s[full][k][row], after_s[full][k][row])
                if not sel:
                    assert same_m, f"{policy}: unselected agent {i} moment {k} of {pname} changed"
            if not sel:
                assert same_p, f"{policy}: unselected agent {i} parameter {pname} changed"
            moved |= not same_p
        if sel:
            assert moved, f"{policy}: selected agent {i} did not move"
            assert after_steps[lv][row] == before_steps[lv][row] + 1
        else:
            assert after_steps[lv][row] == before_steps[lv][row]

    direct = sum(int((before_p[n] != after_p[n]).sum()) for n in before_p)
    assert int(rec.stats.params_changed) == direct
    assert int(rec.stats.agents_updated) == sum(selected)


def test_dense_policy_matches_torch_adamw(tiny_cfg, tmp_path):
    cfg = tiny_cfg("optim.grad_clip=0", "optim.warmup_steps=0", policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    ref = {n: p.detach().clone().requires_grad_(True) for n, p in tr.state.model.named_parameters()}
    o = cfg.optim
    decay = [p for n, p in ref.items() if (n.startswith("levels.") and n.split(".")[-1].endswith("_w")
                                           and not n.split(".")[-1].startswith("ln")) or
             (not n.startswith("levels.") and p.dim() >= 2)]
    no_decay = [p for p in ref.values() if all(p is not q for q in decay)]
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=o.betas, eps=o.eps)
    for _ in range(3):
        x, y = tr.state.sampler.next()
        lr = lr_at(tr.state.step, cfg)
        train_step(tr.state, x, y)
        # the same batch through the reference parameters, stepped by torch's own AdamW
        tr_ref = torch.func.functional_call(tr.state.model, {n: ref[n] for n in ref}, (x, y))[1]
        for g in torch_opt.param_groups:
            g["lr"] = lr
        torch_opt.zero_grad()
        tr_ref.backward()
        torch_opt.step()
    for n, p in tr.state.model.named_parameters():
        assert torch.allclose(p, ref[n], atol=1e-6, rtol=1e-5), n


@pytest.mark.parametrize("policy,defer,sync_free", [("dense", False, False), ("attribution", True, False),
                                                     ("attribution", True, True), ("hybrid", False, True)])
def test_non_finite_loss_changes_nothing(policy, defer, sync_free, tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"model.defer_weight_grads={str(defer).lower()}", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    tr.state.optimizer.sync_free = sync_free
    train_step(tr.state, *tr.state.sampler.next())
    before, state, steps = snapshot(tr)
    with torch.no_grad():
        tr.state.model.ln_f.weight[0] = float("nan")
    x, y = tr.state.sampler.next()
    rec = train_step(tr.state, x, y)
    with torch.no_grad():
        tr.state.model.ln_f.weight[0] = before["ln_f.weight"][0]
    assert not bool(rec.finite)
    assert int(rec.stats.params_changed) == 0
    for n, p in tr.state.model.named_parameters():
        assert torch.equal(p, before[n]), n
    for n, st in tr.state.optimizer.state.items():
        for k, v in st.items():
            assert torch.equal(v, state[n][k]), (n, k)


def test_a_plan_with_a_path_selects_only_path_agents(tiny_cfg, tmp_path):
    """The static rows (rows.py) gather one row per level from the path: that is complete only if nothing
    off the path is selected, which is the attribution policy's contract."""
    tr = Trainer(tiny_cfg("model.branching=[3, 2]", policy={"name": "attribution"}), tmp_path / "run", quiet=True,
                 recorders=[])
    for _ in range(3):
        rec = train_step(tr.state, *tr.state.sampler.next())
        on_path = torch.zeros_like(rec.plan.selected).index_fill_(0, rec.plan.path, True)
        assert torch.equal(rec.plan.selected & ~on_path, torch.zeros_like(on_path))


def test_static_rows_leave_a_level_the_path_does_not_reach_untouched(tiny_cfg, tmp_path):
    """A path that ends above the last level (a shallow leaf) repeats its culprit: the row gathered on the
    deeper level has scale 0 and the masked update keeps it, and its whole level, bit-identical."""
    tr = Trainer(tiny_cfg("model.branching=[3, 2]", "model.defer_weight_grads=true", policy={"name": "attribution"}),
                 tmp_path / "run", quiet=True, recorders=[])
    st = tr.state
    st.optimizer.sync_free = True
    for _ in range(2):
        train_step(st, *st.sampler.next())
    before, state, steps = snapshot(tr)
    path = torch.tensor([0, 2, 2])  # root, then node 2 (flat index 2) as the culprit, repeated on level 2
    plan = UpdatePlan(torch.zeros(st.shape.n_agents).index_fill_(0, path, 1.0), path)
    st.model(*st.sampler.next())[1].backward()
    rows = st.optimizer.select(plan)
    assert all(r.static for r in rows)
    grads = st.model.finish_weight_grads(plan, rows)
    assert all(float(g.abs().sum()) == 0 for g in st.model.levels[2].row_grads.values())  # masked to zero
    assert len(grads) == 3 * 4  # one compact row per level and matrix
    st.optimizer.step(plan, 1e-2, rows=rows)
    for name, p in st.model.levels[2].agent_parameters():
        assert torch.equal(p, before[f"levels.2.{name}"]), name
        for k, v in st.optimizer.state[f"levels.2.{name}"].items():
            assert torch.equal(v, state[f"levels.2.{name}"][k]), (name, k)
    assert torch.equal(st.optimizer.agent_steps[2], steps[2])
    assert not torch.equal(st.model.levels[1].fc_w[1], before["levels.1.fc_w"][1])  # node 2 is row 1 of level 1
    assert torch.equal(st.model.levels[1].fc_w[0], before["levels.1.fc_w"][0])


class _HostReads(TorchDispatchMode):
    """Counts the ops that read a tensor on the host (a sync on GPU): `nonzero` and scalar reads."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in ("nonzero", "_local_scalar_dense"):
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("defer", [False, True], ids=["eager", "deferred"])
def test_a_sync_free_attribution_step_reads_nothing_on_the_host(defer, tiny_cfg, tmp_path):
    """The CPU stand-in for tests/engine/test_gpu.py's sync count: no op of the step waits for a value."""
    cfg = tiny_cfg("model.branching=[3, 2]", f"model.defer_weight_grads={str(defer).lower()}",
                   policy={"name": "attribution"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    train_step(tr.state, *tr.state.sampler.next())
    x, y = tr.state.sampler.next()
    counted = {}
    for sync_free in (False, True):
        tr.state.optimizer.sync_free = sync_free
        with _HostReads() as mode:
            train_step(tr.state, x, y)
        counted[sync_free] = mode.reads
    assert counted[False], "the host-rows step reads its rows (the detector works)"
    assert counted[True] == []
