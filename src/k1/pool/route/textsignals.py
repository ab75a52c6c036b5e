"""Text signals shared by context classes and SNARC: character n-gram similarity, novelty, surprise.

Character 3-grams are cheap, need no model, and work for any language or code; their Jaccard similarity
is 1 for identical texts and 0 for texts that share no three-character sequence.
"""

from __future__ import annotations

from k1.pool.members.base import Member


def ngrams(text: str, n: int = 3) -> frozenset[str]:
    t = " ".join(text.lower().split())
    return frozenset(t[i:i + n] for i in range(max(1, len(t) - n + 1))) if t else frozenset()


def similarity(a: str | frozenset, b: str | frozenset) -> float:
    """Jaccard similarity of character 3-gram sets, in [0, 1]."""
    a = ngrams(a) if isinstance(a, str) else a
    b = ngrams(b) if isinstance(b, str) else b
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def novelty(text: str, memory: list[str]) -> float:
    """1 − the highest similarity to anything in `memory` (1.0 when memory is empty)."""
    g = ngrams(text)
    return 1.0 - max((similarity(g, ngrams(m)) for m in memory), default=0.0)


def surprise_bpb(reference: Member | None, prompt: str, text: str) -> float | None:
    """Bits per byte of `text` after `prompt` under the reference member; None without one (or empty text)."""
    if reference is None or not text:
        return None
    try:
        return reference.score(prompt or "\n", text).bits_per_byte
    except NotImplementedError:
        return None
