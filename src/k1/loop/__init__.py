"""The self-learning loop (work in progress)."""
