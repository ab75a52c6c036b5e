"""Batches of next-token windows: random, domain-mixed training batches and fixed evaluation windows.

A window is `context + 1` consecutive tokens; `x` is its first `context`, `y` its last `context`, so
`y[:, t]` is the token that follows `x[:, t]` (next-token targets, aligned here once for everyone).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from k1.data.corpus import Corpus
from k1.errors import DataError


def check_window(tokens: torch.Tensor, context: int, what: str) -> None:
    """Raise DataError unless `tokens` holds at least one window of `context + 1` tokens."""
    if context < 1:
        raise DataError(f"context must be at least 1 token, got {context}")
    if tokens.numel() < context + 1:
        raise DataError(
            f"{what} has {tokens.numel()} tokens, fewer than context + 1 = {context + 1}; "
            "use a smaller context or more text (more documents, a larger val_fraction or no max_train_bytes)"
        )


class BatchSampler:
    """Random windows from one split of several domains, mixed evenly within every batch.

    Row `i` of a batch comes from domain `perm[i % n_domains]`, where `perm` is a fresh random
    permutation of the domains per batch: each batch holds `batch_size // n` rows of every domain (the
    `batch_size % n` extra rows go to domains chosen at random), so no domain dominates a step.
    `last_domains` ([B] int64 indices into `domains`) says which domain each row of the last batch
    came from. All randomness comes from the sampler's own `torch.Generator`, so `state_dict()` /
    `load_state_dict()` resume the exact sequence of batches.
    """

    def __init__(
        self,
        corpus: Corpus,
        batch_size: int,
        context: int,
        seed: int = 0,
        split: str = "train",
        domains: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if split not in ("train", "val"):
            raise DataError(f"split must be 'train' or 'val', got {split!r}")
        self.domains = list(domains) if domains is not None else list(corpus.domains)
        unknown = [d for d in self.domains if d not in corpus.domains]
        if unknown or not self.domains:
            raise DataError(
                f"sampler domain {unknown[0] if unknown else None!r} is not in the corpus; "
                f"choose from {', '.join(corpus.domains)}"
            )
        self.batch_size, self.context, self.seed, self.split = batch_size, context, seed, split
        self.device = torch.device(device)
        self._tokens = [getattr(corpus.domains[d], split) for d in self.domains]
        for name, tokens in zip(self.domains, self._tokens):
            check_window(tokens, context, f"domain {name!r} {split} split")
        self._offsets = torch.arange(context + 1)  # [T+1]
        self._generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self.last_domains: torch.Tensor | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: `x`, `y` both [B, T] int64 with `y[:, t]` the token after `x[:, t]`."""
        B, T, n = self.batch_size, self.context, len(self.domains)
        perm = torch.randperm(n, generator=self._generator)
        row_domain = perm[torch.arange(B) % n]  # [B]
        x = torch.empty(B, T, dtype=torch.long)
        y = torch.empty(B, T, dtype=torch.long)
        for k, tokens in enumerate(self._tokens):
            rows = (row_domain == k).nonzero().squeeze(1)  # always drawn in domain order: reproducible
            if rows.numel() == 0:
                continue
            starts = torch.randint(0, tokens.numel() - T, (rows.numel(),), generator=self._generator)
            window = tokens[starts[:, None] + self._offsets].long()  # [b, T+1]
            x[rows] = window[:, :-1]
            y[rows] = window[:, 1:]
        self.batches_drawn += 1
        self.last_domains = row_domain
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next()

    def state_dict(self) -> dict:
        """Everything needed to continue the same batch sequence (the generator state and the settings)."""
        return {
            "generator": self._generator.get_state(),
            "batches_drawn": self.batches_drawn,
            "seed": self.seed,
            "split": self.split,
            "domains": list(self.domains),
            "batch_size": self.batch_size,
            "context": self.context,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the sampler must have been built with the same split, domains and shape."""
        mine = {"split": self.split, "domains": self.domains, "batch_size": self.batch_size, "context": self.context}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            diff = ", ".join(f"{k}={theirs[k]!r} (here {mine[k]!r})" for k in mine if mine[k] != theirs[k])
            raise DataError(f"sampler state does not match this sampler: {diff}; build it with the saved settings")
        self._generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])
        self.seed = state["seed"]


def eval_windows(
    tokens: torch.Tensor, batch_size: int, context: int, n_batches: int, name: str = "validation split"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` fixed batches of windows, evenly spaced from the start to the end of `tokens`.

    No randomness: every call (every evaluation, every run) scores exactly the same text, so losses are
    comparable across steps and runs. Windows overlap when the split is shorter than all of them together.
    """
    check_window(tokens, context, name)
    n = batch_size * n_batches
    last_start = tokens.numel() - context - 1
    starts = torch.linspace(0, last_start, n, dtype=torch.float64).round().long()  # [n]
    windows = tokens[starts[:, None] + torch.arange(context + 1)].long()  # [n, T+1]
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
