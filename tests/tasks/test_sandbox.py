"""The sandbox, attacked: each test is an attack on the Python verifier and asserts the specific containment.

Most attacks report what they saw through the only channel a candidate has, its function's return value:
`probe()` returns an observation and the task's test expects the contained one, so a score of 1.0 means
"contained". Effects on the host (files, processes, connections, memory) are checked on the host.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from k1.tasks import sandbox
from k1.tasks.sandbox import Limits
from k1.tasks.task import Task
from k1.tasks.verifiers import verify_python

pytestmark = pytest.mark.skipif(sandbox.sandbox_problem() is not None,
                                reason=f"no isolation here: {sandbox.sandbox_problem()}")

REPO = Path(__file__).resolve().parents[2]
ADD3 = Task("t-add3", "python", "add_n", {"entry": "add_n", "tests": ["assert add_n(0) == 3", "assert add_n(5) == 8"]})


def V(task: Task, code: str, limits: Limits | None = None) -> float:
    """The verifier's score for `code` as a fenced reply (so the whole block is the candidate's code)."""
    return verify_python(task, f"```python\n{code}```\n", limits or Limits())


def lim(**kw) -> Limits:
    fields = {f.name for f in dataclasses.fields(Limits)}
    return Limits(**{k: v for k, v in kw.items() if k in fields})


def probe(body: str, expected, limits: Limits | None = None, test: str | None = None) -> float:
    """Score of a task whose one test is `assert probe() == expected` (or `test`), for `def probe(): <body>`."""
    code = "import os, sys, time\ndef probe():\n" + "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))
    t = Task("probe", "python", "probe", {"entry": "probe", "tests": [test or f"assert probe() == {expected!r}"]})
    return V(t, code, limits)


def timed(fn, limit_s: float):
    """(result, seconds) of fn() in a daemon thread; (None, None) if it has not returned after limit_s."""
    box = {}
    th = threading.Thread(target=lambda: box.update(r=fn(), t=time.perf_counter()), daemon=True)
    t0 = time.perf_counter()
    th.start()
    th.join(limit_s)
    return (box["r"], box["t"] - t0) if "r" in box else (None, None)


# --- forged scores -----------------------------------------------------------------------------------------

WRONG = "def add_n(x):\n    return x + 2\n"


def test_control_right_code_passes_and_wrong_code_fails():
    assert V(ADD3, "def add_n(x):\n    return x + 3\n") == 1.0
    assert V(ADD3, WRONG) == 0.0


def test_printed_result_marker_and_hard_exit_do_not_score():
    forged = WRONG + ("import os, sys\nsys.stdout.write('\\n@@RESULT@@{\"passed\": 2, \"total\": 2, \"error\": null}\\n')\n"
                      "sys.stdout.flush()\nos._exit(0)\n")
    assert V(ADD3, forged) == 0.0


def test_result_marker_printed_at_exit_does_not_score():
    forged = WRONG + ("import atexit\natexit.register(lambda: print('\\n@@RESULT@@{\"passed\": 2, \"total\": 2, "
                      "\"error\": null}'))\n")
    assert V(ADD3, forged) == 0.0


def test_malformed_marker_neither_crashes_the_verifier_nor_hides_a_right_answer():
    for fn in (WRONG, "def add_n(x):\n    return x + 3\n"):
        code = fn + "import atexit\natexit.register(lambda: print('@@RESULT@@{not json'))\n"
        assert V(ADD3, code) == (1.0 if "+ 3" in fn else 0.0)


def test_a_value_whose_eq_is_always_true_does_not_pass():
    code = ("class Yes:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n"
            "        return False\n    __hash__ = object.__hash__\n"
            "def add_n(x):\n    return Yes()\n")
    assert V(ADD3, code) == 0.0


def test_a_subclass_of_the_expected_type_does_not_pass():
    code = "class I(int):\n    def __eq__(self, other):\n        return True\ndef add_n(x):\n    return I(0)\n"
    assert V(ADD3, code) == 0.0
    assert V(ADD3, "def add_n(x):\n    return float(x + 3)\n") == 0.0  # strict: 3.0 is not 3


def test_the_expected_values_never_enter_the_sandbox():
    # the candidate looks for the expected output everywhere it can reach: every object in its interpreter,
    # its stack, its command line and every file it was given; it builds the needle at run time so that its
    # own source does not contain it
    body = r"""
import gc, inspect
needle = 'k1-secret' + '-expected-'
hits = [o for o in gc.get_objects() if isinstance(o, str) and needle in o and o is not needle]
for f in inspect.stack():
    hits += [v for v in f.frame.f_locals.values() if isinstance(v, str) and needle in v and v is not needle]
for root, _, files in os.walk('/k1'):
    for name in files:
        hits += [name] if needle in open(os.path.join(root, name), errors='replace').read() else []
