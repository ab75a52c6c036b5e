"""The live stream: does the pool get better and cheaper from its own use, scored window by window?

A real `k1 pool serve` (a subprocess, an API key, 127.0.0.1) gets `--requests` chat requests over five task
classes (arithmetic: two-digit sums and differences; code: the loop's Python tasks outside the calibration
templates; facts and prose: the route bench's lists; copy: random strings), in a fixed shuffled order, with the
class stated in `metadata.context` (the caller knows what it asks). Every answer is judged by the class's
strict verifier and the verdict goes back through `POST /v1/feedback`, so trust moves as it would for a user
who reports outcomes.

Each window of `--window` requests is scored on its prompts that no student was trained on before the window
(`trained` below; the stream never asks the same arithmetic or copy problem twice), for:
- the pool (`model="auto"`, feedback on);
- always-strongest: the same prompts pinned to `--strongest` (no feedback, so trust is not touched);
- the oracle: every member pinned on the same prompts; the cheapest member that succeeds (with `--oracle`).
- the same pool without DREAM (with `--twin`): a second `k1 pool serve` on a copy of the store taken before the
  stream, asked the same requests with the same feedback, where DREAM never runs.

With `--dream-class CLASS`, DREAM runs inside the stream: every `--dream-every` requests (when none is running)
the bench starts `k1 pool dream --student-kind ... --task-class CLASS --json` (options from `--dream-args`) in a
separate process on the serving pool's store while the server keeps answering; the server takes up the student
it publishes without a restart (it polls the store's version rows). A prompt a finished DREAM trained on is not
scored in any later window. `--lora-student` serves the default pool plus `smollm2-lora` (a copy of SmolLM2 with
the role "student", which DREAM trains as a LoRA student) on a copy of the default store.

    python bench/lifelong.py --quick                    # 200 requests, windows of 100, the default pool
    python bench/lifelong.py --requests 1000 --oracle   # the full stream
    python bench/lifelong.py --pool FILE --quick        # any pool file (the tests use tiny members)
    python bench/lifelong.py --lora-student --dream-class copy --quick --twin   # DREAM inside the stream

Writes lifelong.json and lifelong.png under --out; prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

CLASSES = ("arithmetic", "code", "facts", "prose", "copy")
MAX_TOKENS = {"arithmetic": 16, "code": 64, "facts": 16, "prose": 4, "copy": 16}
KEY = "lifelong-bench"


def _route():
    import importlib.util

    spec = importlib.util.spec_from_file_location("route", Path(__file__).with_name("route.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stream(n: int, seed: int = 0) -> list[dict]:
    """n requests, classes in turn then shuffled; arithmetic and copy problems never repeat, code, facts and prose
    cycle through their lists (marked `repeat` after the first pass). Nothing the calibration set reserves."""
    from k1.pool.learn.calibrate import reserved_problems
    from k1.pool.learn.students.families import copy_tasks
    from k1.tasks.split import problem_key
    from k1.tasks.task import arithmetic_tasks, python_tasks

    rng = random.Random(f"lifelong-{seed}")
    route = _route()
    reserved = reserved_problems()
    arith = [t for t in arithmetic_tasks("d3")]
    rng.shuffle(arith)
    seen, uniq = set(), []
    for t in arith:  # one problem once: a + b and b + a count as one
        if problem_key(t) not in seen:
            seen.add(problem_key(t))
            uniq.append(t)
    code = [t for t in python_tasks() if problem_key(t) not in reserved]
    copies = copy_tasks(n, seed=seed + 1000)
    per = -(-n // len(CLASSES))
    items = []
    for i in range(per):
        items.append({"cls": "arithmetic", "prompt": uniq[i].prompt, "task": uniq[i], "repeat": False})
        c = code[i % len(code)]
        items.append({"cls": "code", "prompt": c.prompt, "task": c, "repeat": i >= len(code)})
        q, ok = route.FACTS[i % len(route.FACTS)]
        items.append({"cls": "facts", "prompt": q, "words": ok, "repeat": i >= len(route.FACTS)})
        p, w = route.PROSE[i % len(route.PROSE)]
        items.append({"cls": "prose", "prompt": p, "word": w, "repeat": i >= len(route.PROSE)})
        items.append({"cls": "copy", "prompt": copies[i].prompt, "task": copies[i], "repeat": False})
    items = items[:n]
    rng.shuffle(items)
    return items


def judge(item: dict, answer: str) -> bool:
    """The class's strict verifier."""
    from k1.pool.learn.students.families import judge as strict

    if item["cls"] in ("arithmetic", "code", "copy"):
        return strict(item["task"], answer)
    if item["cls"] == "facts":
        return any(re.search(rf"\b{re.escape(w)}\b", answer.lower()) for w in item["words"])
    m = re.match(r"\W*([A-Za-z]+)", answer)
    return m is not None and m.group(1).lower() == item["word"]


