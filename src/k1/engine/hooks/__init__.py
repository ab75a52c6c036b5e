"""Hooks that steer a run (safety rails, autonomy) and the `Hook` interface every recorder implements."""

from k1.engine.hooks.autonomy import AutonomyHook
from k1.engine.hooks.base import HOOKS, Hook
from k1.engine.hooks.safety import SafetyHook

__all__ = ["HOOKS", "Hook", "AutonomyHook", "SafetyHook"]
