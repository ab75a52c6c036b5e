"""The pool: language models (K-1 checkpoints, Hugging Face models, OpenAI-compatible servers) behind one
interface, chosen by earned trust under a cost budget (see docs/pool.md)."""

from k1.pool.config import PoolConfig, read_pool_config
from k1.pool.members import CallFailed, Cost, Generation, Member, Score
from k1.pool.pool import Pool, load_member, load_pool

__all__ = ["CallFailed", "Cost", "Generation", "Member", "Pool", "PoolConfig", "Score", "load_member", "load_pool",
           "read_pool_config"]
