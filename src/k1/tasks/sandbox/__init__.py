"""Run model-written Python where it can neither harm the machine nor forge its own score.

- `bwrap.py`: the isolation (bubblewrap namespaces, an unprivileged uid, only the interpreter's files).
- `seccomp.py`: the system calls refused inside (memory no limit counts, kernel attack surface).
- `inside.py`: what runs inside (the candidate server and the checker) and the literal-value codec.
- `checks.py`: which tests are decided outside (a call and its expected value) and which are opaque code.
- `judge.py`: the outside comparison, in time linear in the answer, whatever the candidate sent.
- `errors.py`: `SandboxUnavailable`.
- `run.py`: `run_tests`, which puts them together under one wall-clock deadline.

Where the isolation is not available, `require_sandbox()` (and so every Python verification) raises
`SandboxUnavailable` with how to get it; nothing falls back to running the code unsandboxed.
"""

from k1.tasks.sandbox.bwrap import problem as sandbox_problem
from k1.tasks.sandbox.errors import SandboxUnavailable
from k1.tasks.sandbox.limits import Limits
from k1.tasks.sandbox.run import require_sandbox, run_tests

__all__ = ["Limits", "SandboxUnavailable", "require_sandbox", "run_tests", "sandbox_problem"]
