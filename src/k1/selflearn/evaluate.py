"""Held-out evaluation by verifiers only: greedy answers to tasks never used for training, scored, with cost."""

from __future__ import annotations

from k1.selflearn.improve import ask
from k1.tasks.task import Task
from k1.tasks.verifiers import solved


def evaluate(member, tasks: list[Task], on_task=None) -> dict:
    """→ {n, solved, rate, mean_score, atp, latency_s}. Never consults a judge. `on_task()` is called after
    each task (a progress bar's advance)."""
    scores, atp, lat = [], 0.0, 0.0
    for t in tasks:
        c = ask(member, t)
        if on_task is not None:
            on_task()
        scores.append(c.score)
        atp += c.atp
        lat += c.latency_s
    n = len(tasks)
    k = sum(solved(s) for s in scores)
    return {"n": n, "solved": k, "rate": k / n if n else 0.0, "mean_score": sum(scores) / n if n else 0.0,
            "atp": round(atp, 3), "latency_s": round(lat, 2)}
