"""The GPU paths of the speed work (deselected by default; run with `pytest -m gpu` on a CUDA machine):
deferred weight gradients under bf16 with exact sparsity, routed compute, torch.compile, and the bench."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("policy", ["attribution", "hybrid"])
def test_deferred_bf16_step_is_exactly_sparse_on_cuda(policy, tiny_cfg, tmp_path):
    from k1.engine.train import Trainer

    cfg = tiny_cfg("model.branching=[3, 2]", 'train.device="cuda"', 'train.autocast="bf16"',
                   "model.defer_weight_grads=true", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, callbacks=[])
    for _ in range(2):
        tr.train_step(*(t.cuda() for t in tr.sampler.next()))
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    rec = tr.train_step(*(t.cuda() for t in tr.sampler.next()))
    selected = rec.plan.selected.tolist()
    offs = tr.shape.level_offsets()
    for lv, level in enumerate(tr.model.levels):
        for name, p in level.agent_parameters():
            full = f"levels.{lv}.{name}"
            for row in range(level.n_agents):
                if not selected[offs[lv] + row]:
                    assert torch.equal(before[full][row], p[row]), (full, row)
    assert int(rec.stats.agents_updated) == sum(selected) and int(rec.stats.params_changed) > 0


def test_routed_tree_trains_on_cuda_with_compile(tiny_cfg, tmp_path):
    from k1.engine.train import Trainer

    cfg = tiny_cfg("model.branching=[3, 2]", 'model.kinds=["block", "mlp", "mlp"]', 'model.routing="top1"',
                   'train.device="cuda"', 'train.autocast="bf16"', "train.compile=true", policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, callbacks=[])
    for _ in range(3):
        rec = tr.train_step(*(t.cuda() for t in tr.sampler.next()))
    assert bool(rec.finite)


def test_bench_reports_mfu_against_the_bf16_peak(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from engine import main

    r = main(["--reference", "--batch", "32", "--device", "cuda", "--autocast", "bf16", "--steps", "2",
              "--rounds", "2", "--burn-in", "1", "--routed", "--out", str(tmp_path)])
    assert set(r["mfu"]) >= {"tree_dense", "tree_attribution", "dense_gpt", "tree_mlp_routed_top1"}
    assert all(0 < v < 1 for v in r["mfu"].values())
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["device"].startswith("cuda")
