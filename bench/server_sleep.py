"""The server's sleep on real models: one `k1 pool serve --dream auto` with a teacher and a student, fed verified
arithmetic until DREAM is due; requests keep coming while the cycle runs in its own process. Measures the request
latency before, during and after the cycle (medians, side by side in one run), the cycle's length and outcome,
and whether the server took up the new student without a restart.

    python bench/server_sleep.py                       # SmolLM2-135M-Instruct → its 6-layer student (k1.pool.default)
    python bench/server_sleep.py --teacher DIR --student DIR   # any two Hugging Face folders

Prints the result as one JSON object on the last line; the server's log and DREAM's are under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from k1.pool.testing import free_port, serving_within

CACHE = Path("~/.cache/k1/pool").expanduser()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=CACHE / "smollm2-135m-instruct")
    ap.add_argument("--student", type=Path, default=CACHE / "smollm2-student-6l")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/server_sleep"))
    ap.add_argument("--after", type=int, default=8, help="verified experiences that make DREAM due")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    a = ap.parse_args()
    for p in (a.teacher, a.student):
        if not p.is_dir():
            sys.exit(f"server_sleep: {p} is not a model folder (the default pool builds SmolLM2's: k1 pool status)")
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    out = a.out.resolve()
    (out / "pool.toml").write_text(f'''[pool]
store = "{out}/pool.sqlite"
budget_atp = 20000.0
selection = "greedy"
self_verify = false

[pool.dream]
mode = "auto"
after = {a.after}
every_s = 3600
check_s = 1
args = ["--k", "16", "--epochs", "1", "--max-tokens", "{a.max_tokens}", "--student", "student"]

[[members]]
name = "teacher"
kind = "hf"
path = "{a.teacher.resolve()}"
roles = ["teacher"]

[[members]]
name = "student"
kind = "hf"
path = "{a.student.resolve()}"
roles = ["student"]
''')
    port, deadline = free_port(), time.time() + a.timeout
    url = f"http://127.0.0.1:{port}/v1"
    with open(out / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(out / "pool.toml"),
                                 "--port", str(port)], stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        if not serving_within(url, proc, 300):
            sys.exit("server_sleep: the server did not start; see " + str(out / "serve.log"))

        def ask(i: int, feedback: bool) -> float:
            x, y = 10 + i, 7 + 2 * i
            t = time.perf_counter()
            r = httpx.post(f"{url}/chat/completions", timeout=300, json={
                "model": "teacher", "max_tokens": a.max_tokens,
                "messages": [{"role": "user", "content": f"What is {x} + {y}?"}]}).json()
            dt = time.perf_counter() - t
            if feedback:  # the sum in the answer or not: an outcome either way, so the experience is verified
                ok = str(x + y) in r["choices"][0]["message"]["content"]
                httpx.post(f"{url}/feedback", json={"request": r["k1"]["request"], "success": float(ok)}, timeout=60)
            return dt

        def dream() -> dict:
            if time.time() > deadline:
                sys.exit(f"server_sleep: no cycle ended within {a.timeout:g} s; see {out}")
            return httpx.get(f"{url}/pool", timeout=60).json()["dream"]

        before = [ask(i, False) for i in range(4)]
        for i in range(a.after):
            ask(10 + i, True)
        while (dream()["last"] or {}).get("outcome") != "running":
            time.sleep(0.5)
        during, i = [], 100
        while dream()["last"]["outcome"] == "running":
            d = ask(i, False)
            if dream()["last"]["outcome"] == "running":  # it ended while the request ran: not counted
                during.append(d)
            i += 1
        last = dream()["last"]
        time.sleep(3)
        held = dream()["students_held"]
        after = [ask(200 + i, False) for i in range(4)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    med = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
    print(json.dumps({"cycle_s": last["seconds"], "outcome": last["outcome"], "new_versions": last["new_versions"],
                      "dream_report": last.get("report"), "students_held_after": held,
                      "request_s_median": {"before": med(before), "during": med(during), "after": med(after)},
                      "requests_during": len(during), "teacher": str(a.teacher), "student": str(a.student),
                      "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
                      "command": " ".join(sys.argv)}))


if __name__ == "__main__":
    main()
