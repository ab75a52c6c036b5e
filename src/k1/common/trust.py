"""The trust estimate used wherever outcomes are counted: the mean of a Beta(1 + successes, 1 + failures)
posterior — 0.5 with no evidence, moving toward the observed success rate as outcomes accumulate."""

from __future__ import annotations


def beta_mean(successes: float, failures: float) -> float:
    """Posterior mean success rate under a uniform prior (Laplace's rule of succession)."""
    return (1 + successes) / (2 + successes + failures)
