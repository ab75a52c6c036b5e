"""Verifiable tasks and their judges, shared by the self-learning loop (`k1 loop`) and the pool's calibration.

`task.py` holds `Task` and the built-in task makers; `files.py` reads task files in the K-1, HumanEval and MBPP
JSONL layouts; `verifiers.py` scores an answer; `sandbox/` runs model-written code under bubblewrap.
"""

from k1.tasks.files import load_task_file
from k1.tasks.sandbox import Limits, SandboxUnavailable, require_sandbox, run_tests
from k1.tasks.task import Task, arithmetic_tasks, builtin_tasks, python_tasks, split_tasks
from k1.tasks.verifiers import VERIFIERS, verify

__all__ = ["Limits", "SandboxUnavailable", "Task", "VERIFIERS", "arithmetic_tasks", "builtin_tasks", "load_task_file",
           "python_tasks", "require_sandbox", "run_tests", "split_tasks", "verify"]
