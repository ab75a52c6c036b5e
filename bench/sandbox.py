"""Per-call latency of the loop's Python verifier: the old sandbox (`unshare -n` + a printed result marker)
against the current one (bubblewrap, values judged outside); one JSON line last.

    python bench/sandbox.py            # 30 calls per kind and sandbox, interleaved
    python bench/sandbox.py --quick    # 8 calls each
    python bench/sandbox.py --quick --parent-mib 1024   # the caller holds 1 GiB, as the loop does (a model)
    python bench/sandbox.py --compare-verifiers runs/python-answers.json   # same answers, both verdicts
    python bench/sandbox.py --against ../other-checkout/src   # this sandbox against another version's
    python bench/sandbox.py --collisions 28000   # time to judge an answer of 28,000 ints that hash alike

Two kinds of call: a built-in task (three `assert f(x) == v` lines, decided outside the sandbox) and a
HumanEval-like `check(candidate)` (opaque test code: a second sandbox, the checker, runs it). Old and new
calls alternate, so a loaded machine slows both alike; the ratio is the figure to compare across machines.
The old sandbox is reproduced below as it was (needs root or user namespaces for `unshare -n`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k1.tasks.sandbox import Limits, run_tests

CODE = "def add_n(x):\n    return x + 3\n"
ASSERTS = ["assert add_n(0) == 3", "assert add_n(5) == 8", "assert add_n(-3) == 0"]
CHECK = ["def check(candidate):\n    assert candidate(0) == 3\n    assert candidate(5) == 8\ncheck(add_n)\n"]

_OLD_HARNESS = r"""
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


def old_run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> dict:
    """The sandbox as it was before bubblewrap (commit d870dea), for the baseline only."""
    import resource

    def apply():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryDirectory(prefix="k1-sandbox-") as tmp:
        d = Path(tmp)
        (d / "solution.py").write_text(code)
        (d / "tests.json").write_text(json.dumps(tests))
        (d / "harness.py").write_text(_OLD_HARNESS)
        cmd = [shutil.which("unshare"), "-n", "--", sys.executable, "-I", "-S", "harness.py"]
        p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}, preexec_fn=apply)
        try:
            out, _ = p.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return {"passed": 0, "total": len(tests)}
    m = out.rfind("@@RESULT@@")
    return json.loads(out[m + len("@@RESULT@@"):].strip()) if m >= 0 else {"passed": 0, "total": len(tests)}


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(1000 * statistics.median(xs), 1), "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 1),
            "min_ms": round(1000 * xs[0], 1), "n": len(xs)}


def compare_verifiers(answers: Path, n: int = 20) -> dict:
    """SmolLM2's greedy answers to the seeded python sample of `k1 loop eval --n N` (seed 0), saved to
    `answers` on the first run, scored by the old and the new sandbox: the same answers, both verdicts."""
    from k1.tasks.task import python_tasks, split_tasks
    from k1.tasks.verifiers import extract_code

    sample, _ = split_tasks(python_tasks(), n, 0, 0)
    if not answers.exists():
        from k1.selflearn import members
        from k1.selflearn.improve import ask

        m = members.load("smollm2")
        answers.write_text(json.dumps([{"id": t.id, "text": ask(m, t).text} for t in sample]))
    texts = {r["id"]: r["text"] for r in json.loads(answers.read_text())}
    old, new = [], []
    for t in sample:
        code = extract_code(texts[t.id])
        for out, fn in ((old, old_run_tests), (new, run_tests)):
            r = fn(code, t.check["tests"])
            out.append(r["passed"] / max(r["total"], 1))
    return {"bench": "sandbox-verdicts", "n": n, "old_solved": sum(x == 1 for x in old),
            "new_solved": sum(x == 1 for x in new), "old_mean": round(sum(old) / n, 4),
            "new_mean": round(sum(new) / n, 4), "answers_scored_differently": sum(a != b for a, b in zip(old, new))}


_WORKER = r"""
import resource, sys, time
from k1.tasks.sandbox import run_tests
CODE, ASSERTS, CHECK = eval(sys.argv[1])
run_tests(CODE, ASSERTS)
for line in sys.stdin:
    before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.perf_counter()
    r = run_tests(CODE, ASSERTS if line.strip() == "asserts" else CHECK)
    wall = time.perf_counter() - t0
    assert r["passed"] == r["total"], r
    after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime for a, b in zip(before, after))
    print(wall, cpu, flush=True)
"""


