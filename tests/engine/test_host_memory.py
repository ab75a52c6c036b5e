"""keep_freed_memory(): a training step's freed buffers are reused by the next step instead of being faulted
back in page by page. Each case runs in a fresh interpreter, since malloc settings are process-wide."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, torch
from k1.engine.host_memory import keep_freed_memory
from k1.engine.shape import TreeShape
from k1.engine.tree import AgentTree, ModelConfig
applied = keep_freed_memory()
torch.set_num_threads(1)
cfg = ModelConfig(branching=[2], width=64, mlp_width=128, n_heads=2, context=64)
model = AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, 8192)
x = torch.randint(0, 8192, (8, 64))
def step():
    model.zero_grad(set_to_none=True)
    model(x, x)[1].backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(keep: bool) -> dict:
    env = {**os.environ, "K1_KEEP_FREED_MEMORY": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_tensors_are_reused_without_page_faults():
    kept, default = probe(True), probe(False)
    assert kept["applied"] and not default["applied"]
    assert default["faults"] > 5_000  # by default the steps' freed blocks go back to the kernel, and fault back in
    assert kept["faults"] < default["faults"] / 2
