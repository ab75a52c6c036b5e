"""Run untrusted Python in a subprocess with no network (a new network namespace), resource limits and a timeout.

Where `unshare -n` is not permitted (no root, no user namespaces), `require_sandbox()` raises rather than
run model-written code unsandboxed.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from k1.errors import K1Error


class SandboxUnavailable(K1Error):
    """No way to run code without network access here; the Python verifier refuses to run."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0
    memory_bytes: int = 512 << 20   # address space
    cpu_s: int = 5
    file_bytes: int = 1 << 20       # largest file the code may write
    open_files: int = 64


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when `unshare -n` works here; otherwise why not (cached: one probe per process)."""
    exe = shutil.which("unshare")
    if exe is None:
        return "the `unshare` program (util-linux) is not installed"
    try:
        r = subprocess.run([exe, "-n", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`unshare -n true` failed to run: {e}"
    if r.returncode != 0:
        return f"`unshare -n true` is not permitted here ({r.stderr.strip() or r.returncode}); run as root or enable user namespaces"
    return None


def require_sandbox() -> None:
    problem = sandbox_problem()
    if problem is not None:
        raise SandboxUnavailable(f"refusing to run model-written Python without a network sandbox: {problem}")


def _limit(limits: Limits):
    def apply():
        os.setsid()  # own process group: the timeout kills everything the code started
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


# Runs each test in the solution's namespace and reports how many passed, as one JSON line on stdout.
_HARNESS = r"""
import json, sys
ns = {"__name__": "solution"}
result = {"passed": 0, "total": 0, "error": None}
tests = json.load(open("tests.json"))
result["total"] = len(tests)
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
except BaseException as e:
    result["error"] = f"{type(e).__name__}: {e}"[:300]
else:
    for t in tests:
        try:
            exec(t, dict(ns))
            result["passed"] += 1
        except BaseException as e:
            result["error"] = result["error"] or f"{type(e).__name__}: {e}"[:300]
sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
"""


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> dict:
    """→ {"passed", "total", "error", "timeout"}: `code` and the assert lines run in a fresh sandboxed Python."""
    require_sandbox()
    with tempfile.TemporaryDirectory(prefix="k1-sandbox-") as tmp:
        d = Path(tmp)
        (d / "solution.py").write_text(code)
        (d / "tests.json").write_text(json.dumps(tests))
        (d / "harness.py").write_text(_HARNESS)
        cmd = [shutil.which("unshare"), "-n", "--", sys.executable, "-I", "-S", "harness.py"]
        p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}, preexec_fn=_limit(limits))
        try:
            out, err = p.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return {"passed": 0, "total": len(tests), "error": f"timeout after {limits.timeout_s:g}s", "timeout": True}
    marker = out.rfind("@@RESULT@@")
    if marker < 0:
        return {"passed": 0, "total": len(tests), "timeout": False,
                "error": f"no result (exit {p.returncode}): {err.strip()[-300:]}"}
    return {**json.loads(out[marker + len("@@RESULT@@"):].strip()), "timeout": False}