def against(other_src: Path, n: int) -> dict:
    """This checkout's sandbox and the one in `other_src` (another checkout's src/), side by side: a worker
    process each, calls alternating, so both see the same load. CPU time counts the host process and every
    process of the sandbox (they are all waited for), so it is less sensitive to load than wall time."""
    here = Path(__file__).resolve().parents[1] / "src"
    workers = {}
    for name, src in (("this", here), ("other", other_src.resolve())):
        env = {**os.environ, "PYTHONPATH": str(src)}
        workers[name] = subprocess.Popen([sys.executable, "-c", _WORKER, repr((CODE, ASSERTS, CHECK))], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    got = {}
    for _ in range(n):
        for kind in ("asserts", "check"):
            for name, w in workers.items():
                w.stdin.write(kind + "\n")
                w.stdin.flush()
                wall, cpu = map(float, w.stdout.readline().split())
                got.setdefault(f"{name}_{kind}_wall", []).append(wall)
                got.setdefault(f"{name}_{kind}_cpu", []).append(cpu)
    for w in workers.values():
        w.stdin.close()
        w.wait()
    out = {"bench": "sandbox-against", "other": str(other_src), "calls": n, "cpus": os.cpu_count()}
    out.update({k + "_ms": round(1000 * statistics.median(v), 1) for k, v in got.items()})
    out["load_1min"] = round(os.getloadavg()[0], 2)
    return out


def collisions(n: int) -> dict:
    """Seconds one call takes when the candidate writes its own answer line: a set, or dict keys, of n ints
    that all hash alike (k * (2**61 - 1) + 1), about 27 bytes each. Building that set is quadratic; a
    sandbox that judges without building it takes no longer than any other call."""
    out = {"bench": "sandbox-collisions", "n": n}
    for shape in ("set", "dict"):
        xs = "['[\"i\",\"%x\"]' % (k * ((1 << 61) - 1) + 1) for k in range(1, " + str(n) + ")]"
        body = ("'[\"S\",[' + ','.join(xs) + ']]'" if shape == "set" else
                "'[\"d\",[' + ','.join('[%s,[\"N\"]]' % x for x in xs) + ']]'")
        code = ("import os, sys\ndef add_n(x):\n    xs = " + xs + "\n    body = " + body +
                "\n    os.write(int(sys.argv[4]), ('{\"ok\":' + body + '}\\n').encode())\n    os._exit(0)\n")
        t0 = time.perf_counter()
        r = run_tests(code, ["assert add_n(0) == {1, 2}"], Limits(timeout_s=3))
        out[f"{shape}_s"] = round(time.perf_counter() - t0, 2)
        out[f"{shape}_verdict"] = {"passed": r["passed"], "timeout": r["timeout"]}
    out["deadline_s"] = 3
    out["load_1min"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="8 calls per kind and sandbox")
    ap.add_argument("--parent-mib", type=int, default=0,
                    help="hold this much touched memory in the calling process first (the loop's parent holds a model)")
    ap.add_argument("--compare-verifiers", type=Path, metavar="ANSWERS.json",
                    help="instead: score SmolLM2's saved greedy python answers with both sandboxes")
    ap.add_argument("--against", type=Path, metavar="SRC",
                    help="instead: this sandbox side by side with the one in another checkout's src/")
    ap.add_argument("--collisions", type=int, metavar="N",
                    help="instead: time to judge an answer of N ints that all hash alike (as a set, as dict keys)")
    args = ap.parse_args()
    if args.collisions:
        print(json.dumps(collisions(args.collisions)))
        return
    if args.against:
        print(json.dumps(against(args.against, 8 if args.quick else args.calls)))
        return
    if args.compare_verifiers:
        print(json.dumps(compare_verifiers(args.compare_verifiers)))
        return
    ballast = bytearray(args.parent_mib << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    n = 8 if args.quick else args.calls
    old_ok = shutil.which("unshare") is not None and subprocess.run(["unshare", "-n", "true"],
                                                                      capture_output=True).returncode == 0
    run_tests(CODE, ASSERTS)  # warm: the availability probe and the page cache
    times = {"old_asserts": [], "new_asserts": [], "new_check": [], "old_check": []}
    for _ in range(n):
        for name, fn, tests in (("new_asserts", run_tests, ASSERTS), ("old_asserts", old_run_tests, ASSERTS),
                                ("new_check", run_tests, CHECK), ("old_check", old_run_tests, CHECK)):
            if name.startswith("old") and not old_ok:
                continue
            t0 = time.perf_counter()
            r = fn(CODE, tests)
            times[name].append(time.perf_counter() - t0)
            assert r["passed"] == r["total"], (name, r)
    result = {"bench": "sandbox", "calls": n, "parent_mib": args.parent_mib, "cpus": os.cpu_count(),
              "load_1min": round(os.getloadavg()[0], 2)}
    for name, xs in times.items():
        if xs:
            result[name] = stats(xs)
    for kind in ("asserts", "check"):
        if times[f"old_{kind}"]:
            result[f"ratio_{kind}"] = round(statistics.median(times[f"new_{kind}"]) /
                                            statistics.median(times[f"old_{kind}"]), 2)
    result["goal_ms"] = 150
    print(json.dumps(result))


if __name__ == "__main__":
    main()
