"""K-1: hierarchical self-learning systems on PyTorch — agent trees trained by attributed sparse updates."""

__version__ = "0.1.0"
