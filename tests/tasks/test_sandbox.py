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
import sys
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
import sys
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


# --- round two: memory outside the caps, work on the host, the task's helpers, what is visible -------------

def test_no_writable_memory_outside_the_tmp_cap():
    # 20 MiB of 512 KiB files into each folder a tmpfs could be writable at: only /tmp takes any, up to 16 MiB
    assert probe("""
got = []
for d in ['/dev', '/dev/shm', '/tmp']:
    n = 0
    for i in range(40):
        try:
            with open(f'{d}/k1-{i}', 'wb') as f:
                f.write(b'x' * (512 << 10))
            n += 512 << 10
        except OSError:
            pass
    got.append(n)
return got
""", None, test="got = probe()\nassert got[:2] == [0, 0] and 0 < got[2] <= 16 << 20, got") == 1.0


def test_no_shared_memory_segments_or_memory_files():
    # System V shared memory outlives its process and no rlimit counts it; a memfd is memory outside /tmp;
    # message queues (System V and POSIX) hold kernel memory
    assert probe("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
segments = memfds = 0
for _ in range(4):
    seg = libc.shmget(0, 32 << 20, 0o1600)
    if seg >= 0:
        addr = libc.shmat(seg, None, 0)
        ctypes.memset(addr, 1, 32 << 20)
        libc.shmdt(ctypes.c_void_p(addr))
        segments += 1
    if libc.memfd_create(b'k1', 0) >= 0:
        memfds += 1
queue = libc.msgget(0, 0o1600)
posix_queue = libc.mq_open(b'/k1', os.O_CREAT | os.O_RDWR, 0o600, None)
return [segments, memfds, queue, posix_queue]
""", [0, 0, -1, -1]) == 1.0


def test_kernel_interfaces_no_task_needs_are_refused():
    # bpf, userfaultfd, io_uring, perf events, keyrings, unshare, ptrace: EPERM from the seccomp filter
    import platform

    # bpf, userfaultfd, io_uring_setup, perf_event_open, keyctl, add_key, unshare, ptrace, personality,
    # open_by_handle_at (numbers from the kernel's headers, independent of the filter's table)
    numbers = {"x86_64": [321, 323, 425, 298, 250, 248, 272, 101, 135, 304],
               "aarch64": [280, 282, 425, 241, 219, 217, 97, 117, 92, 265]}.get(platform.machine())
    if numbers is None:
        pytest.skip(f"no seccomp table for {platform.machine()}")
    assert probe(f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
out = []
for nr in {numbers!r}:
    ctypes.set_errno(0)
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    out.append(ctypes.get_errno() if r == -1 else 'ran')
return out
""", [1] * len(numbers)) == 1.0


def test_a_call_in_a_foreign_abi_kills_the_code():
    # x32 numbers share x86-64's architecture value; the filter kills them rather than look them up
    import platform

    from k1.tasks.sandbox import run_tests

    if platform.machine() != "x86_64":
        pytest.skip("x86-64 only")
    code = ("import ctypes\nctypes.CDLL(None).syscall(0x40000000 + 39)\n"  # x32 getpid
            "def add_n(x):\n    return x + 3\n")
    r = run_tests(code, ["assert add_n(0) == 3"])
    assert r["passed"] == 0 and "exited" in r["error"], r


def _forged_answer(shape: str, n: int) -> str:
    """Candidate code that writes its own answer line: a set, or dict keys, of n ints that all hash alike."""
    return f"""
import os, sys
def add_n(x):
    m = (1 << 61) - 1  # hash(k * m + 1) == 1 for every k
    xs = ['["i","%x"]' % (k * m + 1) for k in range(1, {n})]
    body = '["S",[' + ','.join(xs) + ']]' if {shape!r} == 'S' else '["d",[' + ','.join('[%s,["N"]]' % x for x in xs) + ']]'
    os.write(int(sys.argv[4]), ('{{"ok":' + body + '}}\\n').encode())
    os._exit(0)
"""


@pytest.mark.parametrize("shape", ["S", "d", "opaque"])
def test_an_answer_of_colliding_hashes_is_judged_within_the_deadline(shape):
    # decoding such a set on the host took a minute (quadratic): judged on canonical strings it takes well
    # under a second; decoded by an opaque test in the checker, it is cut at the deadline
    from k1.tasks.sandbox import run_tests

    test = {"S": "assert add_n(0) == {1, 2}", "d": "assert add_n(0) == {1: None}",
            "opaque": "assert add_n(0) in ({1, 2}, {1: None})"}[shape]
    code = _forged_answer("d" if shape == "d" else "S", 28_000)
    r, secs = timed(lambda: run_tests(code, [test], lim(timeout_s=3)), 12)
    assert secs is not None and secs < 5, f"took {secs}"
    assert r["passed"] == 0 and r["timeout"] == (shape == "opaque"), r


