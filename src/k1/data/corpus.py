"""`Corpus`: every domain's train and validation text as 1-D token tensors, ready for the sampler.

Loading is fast on purpose: with the byte tokenizer a split's bytes *are* its tokens (`torch.frombuffer`,
no Python loop). Unigram entropy gives the floor a model must beat to show it uses context.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from k1.data.config import DataConfig
from k1.data.sources import load_texts
from k1.data.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainSplit:
    """One domain's tokens: `train` and `val` are 1-D (uint8 for bytes, int32 otherwise).

    `val_bytes_per_token` converts a loss per token into one per byte (1.0 for the byte tokenizer), so
    models with different tokenizers compare in bits per byte.
    """

    train: torch.Tensor
    val: torch.Tensor
    val_bytes_per_token: float


@dataclass
class Corpus:
    """The domains of a run, their tokenizer and the manifest that says where the text came from."""

    domains: dict[str, DomainSplit]
    tokenizer: ByteTokenizer | HFTokenizer
    vocab_size: int
    manifest: dict

    def unigram_bits_per_byte(self) -> dict[str, float]:
        """Per domain: the validation cross-entropy, in bits per byte, of the *train* unigram distribution.

        Train counts are add-one smoothed over the vocabulary so an unseen validation token costs a finite
        amount; using train (not val) statistics makes this an honest held-out baseline: a model scoring
        above it has not even learned token frequencies.
        """
        out = {}
        for name, split in self.domains.items():
            counts = torch.bincount(split.train.long(), minlength=self.vocab_size).double() + 1.0
            log_p = torch.log2(counts / counts.sum())
            bits_per_token = -log_p[split.val.long()].mean().item() if split.val.numel() else float("nan")
            out[name] = bits_per_token / split.val_bytes_per_token
        return out

    def describe(self) -> list[dict]:
        """One row per domain (tokens and bytes per split), for tables and logs."""
        return [
            {"domain": d, "train_tokens": s.train.numel(), "val_tokens": s.val.numel(),
             "val_bytes_per_token": s.val_bytes_per_token}
            for d, s in self.domains.items()
        ]


def unigram_entropy_bits(tokens: torch.Tensor) -> float:
    """Entropy, in bits per token, of the empirical unigram distribution of `tokens` (any integer dtype)."""
    if tokens.numel() == 0:
        return 0.0
    counts = torch.bincount(tokens.reshape(-1).long()).double()
    p = counts[counts > 0] / tokens.numel()
    return float(-(p * torch.log2(p)).sum())


def load_corpus(cfg: DataConfig | None = None) -> Corpus:
    """Read (building if needed) and tokenize every domain of `cfg`; a few seconds for the built-in ~17 MB."""
    cfg = cfg or DataConfig()
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.tokenizer)
    texts, manifest = load_texts(cfg)
    domains = {}
    for name, text in texts.items():
        train_bytes = text.train if cfg.max_train_bytes is None else text.train[: cfg.max_train_bytes]
        train = encode_bytes(tokenizer, train_bytes)
        val = encode_bytes(tokenizer, text.val)
        bytes_per_token = len(text.val) / val.numel() if val.numel() else 1.0
        domains[name] = DomainSplit(train, val, bytes_per_token)
    log.info("corpus %s loaded in %.2f s (%s)", ", ".join(domains), time.perf_counter() - t0,
             ", ".join(f"{d}: {s.train.numel():,}+{s.val.numel():,} tokens" for d, s in domains.items()))
    return Corpus(domains, tokenizer, tokenizer.vocab_size, manifest)


def encode_bytes(tokenizer: ByteTokenizer | HFTokenizer, data: bytes) -> torch.Tensor:
    """UTF-8 text -> a 1-D token tensor: the bytes themselves (one copy, no Python loop), or int32 ids."""
    if isinstance(tokenizer, ByteTokenizer):
        if not data:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)  # bytearray: frombuffer wants a writable buffer
    # A truncated split may end inside a character: drop the partial tail rather than invent a token.
    ids = tokenizer.encode(data.decode("utf-8", errors="ignore"))
    return torch.tensor(ids, dtype=torch.int32) if ids else torch.empty(0, dtype=torch.int32)
