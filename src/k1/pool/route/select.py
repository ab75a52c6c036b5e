"""Choosing a member: Thompson sampling, UCB1 or greedy on utility = P(success) − λ · cost / max cost.

Trust is a Beta(1 + successes, 1 + failures) posterior per (member, task class). Cost is the member's
expected ATP per call, divided by the largest among the candidates so that λ (`cost_weight`) is unitless:
λ = 0 ignores cost, λ = 1 lets the priciest member's whole cost weigh as much as certain success.
Thompson draws a success rate from each posterior (explores where it is unsure); UCB adds
sqrt(2 ln N / n) to the posterior mean; greedy takes the mean (for evaluation: no exploration).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from k1.common.trust import beta_mean


@dataclass(frozen=True)
class Candidate:
    name: str
    successes: float  # in this task class
    failures: float
    cost: float  # expected ATP per call

    @property
    def mean(self) -> float:
        return beta_mean(self.successes, self.failures)

    @property
    def n(self) -> float:
        return self.successes + self.failures


@dataclass(frozen=True)
class Decision:
    member: str
    mode: str
    utilities: dict[str, float]  # what each candidate scored (for the log and `k1 pool status`)


def _thompson(c: Candidate, total: float, rng: random.Random, ucb_c: float) -> float:
    return rng.betavariate(1.0 + c.successes, 1.0 + c.failures)


def _ucb(c: Candidate, total: float, rng: random.Random, ucb_c: float) -> float:
    return math.inf if c.n == 0 else c.mean + ucb_c * math.sqrt(2.0 * math.log(max(total, 1.0)) / c.n)


def _greedy(c: Candidate, total: float, rng: random.Random, ucb_c: float) -> float:
    return c.mean


# mode → the success estimate it scores a candidate with (candidate, total observations, rng, UCB constant)
MODES: dict[str, Callable[[Candidate, float, random.Random, float], float]] = {
    "thompson": _thompson, "ucb": _ucb, "greedy": _greedy}


def select(candidates: list[Candidate], mode: str = "thompson", cost_weight: float = 0.3,
           rng: random.Random | None = None, ucb_c: float = 1.0) -> Decision:
    """Pick the candidate with the highest utility under `mode` (a name in `MODES`)."""
    if not candidates:
        raise ValueError("no candidates to select from")
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; {', '.join(MODES)}")
    rng = rng or random.Random()
    estimate = MODES[mode]
    top_cost = max(c.cost for c in candidates) or 1.0
    total = sum(c.n for c in candidates)
    util = {c.name: estimate(c, total, rng, ucb_c) - cost_weight * c.cost / top_cost for c in candidates}
    best = max(util.values())
    ties = [n for n, u in util.items() if u == best]  # e.g. several untried members under UCB
    return Decision(rng.choice(ties), mode, util)
