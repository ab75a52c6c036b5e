"""Tiny deterministic fixtures shared by tests/ and bench/: corpora, configs and trees that run in seconds."""

from k1.testing.cli import run_k1
from k1.testing.tiny import tiny_config, tiny_corpus, tiny_run, write_tiny_config_file, write_tiny_corpus

__all__ = ["run_k1", "tiny_config", "tiny_corpus", "tiny_run", "write_tiny_config_file", "write_tiny_corpus"]