HUMANEVAL_32 = {  # HumanEval/32, shortened: the test judges the answer with the prompt's own `poly`
    "task_id": "HumanEval/32",
    "prompt": "import math\n\n\ndef poly(xs: list, x: float):\n    \"\"\"Evaluates polynomial with coefficients xs at "
              "point x.\"\"\"\n    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])\n\n\n"
              "def find_zero(xs: list):\n    \"\"\"Returns an x with poly(xs, x) == 0.\"\"\"\n",
    "entry_point": "find_zero",
    "test": "def check(candidate):\n    import math\n    import random\n    rng = random.Random(42)\n    import copy\n"
            "    for _ in range(20):\n        ncoeff = 2 * rng.randint(1, 4)\n        coeffs = []\n"
            "        for _ in range(ncoeff):\n            coeff = rng.randint(-10, 10)\n            if coeff == 0:\n"
            "                coeff = 1\n            coeffs.append(coeff)\n"
            "        solution = candidate(copy.deepcopy(coeffs))\n        assert math.fabs(poly(coeffs, solution)) < 1e-4\n",
}
FIND_ZERO = """def find_zero(xs: list):
    begin, end = -1.0, 1.0
    while poly(xs, begin) * poly(xs, end) > 0:
        begin *= 2.0
        end *= 2.0
    while end - begin > 1e-10:
        center = (begin + end) / 2.0
        if poly(xs, center) * poly(xs, begin) > 0:
            begin = center
        else:
            end = center
    return begin
"""


def test_a_candidate_cannot_redefine_the_helper_that_judges_it():
    from k1.tasks.files import layout

    task = layout(HUMANEVAL_32)(HUMANEVAL_32, 1, "he")
    assert V(task, FIND_ZERO) == 1.0
    assert V(task, "def find_zero(xs: list):\n    return 0.0\n") == 0.0
    assert V(task, "def poly(xs, x):\n    return 0.0\n\ndef find_zero(xs: list):\n    return 0.0\n") == 0.0


def test_a_candidate_cannot_redefine_a_builtin_or_setup_helper_around_its_answer():
    # `round(...)` and the setup's `is_sorted(...)` are looked up where the test runs, never in the candidate
    area = Task("t", "python", "area", {"entry": "area", "tests": ["assert round(area(2), 2) == 12.57"]})
    assert V(area, "import math\ndef area(r):\n    return math.pi * r * r\n") == 1.0
    assert V(area, "def round(x, n=0):\n    return 12.57\ndef area(r):\n    return 0\n") == 0.0
    setup = "def is_sorted(xs):\n    return list(xs) == sorted(xs)"
    srt = Task("t", "python", "sort_it", {"entry": "sort_it", "setup": [setup],
                                          "tests": ["assert is_sorted(sort_it([3, 1, 2])) == True"]})
    assert V(srt, "def sort_it(xs):\n    return sorted(xs)\n") == 1.0
    assert V(srt, "def is_sorted(xs):\n    return True\ndef sort_it(xs):\n    return xs\n") == 0.0


def test_installed_packages_are_not_visible():
    # the interpreter and its standard library only: no site-packages, no .pth file, no pip
    assert probe("""
found = []
for root, dirs, files in os.walk('/'):
    found += [root] if os.path.basename(root) in ('site-packages', 'dist-packages') and (dirs or files) else []
    found += [f for f in files if f.endswith('.pth')]
    dirs[:] = [d for d in dirs if d not in ('proc', 'dev')]
try:
    import pip
    found.append('pip')
except ImportError:
    pass
return found
""", []) == 1.0


def _strings_inside() -> str:
    """Probe body: every place a host path or variable could show (the interpreter's own paths, the working
    folder, the environment, and /proc where it exists), joined into one string."""
    return """
seen = [sys.executable, sys.prefix, sys.exec_prefix, os.getcwd(), *sys.path, *os.environ.values()]
for name in (os.listdir('/proc') if os.path.isdir('/proc') else []):
    for f in ('environ', 'cmdline', 'mountinfo', 'cwd'):
        try:
            p = f'/proc/{name}/{f}'
            seen.append(os.readlink(p) if f == 'cwd' else open(p, 'rb').read().decode(errors='replace'))
        except OSError:
            pass
return '\\n'.join(seen)
"""


def test_the_hosts_install_path_is_not_in_paths_environment_or_mounts():
    # (it is still compiled into the installation's own files: RUNPATH, .pyc; see docs/loop.md)
    host = str(Path(sys.base_prefix).resolve())
    if host == "/usr" or host.startswith("/usr/"):
        pytest.skip("the interpreter is the system's: its paths are the same on every machine")
    assert probe(_strings_inside(), None, test=f"assert {host!r} not in probe()") == 1.0


def test_the_hosts_working_folder_and_environment_are_not_visible(tmp_path, monkeypatch):
    here = tmp_path / f"k1-cwd-{uuid.uuid4().hex}"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("K1_TEST_SECRET", uuid.uuid4().hex)
    assert probe(_strings_inside(), None, test=f"s = probe()\nassert {here.name!r} not in s and "
                 f"{os.environ['K1_TEST_SECRET']!r} not in s and s.count('/tmp') == 1") == 1.0
