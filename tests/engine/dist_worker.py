"""Run by torchrun in tests/engine/test_distributed.py (not a test itself): trains the tiny config on every
rank and writes what the test compares — each rank's first batch and final parameters."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from k1.engine.config import load_config
from k1.engine.run import distributed
from k1.engine.hooks import Hook
from k1.engine.run.train import Trainer


class Kill(Hook):
    """Every rank dies after the same step (as a kill -9 of the job would leave it: no save)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, state, r):
        if r.step == self.at and r.trial is None:
            raise SystemExit(3)


def main(cfg_file: str, out: str, mode: str) -> None:
    torch.set_num_threads(1)
    dist, device = distributed.setup("cpu")
    cfg = load_config(cfg_file)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": device})})
    tr = Trainer(cfg, Path(out), quiet=True, dist=dist)
    if mode.startswith("kill"):
        tr.loop.hooks.append(Kill(int(mode.split("=")[1])))
    if mode == "resume":
        tr.restore()
    st = tr.state
    cursor = st.sampler.state_dict()
    x, _ = st.next_batch()
    st.sampler.load_state_dict(cursor)
    tr.fit()
    save_file({"first_batch": x, **{k: v.contiguous() for k, v in st.model.state_dict().items()}},
              str(Path(out) / f"rank{dist.rank}-{mode.replace('=', '')}.safetensors"))
    distributed.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