class Server:
    """`k1 pool serve` in a subprocess on a free port, with an API key (and optionally another store)."""

    def __init__(self, pool_file: Path, log: Path, store: Path | None = None):
        from k1.pool.testing import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "K1_POOL_API_KEY": KEY}
        if store is not None:
            env["K1_POOL_STORE"] = str(store)
        cmd = [sys.executable, "-m", "k1", "pool", "serve", "--port", str(self.port)]
        if pool_file is not None:
            cmd += ["--pool", str(pool_file)]
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop(); the server outlives this call)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, limit_s: float = 900) -> None:
        import httpx

        t0 = time.time()
        while time.time() - t0 < limit_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"k1 pool serve exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/models", headers=auth(), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"k1 pool serve did not answer within {limit_s:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def auth() -> dict:
    return {"Authorization": f"Bearer {KEY}"}


def ask(client, url: str, item: dict, model: str, session: str) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": item["prompt"]}], "temperature": 0,
            "max_tokens": MAX_TOKENS[item["cls"]], "user": session, "metadata": {"context": item["cls"]}}
    r = client.post(f"{url}/chat/completions", json=body, headers=auth(), timeout=600)
    if r.status_code != 200:
        raise SystemExit(f"the server answered {r.status_code}: {r.text[:300]}")
    b = r.json()
    return {"text": b["choices"][0]["message"]["content"] or "", "member": b["model"], "atp": b["k1"]["cost"]["atp"],
            "request": b["k1"]["request"]}


def feedback(client, url: str, answer: dict) -> None:
    r = client.post(f"{url}/feedback", headers=auth(),
                    json={"request": answer["request"], "success": float(answer["ok"]), "source": "verifier"})
    if r.status_code != 200:
        raise SystemExit(f"/v1/feedback answered {r.status_code}: {r.text[:300]}")


