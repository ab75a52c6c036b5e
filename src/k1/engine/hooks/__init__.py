"""Hooks: everything that watches or steers a run through one interface, `Hook` — the rails
(`SafetyHook`), phase 2 (`AutonomyHook`) and the recorders registered by name for `train.recorders`
(progress, metrics, attribution, tensorboard). Importing this package registers every recorder.

Also here: the vocabulary between hooks and the loop — the step result and run info they are handed
(`record.py`), the requests they return (`requests.py`) and how an event is written (`events.py`)."""

from k1.engine.hooks.attribution import AttributionHook
from k1.engine.hooks.base import HOOKS, Hook
from k1.engine.hooks.metrics import MetricsHook
from k1.engine.hooks.phase2 import AutonomyHook
from k1.engine.hooks.progress import ProgressHook
from k1.engine.hooks.rails import SafetyHook
from k1.engine.hooks.tensorboard import TensorBoardHook

__all__ = ["HOOKS", "Hook", "AttributionHook", "AutonomyHook", "MetricsHook", "ProgressHook", "SafetyHook",
           "TensorBoardHook"]
