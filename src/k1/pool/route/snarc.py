"""SNARC: how much an experience matters, from five measured signals, each in [0, 1].

- surprise: bits per byte of the response under the reference member, / 8 (8 = uniform over bytes);
- novelty:  1 − the best 3-gram similarity of prompt + response to the most recent experiences;
- arousal:  mean entropy of the answering member's next-token distributions, / ln(vocabulary) (local only);
- reward:   the outcome (1 success … 0 failure) from feedback, a verifier or a judge, once known;
- conflict: 1 − the similarity of the answers, when more than one member answered.
importance = Σ wᵢ·signalᵢ / Σ wᵢ over the signals that are known (weights in `SnarcWeights`).
`prioritized_sample` draws experiences with probability ∝ importance^α, without replacement.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, ConfigDict, Field

from k1.pool.members.base import Generation, Member
from k1.pool.route.textsignals import novelty, similarity, surprise_bpb

SIGNALS = ("surprise", "novelty", "arousal", "reward", "conflict")


class SnarcWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    surprise: float = Field(default=0.25, ge=0)
    novelty: float = Field(default=0.2, ge=0)
    arousal: float = Field(default=0.15, ge=0)
    reward: float = Field(default=0.25, ge=0)
    conflict: float = Field(default=0.15, ge=0)
    memory: int = Field(default=200, ge=1)  # recent experiences novelty is measured against


def importance(signals: dict[str, float | None], w: SnarcWeights) -> float:
    known = [(getattr(w, k), v) for k, v in signals.items() if k in SIGNALS and v is not None]
    total = sum(wk for wk, _ in known)
    return sum(wk * v for wk, v in known) / total if total > 0 else 0.0


def snarc(prompt: str, gen: Generation, *, reference: Member | None, memory: list[str],
          reward: float | None = None, others: list[str] | None = None) -> dict[str, float | None]:
    """The five signals for one answered prompt (None where a signal cannot be measured)."""
    bpb = surprise_bpb(reference, prompt, gen.text)
    ent = gen.token_entropies
    return {
        "surprise": None if bpb is None else min(bpb / 8.0, 1.0),
        "novelty": novelty(prompt + "\n" + gen.text, memory),
        "arousal": sum(ent) / len(ent) if ent else None,
        "reward": reward,
        "conflict": (1.0 - sum(similarity(gen.text, o) for o in others) / len(others)) if others else None,
    }


def prioritized_sample(experiences: list[dict], k: int, alpha: float = 1.0, rng: random.Random | None = None,
                       eps: float = 1e-3) -> list[dict]:
    """k experiences drawn ∝ (importance + eps)^alpha without replacement (Efraimidis–Spirakis keys)."""
    rng = rng or random.Random()
    keyed = []
    for e in experiences:
        w = ((e.get("importance") or 0.0) + eps) ** alpha
        keyed.append((math.log(rng.random() or 1e-300) / w, e))
    keyed.sort(key=lambda x: x[0], reverse=True)
    return [e for _, e in keyed[:k]]
