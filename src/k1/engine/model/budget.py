"""Will this run fit? A size check made before anything is built, so that an impossible configuration
(`--set model.context=100000`) is a one-line error rather than a machine that swaps or hangs.

The estimate is deliberately simple: the activations autograd keeps for one training step of every agent
(pre-norm block: about 8·C + 2·M values per token, plus H·T attention weights where the attention is not
fused), the logits and their gradient, and the parameters with their two Adam moments and gradient. It
is compared with the memory of the device (RAM on the CPU, free memory on a GPU).
"""

from __future__ import annotations

import os

import torch

from k1.errors import ConfigError


def device_memory(device: torch.device) -> int:
    """Bytes available for the run: free memory of a GPU, physical RAM on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_bytes(cfg, vocab_size: int) -> int:
    """A rough upper estimate of the memory one training step of `cfg` needs (fp32)."""
    m, B, T = cfg.model, cfg.train.batch_size, cfg.model.context
    C, M, H, V = m.width, m.mlp_width, m.n_heads, vocab_size
    n_agents, prod = 1, 1
    for b in m.branching:
        prod *= b
        n_agents += prod
    if cfg.arch == "dense":
        n_agents = m.dense_layers or len(m.branching) + 1
        M = M * 4  # DenseGPT widens its MLP to match the tree's parameters
    per_token = n_agents * (8 * C + 2 * M + H * T) + 3 * V
    params = V * C + T * C + n_agents * (4 * C * C + 2 * C * M)
    return 4 * (B * T * per_token + 4 * params)


def check_fits(cfg, vocab_size: int, device: torch.device) -> None:
    need, have = step_bytes(cfg, vocab_size), device_memory(device)
    if need > have:
        m = cfg.model
        raise ConfigError(
            f"model.context={m.context}, train.batch_size={cfg.train.batch_size}, model.width={m.width}, "
            f"model.branching={m.branching} need about {need / 2**30:,.1f} GiB per training step, more than "
            f"the {have / 2**30:,.1f} GiB of {device}; lower model.context, train.batch_size or the model size")
