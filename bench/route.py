"""Routing benchmark: does trust-based routing keep the strong member's success at a fraction of its cost?

The task classes, their sizes and the success criteria are fixed below, before anything is measured:
- `prose`, `code`, `science` next word: 64 bytes of held-out text from a built-in corpus ending at the end of a
  word; success = the answer's first word is the text's next word (the K-1 members' own domains);
- `instruction`: short questions with a checkable answer (success = the expected word appears);
- `arithmetic`: "What is a + b?"; success = the sum appears as a number in the answer.
Each member answers every task once (greedy), through a `Router` pinned to it, so the outcome and the
measured cost (ATP) of every (member, task) are real; the table is cached under runs/bench/. Routers are
then evaluated by replaying that table over shuffled task orders (several seeds), learning online from
the outcomes as they go: always-strongest, always-cheapest, random, greedy, Thompson, UCB, and the oracle
(the cheapest member that succeeds on each task). Reported: success, cost, PGR and APGR (RouteLLM: the share
of the strong–weak success gap recovered; APGR averages it over the cost range, swept with λ), regret
against the oracle, with the spread over seeds. If the strongest member is not clearly (≥ 10 points)
better than the cheapest, APGR is undefined and the bench says so.

    python bench/route.py --quick      # 8 tasks per class on the default pool; a few minutes on 2 cores
    python bench/route.py              # 24 tasks per class
    python bench/route.py --pool FILE  # any pool file
    python bench/route.py --quick --dream   # then DREAM (strongest → student), re-measure the student, replay

With `--dream`, DREAM consolidates the bench's own experiences (teacher = the strongest member, student =
the pool's "student" member), the student answers every task again, and the routers are replayed on the
updated table: the report gives Thompson's success and cost before and after.

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

CLASSES = ("prose", "code", "science", "instruction", "arithmetic")
CLEARLY_BETTER = 0.10  # success gap (strongest − cheapest) below which APGR is undefined
GOAL_SUCCESS, GOAL_COST = 0.95, 0.50  # Thompson vs always-strongest
LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
MAX_TOKENS = {"prose": 8, "code": 8, "science": 8, "instruction": 32, "arithmetic": 32}

INSTRUCTIONS = [
    ("What is the capital of France?", ["paris"]), ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Italy?", ["rome"]), ("What color is the sky on a clear day?", ["blue"]),
    ("How many legs does a spider have?", ["8", "eight"]), ("Reply with the single word: yes", ["yes"]),
    ("What is the opposite of hot?", ["cold"]), ("Which animal says meow?", ["cat"]),
    ("What is the largest planet in the solar system?", ["jupiter"]), ("What do bees make?", ["honey"]),
    ("What is frozen water called?", ["ice"]), ("How many days are in a week?", ["7", "seven"]),
    ("What is the capital of Germany?", ["berlin"]), ("What is the opposite of up?", ["down"]),
    ("What color is grass?", ["green"]), ("How many hours are in a day?", ["24", "twenty-four", "twenty four"]),
    ("What is the capital of Spain?", ["madrid"]), ("What gas do people breathe in to live?", ["oxygen"]),
    ("Which season comes after winter?", ["spring"]), ("What is the opposite of black?", ["white"]),
    ("What is the capital of England?", ["london"]), ("How many wheels does a bicycle have?", ["2", "two"]),
    ("What do cows drink?", ["water"]), ("What is the color of a banana?", ["yellow"]),
]


# ---- the tasks (fixed before anything is measured) ----------------------------------------------------
def word_tasks(domain: str, n: int, seed: int) -> list[dict]:
    from k1.data.config import DataConfig
    from k1.data.corpus import load_corpus

    val = load_corpus(DataConfig(domains=[domain])).domains[domain].val
    text = bytes(val.tolist()).decode("utf-8", errors="replace")
    rng = random.Random(f"{domain}-{seed}")
    # the next word after a space: the prompt ends at the end of the previous word (no cut token)
    words = [m for m in re.finditer(r" ([A-Za-z]{4,})\b", text) if m.start() > 64]
    tasks = []
    for m in rng.sample(words, n):
        tasks.append({"cls": domain, "prompt": text[m.start() - 64:m.start()], "answer": m.group(1), "chat": False})
    return tasks


def build_tasks(n: int, seed: int = 0) -> list[dict]:
    tasks = []
    for d in ("prose", "code", "science"):
        tasks += word_tasks(d, n, seed)
    rng = random.Random(f"tasks-{seed}")
    for q, ok in rng.sample(INSTRUCTIONS, min(n, len(INSTRUCTIONS))):
        tasks.append({"cls": "instruction", "prompt": q, "answer": ok, "chat": True})
    for _ in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 40)
        tasks.append({"cls": "arithmetic", "prompt": f"What is {a} + {b}? Answer with the number only.",
                      "answer": a + b, "chat": True})
    for i, t in enumerate(tasks):
        t["id"] = i
    return tasks


def check(task: dict, answer: str) -> bool:
    if task["cls"] in ("prose", "code", "science"):
        m = re.match(r"\s*([A-Za-z]+)", answer)
        return m is not None and m.group(1) == task["answer"]
    if task["cls"] == "instruction":
        low = answer.lower()
        return any(re.search(rf"\b{re.escape(w)}\b", low) for w in task["answer"])
    return task["answer"] in [int(x) for x in re.findall(r"-?\d+", answer)]


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
def replay(table: dict, tasks: list[dict], router: str, seed: int, lam: float = 0.3) -> dict:
    from k1.pool.select import Candidate, select

    members = table["members"]
    rng = random.Random(seed)
    order = list(range(len(tasks)))
    rng.shuffle(order)
    strongest, cheapest = roles(table)
    counts = defaultdict(lambda: [0.0, 0.0])
    seen_cost = defaultdict(list)
    succ = cost = 0.0
    picks = defaultdict(int)
    for i in order:
        cls = tasks[i]["cls"]
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
            m = select(cands, router, lam, rng).member
        ok = table["outcomes"][m][i]
        counts[(m, cls)][0 if ok else 1] += 1
        seen_cost[m].append(table["cost"][m][i])
        succ += ok
        cost += table["cost"][m][i]
        picks[m] += 1
    return {"success": succ / len(tasks), "cost": cost, "picks": dict(picks)}


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
    from k1.pool.dream import dream
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
                lr=args.dream_lr, max_tokens=16, verifier=verifier, quiet=args.quiet)
    return {"report": rep, "table": remeasure(router, table, tasks, students[0]), "student": students[0]}


def roles(table: dict) -> tuple[str, str]:
    """strongest = the highest overall success (ties: the pricier); cheapest = the lowest mean cost."""
    members = table["members"]
    rate = {n: statistics.fmean(table["outcomes"][n]) for n in members}
    mean_cost = {n: statistics.fmean(table["cost"][n]) for n in members}
    strongest = max(members, key=lambda n: (rate[n], mean_cost[n]))
    cheapest = min(members, key=lambda n: mean_cost[n])
    return strongest, cheapest


def apgr(table, tasks, seeds, s_strong, s_weak, c_strong, c_weak, mode="thompson") -> float:
    """Mean PGR over the cost range [weak, strong], from a λ sweep (running best PGR at each cost level)."""
    pts = []
    for lam in LAMBDAS:
        runs = [replay(table, tasks, mode, s, lam) for s in seeds]
        c = statistics.fmean(r["cost"] for r in runs)
        s = statistics.fmean(r["success"] for r in runs)
        pts.append(((c - c_weak) / (c_strong - c_weak), (s - s_weak) / (s_strong - s_weak)))
    grid = [i / 100 for i in range(101)]
    best = []
    for g in grid:
        within = [p for x, p in pts if x <= g + 1e-12]
        best.append(max([0.0] + within))
    return statistics.fmean(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 tasks per class")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pool", type=Path, default=None, help="pool file (default: the built-in default pool)")
    ap.add_argument("--lam", type=float, default=0.3, help="cost weight λ of the learning routers")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--dream", action="store_true", help="then DREAM, re-measure the student, replay again")
    ap.add_argument("--dream-k", type=int, default=32)
    ap.add_argument("--dream-epochs", type=int, default=2)
    ap.add_argument("--dream-lr", type=float, default=1e-4)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from k1.pool.config import PoolSettings
    from k1.pool.pool import load_pool
    from k1.pool.router import Router
    from k1.pool.store import PoolStore

    t0 = time.time()
    n = args.per_class or (8 if args.quick else 24)
    tasks = build_tasks(n)
    if args.pool is None:
        from k1.pool.default import default_pool_file
        args.pool = default_pool_file(quiet=args.quiet)
    pool = load_pool(args.pool)
    tag = "quick" if args.quick else f"n{n}"
    pool.settings = PoolSettings(budget_atp=1e12, seed=0)  # the bench's own store and an unlimited budget
    router = Router(pool, PoolStore(args.out / f"route-{tag}.sqlite"))
    table = outcome_table(router, tasks, args.out / f"route-table-{tag}.json", args.quiet)
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
    routers = ("always-strongest", "always-cheapest", "random", "greedy", "thompson", "ucb", "oracle")
    res = {}
    for r in routers:
        runs = [replay(table, tasks, r, s, args.lam) for s in seeds]
        res[r] = {"success": statistics.fmean(x["success"] for x in runs),
                  "success_sd": statistics.pstdev(x["success"] for x in runs),
                  "cost": statistics.fmean(x["cost"] for x in runs), "cost_sd": statistics.pstdev(x["cost"] for x in runs),
                  "picks": runs[0]["picks"]}
    s_strong, c_strong = res["always-strongest"]["success"], res["always-strongest"]["cost"]
    s_weak, c_weak = res["always-cheapest"]["success"], res["always-cheapest"]["cost"]
    defined = s_strong - s_weak >= CLEARLY_BETTER
    for r in routers:
        x = res[r]
        x["cost_share"] = x["cost"] / c_strong if c_strong else None
        x["pgr"] = (x["success"] - s_weak) / (s_strong - s_weak) if defined else None
        x["regret_success"] = res["oracle"]["success"] - x["success"]
        x["regret_cost"] = x["cost"] - res["oracle"]["cost"]
    apgrs = {m: apgr(table, tasks, seeds, s_strong, s_weak, c_strong, c_weak, m) if defined else None
             for m in ("thompson", "ucb", "greedy")}

    print(f"\nstrongest: {strongest} ({s_strong:.0%}), cheapest: {cheapest} ({s_weak:.0%}); λ = {args.lam}, "
          f"{len(seeds)} seeds")
    print(f"{'router':18s}{'success':>14s}{'ATP':>18s}{'cost share':>12s}{'PGR':>8s}{'regret':>9s}")
    for r in routers:
        x = res[r]
        pgr = "—" if x["pgr"] is None else f"{x['pgr']:.2f}"
        share = "—" if x["cost_share"] is None else f"{x['cost_share']:.1%}"
        print(f"{r:18s}{x['success']:9.1%} ±{x['success_sd']:4.1%}{x['cost']:11.2f} ±{x['cost_sd']:5.2f}"
              f"{share:>12s}{pgr:>8s}{x['regret_success']:9.1%}")
    if defined:
        print("APGR (λ sweep): " + ", ".join(f"{k} {v:.3f}" for k, v in apgrs.items()))
    else:
        print(f"APGR undefined: the strongest member ({s_strong:.0%}) is not ≥ {CLEARLY_BETTER:.0%} better than the "
              f"cheapest ({s_weak:.0%})")
    th = res["thompson"]
    goal = {"success_ratio": th["success"] / s_strong if s_strong else None, "cost_ratio": th["cost_share"]}
    goal["met"] = bool(goal["success_ratio"] is not None and goal["success_ratio"] >= GOAL_SUCCESS
                       and goal["cost_ratio"] is not None and goal["cost_ratio"] <= GOAL_COST)
    if goal["success_ratio"] is None:
        print("goal undefined: always-strongest succeeds on nothing")
    else:
        print(f"goal (Thompson ≥ {GOAL_SUCCESS:.0%} of always-strongest's success at ≤ {GOAL_COST:.0%} of its cost): "
              f"{goal['success_ratio']:.1%} of the success at {goal['cost_ratio']:.1%} of the cost → "
              f"{'met' if goal['met'] else 'NOT met'}")
    out = {"command": " ".join(["python"] + sys.argv), "tasks": len(tasks), "per_class": n, "members": per_member,
           "strongest": strongest, "cheapest": cheapest, "lambda": args.lam, "seeds": len(seeds), "routers": res,
           "apgr": apgrs, "apgr_defined": defined, "goal": goal}
    if args.dream:
        d = run_dream(router, table, tasks, strongest, args)
        if "table" in d:
            after = [replay(d["table"], tasks, "thompson", s, args.lam) for s in seeds]
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