def window_rows(records: list[dict], window: int) -> list[dict]:
    """Per window: success and ATP per request of each row, on the window's prompts no finished DREAM had
    trained on when they were asked."""
    out = []
    for w in range(0, len(records), window):
        recs = [r for r in records[w:w + window] if not r["trained"]]
        row = {"window": w // window + 1, "scored": len(recs)}
        for who in ("pool", "twin", "strongest", "oracle"):
            got = [r[who] for r in recs if who in r]
            if got:
                row[who] = {"success": sum(g["ok"] for g in got) / len(got),
                            "atp": sum(g["atp"] for g in got) / len(got)}
        row["members"] = {}
        for r in recs:
            row["members"][r["pool"]["member"]] = row["members"].get(r["pool"]["member"], 0) + 1
        out.append(row)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for who, style in (("pool", "o-"), ("twin", "d-."), ("strongest", "s--"), ("oracle", "^:")):
        xs = [r["window"] for r in rows if who in r]
        if xs:
            a.plot(xs, [r[who]["success"] for r in rows if who in r], style, label=who)
            b.plot(xs, [r[who]["atp"] for r in rows if who in r], style, label=who)
    a.set(xlabel="window", ylabel="success", ylim=(0, 1), title="success per window")
    b.set(xlabel="window", ylabel="ATP per request", title="cost per window")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lora_student_pool(out: Path) -> Path:
    """The default pool plus `smollm2-lora` (SmolLM2's weights, role "student": DREAM's LoRA student), on a copy
    of the default store (the shared one is not touched); → the pool file."""
    from k1.pool.config import read_pool_config
    from k1.pool.default import default_pool_file

    base = default_pool_file(quiet=True)
    cfg = read_pool_config(base)
    teacher = next(m for m in cfg.members if m.name == "smollm2")
    store = out / "pool.sqlite"
    copy_store(Path(cfg.pool.store), store)
    text = re.sub(r'(?m)^store = ".*"$', f'store = "{store}"', base.read_text())
    text += (f'\n[[members]]\nname = "smollm2-lora"\nkind = "hf"\npath = "{teacher.path}"\n'
             'roles = ["student"]\n')
    path = out / "pool.toml"
    path.write_text(text)
    return path


def copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite store (the backup API, not a file copy that could catch a write)."""
    import sqlite3

    dst.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    with b:
        a.backup(b)
    a.close()
    b.close()


class Dream:
    """One `k1 pool dream` at a time in a separate process on the serving pool's store."""

    def __init__(self, pool_file: Path | None, task_class: str, extra: list[str], out: Path):
        self.pool_file, self.task_class, self.extra, self.out = pool_file, task_class, extra, out
        self.proc, self.cycles = None, []

    def start(self, at: int) -> None:
        n = len(self.cycles) + 1
        cmd = [sys.executable, "-m", "k1", "pool", "dream", "--task-class", self.task_class, "--json", *self.extra]
        if self.pool_file is not None:
            cmd += ["--pool", str(self.pool_file)]
        self.log = self.out / f"dream-{n}.log"
        self.stdout = open(self.out / f"dream-{n}.json", "w")  # noqa: SIM115 (closed in poll)
        self.proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=self.stdout,
                                     stderr=open(self.log, "w"))  # noqa: SIM115
        self.cycles.append({"cycle": n, "started_at": at, "t0": time.time()})

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self, at: int, wait: bool = False) -> dict | None:
        """The cycle that just finished (its report), else None."""
        if self.proc is None or (self.proc.poll() is None and not wait):
            return None
        self.proc.wait()
        self.stdout.close()
        c = self.cycles[-1]
        c.update(finished_at=at, seconds=time.time() - c.pop("t0"), returncode=self.proc.returncode)
        self.proc = None
        lines = (self.out / f"dream-{c['cycle']}.json").read_text().strip().splitlines()
        if c["returncode"] == 0 and lines:
            rep = json.loads(lines[-1])
            c["trained_on"] = rep.get("trained_on", [])
            c["report"] = {k: rep.get(k) for k in ("teacher", "student", "method", "train", "from_store", "practice",
                                                  "trust_prompts", "replay_prompts", "before", "after",
                                                  "calibrated_on", "class_before", "class_after",
                                                  "replay_atp_change", "seconds")}
        else:
            err = self.log.read_text().strip().splitlines()
            c["error"] = err[-1] if err else f"exit {c['returncode']}"
        return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, default=None, help="pool file (default: the built-in default pool)")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="200 requests")
    ap.add_argument("--strongest", default=None, help="the always-strongest member (default: smollm2, or the first)")
    ap.add_argument("--oracle", action="store_true", help="also pin every member on every prompt (the oracle)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--twin", action="store_true", help="also serve the same pool without DREAM (a store copy)")
    ap.add_argument("--dream-class", default=None, help="run DREAM inside the stream on this task class")
    ap.add_argument("--dream-every", type=int, default=None, help="requests between DREAM starts (default: --window)")
    ap.add_argument("--dream-args", default="--student-kind lora --student smollm2-lora --teacher smollm2 "
                    "--practice 60 --shots 3 --max-tokens 16 --epochs 2 --lr 2e-4 --teacher-system "
                    "'Reply with only the text to repeat, exactly, nothing else.'",
                    help="options for `k1 pool dream` (shell words)")
    ap.add_argument("--lora-student", action="store_true",
                    help="the default pool plus smollm2-lora (DREAM's LoRA student) on a copy of its store")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/lifelong"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 200)
    import shlex

    import httpx
    from rich.progress import Progress

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.lora_student:
        args.pool = lora_student_pool(args.out)
    items = stream(args.requests, args.seed)
    twin = None
    if args.twin:
        from k1.pool.config import read_pool_config
        from k1.pool.default import default_pool_file

        copy_store(Path(read_pool_config(args.pool or default_pool_file(quiet=True)).pool.store),
                   args.out / "twin.sqlite")
        twin = Server(args.pool, args.out / "twin-serve.log", store=args.out / "twin.sqlite")
    server = Server(args.pool, args.out / "serve.log")
    dream = Dream(args.pool, args.dream_class, shlex.split(args.dream_args), args.out) if args.dream_class else None
    every = args.dream_every or args.window
    trained: set[str] = set()  # prompts a finished DREAM trained on
    records: list[dict] = []
    try:
        server.wait()
        if twin is not None:
            twin.wait()
        with httpx.Client() as client:
            names = [m["id"] for m in client.get(f"{server.url}/models", headers=auth()).json()["data"]
                     if m["id"] != "auto"]
            strongest = args.strongest or ("smollm2" if "smollm2" in names else names[0])
            with Progress(disable=args.quiet) as bar:
                job = bar.add_task("stream", total=len(items))
                dream_job = None
                for i, it in enumerate(items):
                    if dream is not None:
                        done = dream.poll(i)
                        if done is not None:
                            trained |= set(done.get("trained_on", []))
                            bar.update(dream_job, total=1, completed=1,
                                       description=f"DREAM {done['cycle']}: " + ("done" if "report" in done else "failed"))
                        if i and i % every == 0 and not dream.running:
                            dream.start(i)
                            dream_job = bar.add_task(f"DREAM {len(dream.cycles)} on {args.dream_class}", total=None)
                    rec: dict = {"i": i, "cls": it["cls"], "prompt": it["prompt"], "repeat": it["repeat"],
                                 "trained": it["prompt"] in trained}
                    a = ask(client, server.url, it, "auto", f"lifelong-{it['cls']}")
                    a["ok"] = judge(it, a["text"])
                    feedback(client, server.url, a)
                    rec["pool"] = a
                    if twin is not None:
                        b = ask(client, twin.url, it, "auto", f"lifelong-{it['cls']}")
                        b["ok"] = judge(it, b["text"])
                        feedback(client, twin.url, b)
                        rec["twin"] = b
                    pinned = {}
                    for m in (names if args.oracle else [strongest]):
                        p = a if m == a["member"] else ask(client, server.url, it, m, "lifelong-baseline")
                        pinned[m] = {"ok": p.get("ok", judge(it, p["text"])), "atp": p["atp"], "member": m}
                    rec["strongest"] = pinned[strongest]
                    if args.oracle:
                        good = [p for p in pinned.values() if p["ok"]]
                        rec["oracle"] = min(good or pinned.values(), key=lambda p: p["atp"]) if good else \
                            {"ok": False, "atp": min(p["atp"] for p in pinned.values()), "member": None}
                    records.append(rec)
                    bar.advance(job)
                if dream is not None and dream.running:  # the last cycle ends before the servers stop
                    dream.poll(len(items), wait=True)
                    bar.update(dream_job, total=1, completed=1)
    finally:
        if dream is not None and dream.running:
            dream.proc.terminate()
        server.stop()
        if twin is not None:
            twin.stop()
    rows = window_rows(records, args.window)
    print(f"{'window':>6s}{'scored':>8s}{'pool':>16s}{'without DREAM':>16s}{'always-' + strongest:>24s}"
          f"{'oracle':>16s}   pool's members")
    def cell(r: dict, who: str) -> str:
        return f"{r[who]['success']:6.1%} {r[who]['atp']:8.2f}" if who in r else f"{'—':>15s}"

    for r in rows:
        print(f"{r['window']:6d}{r['scored']:8d} {cell(r, 'pool'):>15s} {cell(r, 'twin'):>15s} "
              f"{cell(r, 'strongest'):>23s} {cell(r, 'oracle'):>15s}   {r['members']}")
    cycles = dream.cycles if dream is not None else []
    for c in cycles:
        rep = c.get("report") or {}
        after = (rep.get("class_after") or {}).get("success")
        print(f"DREAM {c['cycle']}: requests {c['started_at']} → {c.get('finished_at')}, {c.get('seconds', 0):.0f} s, "
              + (f"{rep['train']} verified examples, {rep['student']} on {rep['calibrated_on']}: "
                 f"{(rep.get('class_before') or {}).get('success', 0):.0%} → {after:.0%}" if rep else
                 f"failed: {c.get('error')}"))
    plot(rows, args.out / "lifelong.png")
    result = {"command": " ".join(["python"] + sys.argv), "requests": len(records), "window": args.window,
              "classes": list(CLASSES), "seed": args.seed, "strongest": strongest, "members": names,
              "windows": rows,
              "dream": [{k: v for k, v in c.items() if k != "trained_on"} for c in cycles] if dream is not None
              else "not run (no --dream-class)",
              "pool_without_dream": "the twin row of each window" if twin is not None else
              ("equal to the pool row (no DREAM ran)" if dream is None else "not measured (use --twin)"),
              "scored_out_as_trained": sum(r["trained"] for r in records),
              "repeats": sum(r["repeat"] for r in records), "seconds": time.time() - t0,
              "plot": str(args.out / "lifelong.png")}
    (args.out / "lifelong.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
