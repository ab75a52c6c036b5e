"""Several processes on PyTorch's own stack: `torchrun --nproc_per_node N -m k1 train ...` (gloo on the CPU,
NCCL on GPUs; multi-node with torchrun's usual rendezvous flags).

Every rank holds the whole model and the whole run state. The data cursor is global: each rank's sampler
draws the same global batch of `world × batch_size` windows and trains on its own slice, so rank 0's
checkpoint resumes every rank exactly. After backward the gradients and the loss are averaged across
ranks (one all-reduce of one flat buffer), so every rank measures the same signals, plans the same agents,
applies bit-identical sparse updates and takes the same phase-2 decisions. Only rank 0 prints and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch [world·B, ...]."""
        if not self.enabled:
            return t
        b = t.shape[0] // self.world
        return t[self.rank * b:(self.rank + 1) * b]

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average `tensors` across ranks in place, as one flat all-reduce."""
        if not self.enabled or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i:i + n].view_as(t))
            i += n


def setup(device_name: str) -> tuple[Dist, str]:
    """Join the process group torchrun describes (if any); → (Dist, the device this rank should use)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return Dist(rank, world), f"cuda:{local}"
    return Dist(rank, world), "cpu"


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
