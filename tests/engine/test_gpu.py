"""GPU paths: bf16 autocast, torch.compile, a step without host syncs, deferred weight gradients with exact
sparsity, routed compute and the bench. Run whenever a GPU is present (`pytest -m gpu`); skipped by default
and on machines without CUDA."""

import json
import sys
from pathlib import Path

import pytest
import torch

from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("policy", ["dense", "attribution", "hybrid", "trust", "random"])
@pytest.mark.parametrize("defer", [False, True], ids=["eager", "deferred"])
def test_a_bf16_step_makes_only_the_optimizers_documented_host_syncs(policy, defer, tiny_cfg, tmp_path):
    """The step itself syncs nothing. On CUDA the optimizer is sync-free (k1/engine/model/rows.py): attribution's
    path gives its rows on the device (no sync at all); any other plan's rows are found with one read of its
    mask (one sync); the step's finiteness is never read on the host (masked updates)."""
    import warnings

    cfg = tiny_cfg("train.device=\"cuda\"", "train.autocast=\"bf16\"", f"model.defer_weight_grads={str(defer).lower()}",
                   policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    st = tr.state
    assert st.optimizer.sync_free
    for _ in range(2):  # warm up allocator and kernels
        train_step(st, *st.next_batch())
    x, y = (t.cuda() for t in st.next_batch())
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            r = train_step(st, x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= (0 if policy == "attribution" else 1), [str(w.message) for w in syncs]
    assert torch.isfinite(r.loss)


def test_compiled_training_matches_eager_loss_closely(tiny_cfg, tmp_path):
    losses = {}
    for compile_ in (False, True):
        cfg = tiny_cfg("train.device=\"cuda\"", "train.steps=6", f"train.compile={str(compile_).lower()}",
                       policy={"name": "dense"})
        s = Trainer(cfg, tmp_path / f"run{compile_}", quiet=True, recorders=[]).fit()
        losses[compile_] = s["val_loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


@pytest.mark.parametrize("policy", ["attribution", "hybrid"])
def test_deferred_bf16_step_is_exactly_sparse_on_cuda(policy, tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.branching=[3, 2]", 'train.device="cuda"', 'train.autocast="bf16"',
                   "model.defer_weight_grads=true", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    for _ in range(2):
        train_step(tr.state, *(t.cuda() for t in tr.state.sampler.next()))
    before = {n: p.detach().clone() for n, p in tr.state.model.named_parameters()}
    rec = train_step(tr.state, *(t.cuda() for t in tr.state.sampler.next()))
    selected = rec.plan.selected.tolist()
    offs = tr.state.shape.level_offsets()
    for lv, level in enumerate(tr.state.model.levels):
        for name, p in level.agent_parameters():
            full = f"levels.{lv}.{name}"
            for row in range(level.n_agents):
                if not selected[offs[lv] + row]:
                    assert torch.equal(before[full][row], p[row]), (full, row)
    assert int(rec.stats.agents_updated) == sum(selected) and int(rec.stats.params_changed) > 0


def test_routed_tree_trains_on_cuda_with_compile(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.branching=[3, 2]", 'model.kinds=["block", "mlp", "mlp"]', 'model.routing="top1"',
                   'train.device="cuda"', 'train.autocast="bf16"', "train.compile=true", policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, recorders=[])
    for _ in range(3):
        rec = train_step(tr.state, *(t.cuda() for t in tr.state.sampler.next()))
    assert bool(rec.finite)


def test_bench_reports_mfu_against_the_bf16_peak(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from engine import main

    r = main(["--reference", "--batch", "32", "--device", "cuda", "--autocast", "bf16", "--steps", "2",
              "--rounds", "2", "--burn-in", "1", "--routed", "--out", str(tmp_path)])
    assert set(r["mfu"]) >= {"tree_dense", "tree_attribution", "dense_gpt", "tree_mlp_routed_top1"}
    assert all(0 < v < 1 for v in r["mfu"].values())
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["device"].startswith("cuda")
