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
- always-strongest: the same prompts pinned to `--strongest`;
- the oracle: every member pinned on the same prompts; the cheapest member that succeeds (with `--oracle`).
  Pinned calls come from a probe tenant (`probe = true` in the server's keys file): answered and charged, and the
  pool learns nothing from them (no experience, trust, self-verification or metabolic outcome), so the baselines
  never teach the pool they are measured against.
- the same pool without DREAM (with `--twin`): a second `k1 pool serve` on a copy of the store taken before the
  stream, asked the same requests with the same feedback, where DREAM never runs.

With `--dream-class CLASS`, DREAM runs inside the stream, started by the server itself (`k1 pool serve --dream
auto`, a `[pool.dream]` table added to the pool file): when `--dream-after` new verified experiences came in
(and not in CRISIS, at most every `--dream-every-s`), it runs `k1 pool dream --task-class CLASS --json` (options
from `--dream-args`) in a separate process on its store while it keeps answering, and takes up the student
DREAM publishes without a restart. The bench follows the cycles through `GET /v1/pool`; a prompt a finished
DREAM trained on is not scored in any later window. `--lora-student` serves the default pool plus `smollm2-lora` (a copy of SmolLM2 with
the role "student", which DREAM trains as a LoRA student) on a copy of the default store; `--tree-student` adds
`k1-copy` instead (an untrained K-1 tree of bench/students.py's copy recipe, which DREAM trains by the engine's
sparse attributed update, and which ends its answers at the line end).

    python bench/lifelong.py --quick                    # 200 requests, windows of 100, the default pool
    python bench/lifelong.py --requests 1000 --oracle   # the full stream
    python bench/lifelong.py --pool FILE --quick        # any pool file (the tests use tiny members)
    python bench/lifelong.py --lora-student --dream-class copy --crisis-off --quick --twin   # DREAM inside
    python bench/lifelong.py --tree-student --members smollm2,k1-copy --dream-class copy --quick --twin

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLASSES = ("arithmetic", "code", "facts", "prose", "copy")
MAX_TOKENS = {"arithmetic": 16, "code": 64, "facts": 16, "prose": 4, "copy": 16}
KEY = "lifelong-bench-0123456789"  # the stream's tenant (admin: it reads DREAM's cycles from /v1/pool)
PROBE_KEY = "lifelong-probe-0123456789"  # the baselines' tenant: answered and charged, the pool learns nothing
KEYS = f"""[[tenant]]
name = "stream"
key = "{KEY}"
admin = true
concurrency = 8

[[tenant]]
name = "baselines"
key = "{PROBE_KEY}"
probe = true
trusted = true  # may name the stream's classes (copy is not in the pool's fixed set)
concurrency = 8
"""


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

    def __init__(self, pool_file: Path, log: Path, store: Path | None = None, dream: str | None = None):
        from k1.pool.testing import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {k: v for k, v in os.environ.items() if k != "K1_POOL_API_KEY"} | {"OMP_NUM_THREADS": "1"}
        if store is not None:
            env["K1_POOL_STORE"] = str(store)
        keys = Path(log).with_name(Path(log).stem + "-keys.toml")
        keys.write_text(KEYS)
        keys.chmod(0o600)
        cmd = [sys.executable, "-m", "k1", "pool", "serve", "--port", str(self.port), "--keys-file", str(keys)]
        if pool_file is not None:
            cmd += ["--pool", str(pool_file)]
        if dream is not None:
            cmd += ["--dream", dream]
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


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def ask(client, url: str, item: dict, model: str, session: str, key: str = KEY) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": item["prompt"]}], "temperature": 0,
            "max_tokens": MAX_TOKENS[item["cls"]], "user": session, "metadata": {"context": item["cls"]}}
    r = client.post(f"{url}/chat/completions", json=body, headers=auth(key), timeout=600)
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


LORA_DREAM_ARGS = ("--student-kind lora --student smollm2-lora --teacher smollm2 --practice 60 --shots 3 "
                   "--max-tokens 16 --epochs 2 --lr 2e-4 --holdout 0.5 --teacher-system "
                   "'Reply with only the text to repeat, exactly, nothing else.'")
