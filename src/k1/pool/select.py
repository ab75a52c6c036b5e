"""Choosing a member: Thompson sampling, UCB1 or greedy on utility = P(success) − λ · cost / max cost.

Trust is a Beta(1 + successes, 1 + failures) posterior per (member, context class). Cost is the member's
expected ATP per call, divided by the largest among the candidates so that λ (`cost_weight`) is unitless:
λ = 0 ignores cost, λ = 1 lets the priciest member's whole cost weigh as much as certain success.
Thompson draws a success rate from each posterior (explores where it is unsure); UCB adds
sqrt(2 ln N / n) to the posterior mean; greedy takes the mean (for evaluation: no exploration).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    name: str
    successes: float  # in this context class
    failures: float
    cost: float  # expected ATP per call

    @property
    def mean(self) -> float:
        return (1.0 + self.successes) / (2.0 + self.successes + self.failures)

    @property
    def n(self) -> float:
        return self.successes + self.failures


@dataclass(frozen=True)
class Decision:
    member: str
    mode: str
    utilities: dict[str, float]  # what each candidate scored (for the log and `k1 pool status`)


def select(candidates: list[Candidate], mode: str = "thompson", cost_weight: float = 0.3,
           rng: random.Random | None = None, ucb_c: float = 1.0) -> Decision:
    """Pick the candidate with the highest utility under `mode` ("thompson" | "ucb" | "greedy")."""
    if not candidates:
        raise ValueError("no candidates to select from")
    rng = rng or random.Random()
    top_cost = max(c.cost for c in candidates) or 1.0
    total = sum(c.n for c in candidates)
    util = {}
    for c in candidates:
        if mode == "thompson":
            p = rng.betavariate(1.0 + c.successes, 1.0 + c.failures)
        elif mode == "ucb":
            p = math.inf if c.n == 0 else c.mean + ucb_c * math.sqrt(2.0 * math.log(max(total, 1.0)) / c.n)
        elif mode == "greedy":
            p = c.mean
        else:
            raise ValueError(f"unknown selection mode {mode!r}; thompson, ucb or greedy")
        util[c.name] = p - cost_weight * c.cost / top_cost
    best = max(util.values())
    ties = [n for n, u in util.items() if u == best]  # e.g. several untried members under UCB
    return Decision(rng.choice(ties), mode, util)