hits += ['cmdline'] if needle in ' '.join(sys.orig_argv) else []  # what /proc/self/cmdline holds (no /proc)
return len(hits)
"""
    code = "import os, sys\ndef add_n(x):\n" + "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))
    from k1.tasks.sandbox import run_tests
    r = run_tests(code, ["assert add_n(5) == 'k1-secret-expected-7731'"])
    assert r["passed"] == 0
    assert r.get("values") == ["0"]  # what it returned: it found nothing


def test_opaque_check_code_runs_apart_from_the_candidate():
    # HumanEval-style check(candidate): the candidate cannot reach the checker's process or its result channel
    tests = ["def check(candidate):\n    assert candidate(1) == 4\n    assert candidate(2) == 5\ncheck(add_n)"]
    t = Task("t", "python", "add_n", {"entry": "add_n", "tests": tests})
    assert V(t, "def add_n(x):\n    return x + 3\n") == 1.0
    assert V(t, WRONG) == 0.0
    forged = WRONG + ("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\n@@RESULT@@{\"passed\": 1, "
                      "\"total\": 1}\\n')\n    except OSError:\n        pass\n"
                      "import atexit\natexit.register(lambda: print('@@RESULT@@{\"passed\": 1, \"total\": 1}'))\n")
    assert V(t, forged) == 0.0


def test_garbage_on_every_descriptor_neither_crashes_the_verifier_nor_scores():
    code = WRONG + ("import os\nfor fd in range(3, 64):\n    for junk in (b'[' * 200000 + b'\\n', b'{\"ok\": [\"i\"]}\\n',"
                    " b'{\"i\": 99, \"ok\": true}\\n', b'\\xff\\n'):\n        try:\n            os.write(fd, junk)\n"
                    "        except OSError:\n            pass\n")
    assert V(ADD3, code) == 0.0
    check = Task("t", "python", "add_n", {"entry": "add_n", "tests": ["assert add_n(0) > 2"]})
    assert V(check, code) == 0.0


# --- filesystem, environment, /proc ------------------------------------------------------------------------

def test_host_secrets_project_and_home_are_not_visible():
    assert probe("""
try:
    open('/etc/shadow').read()
    return 'read'
except FileNotFoundError:
    return 'absent'
except PermissionError:
    return 'denied'
""", "absent") == 1.0
    assert probe(f"return [os.path.exists(p) for p in {[str(REPO / 'src'), str(REPO), '/work', str(Path.home() / '.bashrc')]!r}]",
                 [False, False, False, False]) == 1.0


def test_parent_environment_is_not_readable(monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("K1_TEST_SECRET", secret)
    assert probe(f"""
hits = 0
for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:  # no /proc at all now
    try:
        hits += b'{secret}' in open(f'/proc/{{pid}}/environ', 'rb').read()
    except (OSError, ValueError):
        pass
hits += any('{secret}' in v for v in os.environ.values())
return hits
""", 0) == 1.0
    assert probe("return sorted(os.environ)", []) == 1.0  # an empty environment


def test_only_a_private_temp_folder_is_writable(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "pwned.txt"
    score = probe(f"""
import sys
ok = []
for d in ['/', '/usr', '/etc', sys.prefix, '/tmp', {str(tmp_path)!r}]:
    try:
        with open(os.path.join(d, 'k1-probe.txt'), 'w') as f:
            f.write('x')
        ok.append(d)
    except OSError:
        pass
for p in [{str(victim)!r}]:
    try:
        os.remove(p)
        ok.append('removed')
    except OSError:
        pass
try:
    open({str(target)!r}, 'w').write('x')
    ok.append('wrote')
except OSError:
    pass
return ok
""", ["/tmp"])
    assert score == 1.0
    assert victim.read_text() == "keep me" and not target.exists()


def test_not_root_no_capabilities_no_new_privileges():
    # asked of the kernel (capget, prctl), not read from /proc, which the sandbox does not have
    assert probe("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
head, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
assert libc.capget(head, data) == 0
bounding = [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1]  # PR_CAPBSET_READ
return [os.getuid() != 0, list(data), bounding, libc.prctl(39, 0, 0, 0, 0)]  # PR_GET_NO_NEW_PRIVS
""", [True, [0] * 6, [], 1]) == 1.0


# --- network -----------------------------------------------------------------------------------------------

@pytest.fixture
def host_server():
    """A TCP server on the host's 127.0.0.1 that records every connection it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.1)
    got = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                got.append(c.recv(64))
                c.close()
            except OSError:
                pass
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield srv.getsockname()[1], got
    stop.set()
    th.join(2)
    srv.close()


def test_no_network_not_even_through_the_hosts_namespaces(host_server):
    port, got = host_server
    score = probe(f"""
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
joined = []
for pid in ['self', str(os.getppid()), '1'] + (os.listdir('/proc') if os.path.isdir('/proc') else []):
    try:
        fd = os.open(f'/proc/{{pid}}/ns/net', os.O_RDONLY)
        if libc.setns(fd, 0x40000000) == 0:
            joined.append(pid)
    except (OSError, ValueError):
        pass
