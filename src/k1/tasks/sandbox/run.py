"""`run_tests`: score model-written code on a task's tests without letting the code touch the score.

The candidate runs in its own sandbox and only answers calls with literal values. Tests of the form
`assert f(...) == LITERAL`, `f` one of the candidate's functions, are decided here: the call goes in, the
value comes out, and its canonical form is compared with the expected value's (which never enters any
sandbox; see judge.py), in time linear in the answer's size. Other test code runs in a second sandbox
(the checker) with the task's own code (setup, the prompt's helpers) and proxies that call the
candidate's functions over a pipe; its per-test verdicts come back on a pipe that only the checker holds.
Everything is killed at the wall-clock deadline.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import os
import select
import subprocess
import time

from k1.tasks.sandbox.bwrap import INSIDE, problem, python_exe, spawn
from k1.tasks.sandbox.checks import as_call, defined_names, free_names
from k1.tasks.sandbox.errors import SandboxUnavailable
from k1.tasks.sandbox.inside import frame, unhex
from k1.tasks.sandbox.judge import preview, same
from k1.tasks.sandbox.limits import Limits


class _Timeout(Exception):
    pass


class _Lines:
    """Newline-framed JSON from an fd, read with a deadline and a byte cap per line."""

    def __init__(self, fd: int, cap: int):
        self.fd, self.cap, self.buf = fd, cap, b""

    def read(self, deadline: float) -> dict | None:
        """The next message; None at end of stream; raises _Timeout or ValueError (oversized/garbled)."""
        while b"\n" not in self.buf:
            if len(self.buf) > self.cap:
                raise ValueError(f"an answer over {self.cap} bytes")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise _Timeout
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > self.cap:
            raise ValueError(f"an answer over {self.cap} bytes")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise ValueError("garbled answer")
        return msg


def _write(fd: int, data: bytes, deadline: float) -> None:
    while data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            raise _Timeout
        data = data[os.write(fd, data):]


def _inside(role: str, *fds: int) -> list[str]:
    return [python_exe(), "-I", "-S", "-B", "/k1/inside.py", role, "/k1/job", *map(str, fds)]


def run_tests(code: str, tests: list[str], limits: Limits = Limits(), *, entry: str | None = None,
              setup: list[str] = (), task_code: str = "") -> dict:
    """→ {"passed", "total", "error", "timeout", "values"}: how many of `tests` the code passes.

    `entry` names the function a `check(candidate)` test receives as `candidate`; `setup` is import lines
    that both the candidate's and the checker's namespaces get first. `task_code` is the task's own code
    (a HumanEval prompt: imports, helpers, the entry's stub), run in the checker after `setup`; of what it
    defines, the tests get the task's version, except `entry`, which is always the candidate's. `values`
    holds a preview of each value the candidate returned to a call test (for feedback; never scored)."""
    require_sandbox()
    theirs = (set(free_names(tests, list(setup))) - defined_names(task_code)) | ({entry} if entry else set())
    split = {i: as_call(t, theirs) for i, t in enumerate(tests)}
    calls = {i: c for i, c in split.items() if c is not None}             # decided here
    opaque = {i: tests[i] for i, c in split.items() if c is None}         # run by the checker
    ok = [False] * len(tests)
    out = {"passed": 0, "total": len(tests), "error": None, "timeout": False, "values": []}

    def fail(msg: str):
        out["error"] = out["error"] or msg[:300]

    deadline = time.monotonic() + limits.timeout_s
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    mine = [req_w, resp_r]
    procs = []
    try:
        lim = dataclasses.asdict(limits)
        job = marshal.dumps({"code": code, "setup": list(setup), "limits": lim})
        procs.append(spawn({"/k1/inside.py": INSIDE.encode(), "/k1/job": job},
                           _inside("candidate", req_r, resp_w), [req_r, resp_w]))
        os.close(req_r)
        os.close(resp_w)
        if opaque:
            res_r, res_w = os.pipe()
            go_r, go_w = os.pipe()
            mine += [res_r, go_w]
            names = sorted(theirs & (set(free_names(list(opaque.values()), list(setup))) | {entry}))
            cjob = marshal.dumps({"tests": list(opaque.values()), "names": names, "entry": entry,
                                  "setup": list(setup), "task_code": task_code, "limits": lim})
            procs.append(spawn({"/k1/inside.py": INSIDE.encode(), "/k1/job": cjob},
                               _inside("checker", resp_r, req_w, res_w, go_r), [resp_r, req_w, res_w, go_r]))
            os.close(res_w)
            os.close(go_r)
        os.set_blocking(req_w, False)
        answers = _Lines(resp_r, limits.answer_bytes + 4096)
        try:
            first = answers.read(deadline)
            if not first or "ready" not in first:
                fail(unhex(first["err"]) if first and "err" in first else _startup_error(procs[0]))
            else:
                for i, call in calls.items():
                    _write(req_w, frame({"call": call.expr}), deadline)
                    msg = answers.read(deadline)
                    if msg is None:
                        fail("the code exited before answering")
                        break
                    if "ok" in msg:
                        ok[i] = same(msg["ok"], call.expected)  # ValueError if malformed
                        out["values"].append(preview(msg["ok"]))
                        if not ok[i]:
                            want = type(call.expected).__name__
                            fail(f"{call.expr} returned {preview(msg['ok'], 100)}, not the expected {want}")
                    else:
                        out["values"].append(None)
                        fail(f"{call.expr}: {unhex(msg.get('err'))[:200]}")
                if opaque:
                    _write(go_w, b"go\n", deadline)
                    verdicts = _Lines(res_r, 1 << 16)
                    for _ in opaque:
                        v = verdicts.read(deadline)
                        if v is None:
                            fail("the checker stopped before the last test")
                            break
                        i = list(opaque)[int(v["i"], 16)]
                        ok[i] = v.get("ok") is True
                        if not ok[i]:
                            fail(unhex(v.get("err")))
        except _Timeout:
            out["timeout"] = True
            fail(f"timeout after {limits.timeout_s:g}s")
        except (ValueError, KeyError, TypeError, IndexError, RecursionError, MemoryError, OSError) as e:
            fail(f"{type(e).__name__}: {str(e)[:200]}")  # garbled answers, a closed pipe: the code fails
    finally:
        _stop(procs, mine)
    out["passed"] = sum(ok)
    return out


GRACE_S = 1.0


def _stop(procs: list, fds: list[int]) -> None:
    """End both sandboxes. Closing our pipe ends first lets well-behaved ones exit by themselves (the
    programs inside stop at end of input); whatever is still there after GRACE_S is killed. Killing bwrap
    while it is still setting up can orphan its PID namespace's init, so the kill is the fallback."""
    for fd in fds:
        os.close(fd)
    end = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(max(end - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            p.kill()  # the namespace's init dies with it, and everything in the namespace with that
            p.wait()
        p.stderr.close()


def _startup_error(p) -> str:
    """What the interpreter said when it failed to start (its stderr is closed once it is running)."""
    if select.select([p.stderr], [], [], 0.2)[0]:
        msg = " ".join(os.read(p.stderr.fileno(), 4096).decode(errors="replace").split())
        if msg:
            return f"no answer from the sandbox: {msg[-250:]}"
    return "the code exited before it was ready"


def require_sandbox() -> None:
    """Raise SandboxUnavailable (one line, with how to get it) unless the sandbox works here."""
    why = problem()
    if why is not None:
        raise SandboxUnavailable(
            f"refusing to run model-written Python without a sandbox: {why}; install bubblewrap "
            "(Debian/Ubuntu: apt-get install bubblewrap) and allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)")
