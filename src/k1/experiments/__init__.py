"""Experiments: `compare` (baseline vs policies) and `continual` (domains in sequence, forgetting)."""

from k1.experiments.compare import POLICY_ORDER, run_compare
from k1.experiments.continual import continual_metrics, run_continual
from k1.experiments.strategies import ContinualConfig, EWCPenalty, ReplaySampler, ReservoirBuffer

__all__ = ["POLICY_ORDER", "run_compare", "continual_metrics", "run_continual", "ContinualConfig", "EWCPenalty",
           "ReplaySampler", "ReservoirBuffer"]
