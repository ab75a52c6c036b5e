"""The continual metrics of one loss matrix R ([stages][domains]): final average, backward transfer, forgetting
(first- and max-based), forward transfer, the just-learnt bpb and forgetting relative to what was learnt. Its own
file so that both the runner (continual_run.py) and the table builder (continual.py) use it without a circle."""

from __future__ import annotations

METRICS = ["final_avg", "bwt", "forgetting_first", "forgetting_max", "fwt", "just_learnt", "forgetting_rel"]


def continual_metrics(R: list[list[float]], R_init: list[float]) -> dict[str, float]:
    """The metrics of continual.py's docstring from R ([stages][domains], square) and R_init ([domains])."""
    n = len(R)
    if n < 2 or any(len(row) != n for row in R) or len(R_init) != n:
        raise ValueError(f"R must be square with at least 2 stages and R_init one entry per domain; got {n} rows")
    last = n - 1
    first = [R[last][j] - R[j][j] for j in range(last)]
    best = [R[last][j] - min(R[i][j] for i in range(last)) for j in range(last)]
    fwt = [R[j - 1][j] - R_init[j] for j in range(1, n)]
    learnt = [max(R_init[j] - R[j][j], 1e-6) for j in range(last)]  # bpb gained by the time j was learnt
    return {"final_avg": sum(R[last]) / n, "bwt": sum(first) / last, "forgetting_first": sum(first) / last,
            "forgetting_max": sum(best) / last, "fwt": sum(fwt) / last,
            "just_learnt": sum(R[j][j] for j in range(n)) / n,
            "forgetting_rel": sum(b / g for b, g in zip(best, learnt)) / last}
