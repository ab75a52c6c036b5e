"""Training callbacks, registered by name; importing this package registers every member."""

from k1.engine.callbacks.attribution import AttributionCallback
from k1.engine.callbacks.base import CALLBACKS, Callback
from k1.engine.callbacks.metrics import MetricsCallback
from k1.engine.callbacks.progress import ProgressCallback
from k1.engine.callbacks.tensorboard import TensorBoardCallback

__all__ = ["CALLBACKS", "Callback", "AttributionCallback", "MetricsCallback", "ProgressCallback", "TensorBoardCallback"]
