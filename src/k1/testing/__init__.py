"""Tiny deterministic fixtures shared by tests/ and bench/: corpora, configs and trees that run in seconds."""

from k1.testing.tiny import tiny_config, tiny_corpus, write_tiny_corpus

__all__ = ["tiny_config", "tiny_corpus", "write_tiny_corpus"]
