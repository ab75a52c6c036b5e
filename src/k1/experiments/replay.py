"""Rehearsal: a reservoir of past training windows and a sampler that mixes them into the current batches.

The replay plugin (`plugins.py`) puts the sampler in place at each domain's start; this file only holds data.
"""

from __future__ import annotations

import torch


class ReservoirBuffer:
    """A uniform sample of every training window seen so far (reservoir sampling, Vitter's algorithm R).

    Each slot holds one window of `context + 1` tokens and the index of the domain it came from, so a
    replay draw can ask for past domains only. All randomness comes from the buffer's own generator.
    """

    def __init__(self, capacity: int, context: int, seed: int = 0):
        self.capacity = capacity
        self.windows = torch.zeros(capacity, context + 1, dtype=torch.long)  # [capacity, T+1]
        self.domain = torch.full((capacity,), -1, dtype=torch.long)  # [capacity]; -1 = empty slot
        self.seen = 0  # windows offered so far
        self.generator = torch.Generator().manual_seed(seed + 4099)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: torch.Tensor, y: torch.Tensor, domain: int) -> None:
        """Offer the rows of a batch (`x`, `y` [b, T]) from domain index `domain`."""
        windows = torch.cat([x, y[:, -1:]], dim=1).cpu()  # [b, T+1]: y is x shifted by one token
        for w in windows:
            if self.seen < self.capacity:
                slot = self.seen
            else:
                slot = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
            if slot < self.capacity:
                self.windows[slot], self.domain[slot] = w, domain
            self.seen += 1

    def state_dict(self) -> dict:
        return {"windows": self.windows, "domain": self.domain, "seen": self.seen,
                "generator": self.generator.get_state()}

    def load_state_dict(self, s: dict) -> None:
        self.windows, self.domain = s["windows"].clone(), s["domain"].clone()
        self.seen = int(s["seen"])
        self.generator.set_state(s["generator"])

    def sample(self, n: int, exclude_domain: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n` windows drawn uniformly (with replacement) from slots of domains other than `exclude_domain`.

        Returns x, y [n, T] and the domains [n]; empty tensors when no past-domain window is held yet.
        """
        slots = ((self.domain >= 0) & (self.domain != exclude_domain)).nonzero().squeeze(1)
        if slots.numel() == 0 or n == 0:
            empty = self.windows[:0]
            return empty[:, :-1], empty[:, 1:], self.domain[:0]
        pick = slots[torch.randint(0, slots.numel(), (n,), generator=self.generator)]
        w = self.windows[pick]
        return w[:, :-1], w[:, 1:], self.domain[pick]


class ReplaySampler:
    """The current domain's batches with `round(fraction · B)` rows replaced by past-domain windows.

    Every current-domain row the model trains on is offered to the reservoir; the replayed rows come
    only from *earlier* domains (so during the first domain nothing is replayed and the batch equals the
    naive one). The current rows are the same windows the naive strategy sees, minus the replaced tail.
    `last_replayed` ([B] bool) marks the rows of the last batch that came from the buffer.
    """

    def __init__(self, current, buffer: ReservoirBuffer, domain: int, fraction: float):
        self.current, self.buffer, self.domain = current, buffer, domain
        self.n_replay = round(fraction * current.batch_size)
        self.last_replayed: torch.Tensor | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.current.next()  # [B, T]
        B = x.shape[0]
        rx, ry, _ = self.buffer.sample(self.n_replay, exclude_domain=self.domain)
        keep = B - rx.shape[0]
        self.buffer.add(x[:keep], y[:keep], self.domain)  # what is trained on now is what may be replayed later
        x = torch.cat([x[:keep], rx.to(x.device)])
        y = torch.cat([y[:keep], ry.to(y.device)])
        self.last_replayed = torch.arange(B) >= keep
        return x, y

    def state_dict(self) -> dict:
        return {"current": self.current.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, s: dict) -> None:  # a trial restores the data cursor of both branches
        self.current.load_state_dict(s["current"])
        self.buffer.load_state_dict(s["buffer"])
