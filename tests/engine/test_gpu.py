"""GPU paths: bf16 autocast, torch.compile and a step without host syncs. Run whenever a GPU is present
(`pytest -m gpu`); skipped by default and on machines without CUDA."""

import pytest
import torch

from k1.engine.step import train_step
from k1.engine.train import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("policy", ["dense", "attribution", "hybrid", "trust", "random"])
def test_a_bf16_step_makes_no_host_sync(policy, tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.device=\"cuda\"", "train.autocast=\"bf16\"", policy={"name": policy})
    tr = Trainer(cfg, tmp_path / "run", quiet=True, callbacks=[])
    st = tr.state
    for _ in range(2):  # warm up allocator and kernels
        train_step(st, *st.sampler.next())
    x, y = (t.cuda() for t in st.sampler.next())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        r = train_step(st, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(r.loss)


def test_compiled_training_matches_eager_loss_closely(tiny_cfg, tmp_path):
    losses = {}
    for compile_ in (False, True):
        cfg = tiny_cfg("train.device=\"cuda\"", "train.steps=6", f"train.compile={str(compile_).lower()}",
                       policy={"name": "dense"})
        s = Trainer(cfg, tmp_path / f"run{compile_}", quiet=True, callbacks=[]).fit()
        losses[compile_] = s["val_loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)
