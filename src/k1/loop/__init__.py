"""The self-learning loop: verifiable tasks → a target's answers → verified improvements → JSONL dataset with
provenance → training (K-1 engine or LoRA) → held-out before/after by verifiers over several seeds.

`run_loop(LoopConfig)` is the whole loop; the parts are importable on their own.
"""

from k1.loop.config import LoopConfig, load_loop_config
from k1.loop.evaluate import evaluate
from k1.loop.improve import METHODS, Candidate, Improvement, rejection_sampling, self_refine, teacher_rewrite
from k1.loop.runner import run_loop
from k1.loop.sandbox import Limits, SandboxUnavailable, require_sandbox, run_tests
from k1.loop.tasks import Task, arithmetic_tasks, builtin_tasks, load_task_file, python_tasks, split_tasks
from k1.loop.verifiers import VERIFIERS, verify

__all__ = ["Candidate", "Improvement", "Limits", "LoopConfig", "METHODS", "SandboxUnavailable", "Task", "VERIFIERS",
           "arithmetic_tasks", "builtin_tasks", "evaluate", "load_loop_config", "load_task_file", "python_tasks",
           "rejection_sampling", "require_sandbox", "run_loop", "run_tests", "self_refine", "split_tasks",
           "teacher_rewrite", "verify"]