TREE_RECIPE = ["model.width=48", "model.mlp_width=96", "model.n_heads=4", "optim.lr=1e-2", "model.context=128"]
TREE_DREAM_ARGS = ("--student-kind k1 --student k1-copy --teacher smollm2 --practice 300 --shots 3 --steps 3000 "
                   "--max-tokens 16 --holdout 0.5 --teacher-system "
                   "'Reply with only the text to repeat, exactly, nothing else.'")


def fresh_tree(out: Path) -> Path:
    """An untrained K-1 tree of the copy student's recipe (bench/students.py's `--k1-preset tiny --k1-set …`:
    151,591 parameters, 7 agents), as a run directory DREAM trains further: `k1 train` for one step."""
    run = out / "k1-copy-init"
    if not (run / "summary.json").is_file():  # written when the run ends
        sets = [w for kv in TREE_RECIPE for w in ("--set", kv)]
        subprocess.run([sys.executable, "-m", "k1", "train", "--preset", "tiny", *sets, "--steps", "1",
                        "--out", str(run), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return run


def student_pool(out: Path, keep: list[str] | None = None, lora: bool = True, tree: bool = False) -> Path:
    """The default pool plus DREAM's students — `smollm2-lora` (SmolLM2's weights, role "student": a LoRA
    student) and, with `tree`, `k1-copy` (an untrained K-1 tree, `fresh_tree`, ending its answers at the line end)
    — on a copy of the default store (the shared one is not touched), with only the members in `keep` if given;
    → the pool file."""
    from k1.pool.config import read_pool_config
    from k1.pool.default import default_pool_file

    base = default_pool_file(quiet=True)
    cfg = read_pool_config(base)
    teacher = next(m for m in cfg.members if m.name == "smollm2")
    store = out / "pool.sqlite"
    copy_store(Path(cfg.pool.store), store)
    text = re.sub(r'(?m)^store = ".*"$', f'store = "{store}"', base.read_text())
    # the baselines' calls are charged too: a budget the stream and its baselines cannot reach (the default
    # pool's 20,000 ATP would run out within 1,000 requests with every member pinned)
    text = re.sub(r'(?m)^budget_atp = .*$', 'budget_atp = 1000000.0', text)
    if lora:
        text += (f'\n[[members]]\nname = "smollm2-lora"\nkind = "hf"\npath = "{teacher.path}"\n'
                 'roles = ["student"]\n')
    if tree:
        text += (f'\n[[members]]\nname = "k1-copy"\nkind = "k1"\nrun = "{fresh_tree(out)}"\n'
                 'roles = ["student"]\nstop = ["\\n"]\n')
    if keep:
        import tomllib

        import tomli_w

        data = tomllib.loads(text)
        data["members"] = [m for m in data["members"] if m["name"] in keep]
        if missing := set(keep) - {m["name"] for m in data["members"]}:
            raise SystemExit(f"--members: no member {', '.join(sorted(missing))} in the pool")
        text = tomli_w.dumps(data)
    path = out / "pool.toml"
    path.write_text(text)
    return path


def copy_store(src: Path, dst: Path) -> None:
    """A fresh SQLite store at `dst` holding every row of the store at `src` (`k1.pool.store_copy`)."""
    from k1.pool import store_copy
    from k1.pool.store import PoolStore

    dst.unlink(missing_ok=True)
    a, b = PoolStore(src), PoolStore(dst)
    try:
        store_copy.copy_store(a, b)
    finally:
        a.close()
        b.close()


def dream_pool(pool_file: Path, settings: dict, out: Path, metabolic: dict | None = None) -> Path:
    """`pool_file` with a `[pool.dream]` table (the server's own DREAM scheduler, `k1.pool.sleep`) and optionally
    a `[pool.metabolic]` one added; written beside it (relative paths in it keep their meaning), or into it when
    the bench wrote it in `out`."""
    text = pool_file.read_text()
    if re.search(r"(?m)^\[pool\.(dream|metabolic)\]|^dream\s*=", text):
        raise SystemExit(f"{pool_file} already sets [pool.dream] or [pool.metabolic]; give a pool file without them")
    import tomli_w

    table = tomli_w.dumps({"pool": {"dream": settings, **({"metabolic": metabolic} if metabolic else {})}})
    path = pool_file if pool_file.parent == out else pool_file.with_name(f".{pool_file.stem}-lifelong.toml")
    path.write_text(text.rstrip("\n") + "\n\n" + table)
    return path


class Cycles:
    """DREAM cycles as the server reports them (`GET /v1/pool` → dream.last), with each finished cycle's full
    report (`<store home>/dream/last-cycle.json`, read as soon as the cycle ends, before a next one replaces it)."""

    def __init__(self, store_home: Path):
        import threading

        self.home, self.done, self.running, self.at = store_home, [], None, 0
        self.lock, self.stop = threading.Lock(), threading.Event()

    def watch(self, url: str, every_s: float = 0.3) -> None:
        """Look every `every_s` seconds in a thread of its own (a cycle can end and the next begin within one
        request); `at` is the request the stream is at."""
        import threading

        import httpx

        def loop():
            with httpx.Client() as client:
                while not self.stop.wait(every_s):
                    try:
                        with self.lock:
                            self.poll(client, url, self.at)
                    except (httpx.HTTPError, ValueError):
                        pass  # the server is busy or stopping: look again
        threading.Thread(target=loop, daemon=True).start()

    def poll(self, client, url: str, at: int) -> dict | None:
        """→ the cycle that just ended (once), else None."""
        last = client.get(f"{url}/pool", headers=auth(), timeout=60).json().get("dream", {}).get("last")
        if not last:
            return None
        if self.running is not None and last["n"] != self.running["n"]:  # it ended and the next began in between
            self.done.append({**self.running, "finished_at": at, "outcome": "ended between two looks",
                              "trained_on": [], "error": "its report was replaced by the next cycle's"})
            self.running = None
        if last.get("outcome") == "running":
            if self.running is None:
                self.running = {"n": last["n"], "started_at": at, "reason": last.get("reason")}
            return None
        if self.done and self.done[-1]["n"] == last["n"]:
            return None
        c = {**(self.running if self.running and self.running["n"] == last["n"] else {"n": last["n"]}),
             "finished_at": at, "outcome": last.get("outcome"), "seconds": last.get("seconds"),
             "new_versions": last.get("new_versions")}
        self.running = None
        f = self.home / "dream" / "last-cycle.json"
        lines = f.read_text().strip().splitlines() if f.is_file() else []
        try:
            rep = json.loads(lines[-1]) if lines else {}
        except ValueError:
            rep = {}
        c["trained_on"] = rep.get("trained_on", [])
        if rep:
            c["report"] = {k: rep.get(k) for k in ("teacher", "student", "method", "train", "from_store", "practice",
                                                  "trust_prompts", "replay_prompts", "before", "after",
                                                  "calibrated_on", "class_before", "class_after",
                                                  "replay_atp_change", "seconds")}
        else:
            log = self.home / "dream" / "last-cycle.log"
            err = log.read_text().strip().splitlines() if log.is_file() else []
            c["error"] = err[-1] if err else c["outcome"]
        self.done.append(c)
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
    ap.add_argument("--dream-class", default=None, help="the server runs DREAM on this task class when it is due")
    ap.add_argument("--dream-after", type=int, default=None,
                    help="new verified experiences that make DREAM due (default: --window)")
    ap.add_argument("--dream-every-s", type=float, default=60.0, help="at least this long between DREAM starts")
    ap.add_argument("--crisis-off", action="store_true",
                    help="the pool never enters CRISIS (which holds DREAM back): for a pool that fails most requests")
    ap.add_argument("--dream-args", default=None,
                    help="options for `k1 pool dream` (shell words; default: LoRA_DREAM_ARGS, or with --tree-student "
                    "TREE_DREAM_ARGS)")
    ap.add_argument("--lora-student", action="store_true",
                    help="the default pool plus smollm2-lora (DREAM's LoRA student) on a copy of its store")
    ap.add_argument("--tree-student", action="store_true",
                    help="the default pool plus k1-copy (an untrained K-1 tree DREAM trains) on a copy of its store")
    ap.add_argument("--members", default=None,
                    help="with --lora-student or --tree-student: keep only these members (comma-separated), e.g. "
                    "smollm2,smollm2-lora")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/lifelong"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 200)
    import shlex

    import httpx
    from rich.progress import Progress

    t0 = time.time()
    args.out = args.out.resolve()  # the pool files written here name their stores by absolute path
    args.out.mkdir(parents=True, exist_ok=True)
    from k1.pool.config import read_pool_config
    from k1.pool.default import default_pool_file

    if args.dream_args is None:
        args.dream_args = TREE_DREAM_ARGS if args.tree_student else LORA_DREAM_ARGS
    if args.lora_student or args.tree_student:
        args.pool = student_pool(args.out, args.members.split(",") if args.members else None,
                                 lora=args.lora_student, tree=args.tree_student)
    store = Path(read_pool_config(args.pool or default_pool_file(quiet=True)).pool.store)
    items = stream(args.requests, args.seed)
    twin = None
    if args.twin:  # the same pool, no DREAM: a copy of the store as it is before the stream
        copy_store(store, args.out / "twin.sqlite")
        twin = Server(args.pool, args.out / "twin-serve.log", store=args.out / "twin.sqlite", dream="off")
    served_pool, dream = args.pool, None
    if args.dream_class:
        settings = {"mode": "auto", "after": args.dream_after or args.window, "every_s": args.dream_every_s,
                    "check_s": 1.0, "args": ["--task-class", args.dream_class, *shlex.split(args.dream_args)]}
        metabolic = {"crisis_window": 5, "crisis_failures": 6} if args.crisis_off else None  # 6 of 5: never
        served_pool = dream_pool(args.pool or default_pool_file(quiet=True), settings, args.out, metabolic)
        dream = Cycles(store.parent)
    server = Server(served_pool, args.out / "serve.log", dream="auto" if dream is not None else None)
    trained: set[str] = set()  # prompts a finished DREAM trained on
    records: list[dict] = []
    try:
        server.wait()
        if twin is not None:
            twin.wait()
        with httpx.Client() as client, ThreadPoolExecutor(max_workers=4) as lanes:
            names = [m["id"] for m in client.get(f"{server.url}/models", headers=auth()).json()["data"]
                     if m["id"] != "auto"]
            strongest = args.strongest or ("smollm2" if "smollm2" in names else names[0])
            with Progress(disable=args.quiet) as bar:
                job = bar.add_task("stream", total=len(items))
                dream_job, seen = None, 0
                if dream is not None:
                    dream.watch(server.url)

                def follow() -> None:  # the watcher's news: prompts trained on, and a bar per DREAM cycle
                    nonlocal dream_job, seen, trained
                    with dream.lock:
                        new, running = dream.done[seen:], dream.running
                    seen += len(new)
                    for done in new:
                        trained |= set(done.get("trained_on", []))
                        if dream_job is not None:
                            bar.update(dream_job, total=1, completed=1, description=f"DREAM {done['n']}: {done['outcome']}")
                            dream_job = None
                    if running is not None and dream_job is None:
                        dream_job = bar.add_task(f"DREAM {running['n']} on {args.dream_class}", total=None)

                for i, it in enumerate(items):
                    if dream is not None:
                        dream.at = i
                        follow()
                    rec: dict = {"i": i, "cls": it["cls"], "prompt": it["prompt"], "repeat": it["repeat"],
                                 "trained": it["prompt"] in trained}
                    # the twin's request runs beside the pool's, and the pinned members' beside each other (each
                    # member has its own gate in the server): the same calls as one after another, in less wall time
                    tw = lanes.submit(ask, client, twin.url, it, "auto", f"lifelong-{it['cls']}") if twin else None
                    a = ask(client, server.url, it, "auto", f"lifelong-{it['cls']}")
                    a["ok"] = judge(it, a["text"])
                    feedback(client, server.url, a)
                    rec["pool"] = a
                    asked = {m: lanes.submit(ask, client, server.url, it, m, "lifelong-baseline", PROBE_KEY)
                             for m in (names if args.oracle else [strongest]) if m != a["member"]}
                    if tw is not None:
                        b = tw.result()
                        b["ok"] = judge(it, b["text"])
                        feedback(client, twin.url, b)
                        rec["twin"] = b
                    pinned = {}
                    for m in (names if args.oracle else [strongest]):
                        p = a if m == a["member"] else asked[m].result()
                        pinned[m] = {"ok": p.get("ok", judge(it, p["text"])), "atp": p["atp"], "member": m}
                    rec["strongest"] = pinned[strongest]
                    if args.oracle:
                        good = [p for p in pinned.values() if p["ok"]]
                        rec["oracle"] = min(good or pinned.values(), key=lambda p: p["atp"]) if good else \
                            {"ok": False, "atp": min(p["atp"] for p in pinned.values()), "member": None}
                    records.append(rec)
                    bar.advance(job)
                t_wait = time.time()  # a cycle still running ends (and is recorded) before the servers stop
                if dream is not None:
                    dream.at = len(items)
                    while dream.running is not None and time.time() - t_wait < 3600:
                        time.sleep(1)
                    follow()
                    dream.stop.set()
    finally:
        if dream is not None:
            dream.stop.set()
        server.stop()
        if twin is not None:
            twin.stop()
        if served_pool != args.pool and served_pool.parent != args.out:
            served_pool.unlink(missing_ok=True)
    rows = window_rows(records, args.window)
    print(f"{'window':>6s}{'scored':>8s}{'pool':>16s}{'without DREAM':>16s}{'always-' + strongest:>24s}"
          f"{'oracle':>16s}   pool's members")
    def cell(r: dict, who: str) -> str:
        return f"{r[who]['success']:6.1%} {r[who]['atp']:8.2f}" if who in r else f"{'—':>15s}"

    for r in rows:
        print(f"{r['window']:6d}{r['scored']:8d} {cell(r, 'pool'):>15s} {cell(r, 'twin'):>15s} "
              f"{cell(r, 'strongest'):>23s} {cell(r, 'oracle'):>15s}   {r['members']}")
    cycles = dream.done if dream is not None else []
    for c in cycles:
        rep = c.get("report") or {}
        after = (rep.get("class_after") or {}).get("success")
        print(f"DREAM {c['n']}: requests {c.get('started_at', '?')} → {c['finished_at']}, {c.get('seconds') or 0:.0f} s, "
              f"{c['outcome']}; " + (f"{rep['train']} verified examples, {rep['student']} on {rep['calibrated_on']}: "
                                     f"{(rep.get('class_before') or {}).get('success') or 0:.0%} → {after or 0:.0%}"
                                     if rep.get("train") is not None else f"{c.get('error')}"))
    plot(rows, args.out / "lifelong.png")
    result = {"command": " ".join(["python"] + sys.argv), "requests": len(records), "window": args.window,
              "classes": list(CLASSES), "seed": args.seed, "strongest": strongest, "members": names,
              "windows": rows,
              "dream": [{k: v for k, v in c.items() if k != "trained_on"} for c in cycles] if dream is not None
              else "not run (no --dream-class)", "dream_settings": settings if dream is not None else None,
              "pool_without_dream": "the twin row of each window" if twin is not None else
              ("equal to the pool row (no DREAM ran)" if dream is None else "not measured (use --twin)"),
              "scored_out_as_trained": sum(r["trained"] for r in records),
              "repeats": sum(r["repeat"] for r in records), "seconds": time.time() - t0,
              "plot": str(args.out / "lifelong.png")}
    (args.out / "lifelong.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
