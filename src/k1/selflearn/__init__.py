"""The self-learning loop: verifiable tasks → a target's answers → verified improvements → JSONL dataset with
provenance → training (K-1 engine or LoRA) → held-out before/after by verifiers over several seeds.

`run_loop(LoopConfig)` is the whole loop; the parts are importable on their own. The tasks, verifiers and
sandbox live in `k1.tasks` (the pool's calibration judges with them too) and are re-exported here.
"""

from k1.selflearn.config import LoopConfig, load_loop_config
from k1.selflearn.evaluate import evaluate
from k1.selflearn.improve import METHODS, Candidate, Improvement, rejection_sampling, self_refine, teacher_rewrite
from k1.selflearn.runner import run_loop
from k1.tasks import (VERIFIERS, Limits, SandboxUnavailable, Task, arithmetic_tasks, builtin_tasks,  # noqa: F401
                      load_task_file, python_tasks, require_sandbox, run_tests, split_tasks, verify)

__all__ = ["Candidate", "Improvement", "Limits", "LoopConfig", "METHODS", "SandboxUnavailable", "Task", "VERIFIERS",
           "arithmetic_tasks", "builtin_tasks", "evaluate", "load_loop_config", "load_task_file", "python_tasks",
           "rejection_sampling", "require_sandbox", "run_loop", "run_tests", "self_refine", "split_tasks",
           "teacher_rewrite", "verify"]
