"""Recorders (progress, metrics, attribution, tensorboard) are hooks registered by name: `train.callbacks`."""

from k1.engine.hooks.base import HOOKS as CALLBACKS
from k1.engine.hooks.base import Hook as Callback

__all__ = ["CALLBACKS", "Callback"]