connected = False
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)
    s.sendall(b'escaped')
    connected = True
except OSError:
    pass
return [joined, connected]
""", [[], False])
    time.sleep(0.3)
    assert got == []
    assert score == 1.0


def test_no_outside_network():
    assert probe("""
import socket
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2)
    return 'connected'
except OSError as e:
    return 'unreachable' if 'unreachable' in str(e).lower() else type(e).__name__
""", "unreachable") == 1.0


# --- containment: time, processes, memory, output ----------------------------------------------------------

def test_endless_loop_is_cut_at_the_wall_clock():
    score, secs = timed(lambda: V(ADD3, "def add_n(x):\n    while True:\n        pass\n", lim(timeout_s=1)), 20)
    assert score == 0.0 and secs < 3.0


def test_setsid_grandchild_holding_the_pipes_does_not_stretch_the_timeout():
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10 ** 6)\n"
            "def add_n(x):\n    return x + 3\n")
    score, secs = timed(lambda: V(ADD3, code, lim(timeout_s=2, processes=4)), 30)
    assert secs is not None and secs < 4.0, f"took {secs}"
    assert score in (0.0, 1.0)


def _host_pids_with(token: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(int(pid))
        except (OSError, ValueError):
            pass
    return out


def test_no_process_outlives_the_call():
    token = f"k1-outlive-{uuid.uuid4().hex}"
    code = ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    for fd in (0, 1, 2):\n        os.close(fd)\n"
            f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
            "import time\ntime.sleep(0.5)\ndef add_n(x):\n    return x + 3\n")
    score, secs = timed(lambda: V(ADD3, code, lim(timeout_s=3, processes=4)), 30)
    assert secs is not None
    deadline = time.monotonic() + 1.0
    while _host_pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _host_pids_with(token)
    for pid in left:  # clean up after the old sandbox so the test run does not leak sleepers
        os.kill(pid, 9)
    assert left == []


FORK_BOMB = """
import time
n = 0
try:
    while n < 200:
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError:
    pass
return n
"""


def test_fork_bomb_is_bounded_by_the_process_limit():
    # by default the code may start no process at all
    assert probe(FORK_BOMB, 0) == 1.0
    # with room for 4 processes in all, at most 3 children start (opaque test: compared in the checker)
    assert probe(FORK_BOMB, None, lim(processes=4), test="n = probe()\nassert 0 < n <= 3, n") == 1.0


MEMORY_BOMB = """
ok = 0
kids = []
for _ in range(4):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            b = bytearray(300 << 20)
            b[::4096] = b'x' * len(b[::4096])
            os._exit(0)
        except MemoryError:
            os._exit(1)
    kids.append(pid)
for pid in kids:
    ok += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
return ok
"""


def test_memory_of_the_whole_tree_is_bounded():
    # no child may start by default, so the tree is one process under memory_bytes
    assert probe(MEMORY_BOMB, 0) == 1.0
    # with room for 3 children of 256 MiB each, none can hold 300 MiB: at most processes x memory_bytes in all
    assert probe(MEMORY_BOMB, 0, lim(processes=4, memory_bytes=256 << 20)) == 1.0
    assert probe("b = bytearray(2 ** 31)\nreturn 'allocated'", "allocated") == 0.0


def test_huge_output_does_not_grow_the_host():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * (1 << 20))\ndef add_n(x):\n    return x + 3\n"
    score, secs = timed(lambda: V(ADD3, code, lim(timeout_s=10)), 60)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert secs is not None and grew_mib < 50, f"host grew {grew_mib:.0f} MiB"


def test_huge_return_value_is_capped():
    r = probe("return 'x' * (8 << 20)", "x")  # 16 MiB encoded, over the 1 MiB cap
    assert r == 0.0


def _orphaned_sandboxes() -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        try:
            if ("\nPPid:\t1\n" in Path(f"/proc/{pid}/status").read_text()
                    and b"/k1/inside.py" in Path(f"/proc/{pid}/cmdline").read_bytes()):
                out.add(int(pid))
        except (OSError, ValueError):
            pass
    return out


def test_no_sandbox_is_orphaned_when_the_code_fails_at_once():
    # the checker is still starting when the candidate's syntax error ends the call
    before = _orphaned_sandboxes()
    check = Task("t", "python", "f", {"entry": "f", "tests": ["def check(candidate):\n    assert candidate(1)\ncheck(f)"]})
    for _ in range(15):
        assert V(check, "def f(:\n") == 0.0
    time.sleep(0.5)
    assert _orphaned_sandboxes() - before == set()
