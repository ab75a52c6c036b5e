"""The pool's page of the HTML report (`k1 pool report`): trust over time, cost, routing shares, state log.

Built from the store alone, with the report's own primitives (`k1.report.html`), so it looks like the
other reports and stays one self-contained file. A section without data says so in one line.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from pathlib import Path

from k1 import __version__
from k1.common.trust import beta_mean
from k1.pool.store import PoolStore
from k1.report import plots
from k1.report.html import CSS, Section, absent, esc, figure, fmt, table


def _trust_over_time(outcomes: list[dict]) -> Section:
    sec = Section("pool-trust", "Trust over time")
    if not outcomes:
        sec.parts.append(absent("pool-trust", "No outcomes yet: answers get outcomes from verifiers, a judge, "
                                "<code>/v1/feedback</code> or <code>k1 pool dream</code>."))
        return sec
    counts: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    series: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for i, o in enumerate(outcomes):
        key = (o["member"], o["task_class"])
        c = counts[key]
        c[0] += o["success"]
        c[1] += 1 - o["success"]
        series[key].append((i, beta_mean(c[0], c[1])))
    fig = plots.new_figure()
    ax = fig.add_subplot()
    for (m, ctx), pts in sorted(series.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=f"{m} · {ctx}")
    ax.set_xlabel("outcome #")
    ax.set_ylabel("posterior mean P(success)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    sec.parts.append(figure("pool-trust", fig, "Beta posterior mean of each (member, task class) after each outcome"))
    rows = [[r["member"], r["task_class"], fmt(r["successes"], "g"), fmt(r["failures"], "g"), fmt(r["mean"], ".3f")]
            for r in trust_table_rows(outcomes)]
    sec.parts.append(table(["member", "task class", "successes", "failures", "trust"], rows, left=2))
    return sec


def trust_table_rows(outcomes: list[dict]) -> list[dict]:
    acc: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for o in outcomes:
        acc[(o["member"], o["task_class"])][0] += o["success"]
        acc[(o["member"], o["task_class"])][1] += 1 - o["success"]
    return [{"member": m, "task_class": c, "successes": s, "failures": f, "mean": beta_mean(s, f)}
            for (m, c), (s, f) in sorted(acc.items())]


def _cost(store: PoolStore) -> Section:
    sec = Section("pool-cost", "Cost")
    totals = store.ledger_totals()
    if not totals:
        sec.parts.append(absent("pool-cost", "No calls yet."))
        return sec
    names = sorted(totals)
    fig = plots.new_figure((10.0, 3.0))
    ax = fig.add_subplot()
    ax.bar(names, [totals[n]["atp"] for n in names], color="#1f77b4")
    ax.set_ylabel("ATP charged")
    sec.parts.append(figure("pool-cost", fig, "ATP charged per member (every call path)"))
    paths = sorted({p for n in names for p in totals[n]["paths"]})
    rows = [[n, totals[n]["calls"], fmt(totals[n]["atp"], ".3f")] + [totals[n]["paths"].get(p, 0) for p in paths]
            for n in names]
    sec.parts.append(table(["member", "calls", "ATP"] + paths, rows))
    return sec


def _shares(ledger: list[dict], window: int = 20) -> Section:
    sec = Section("pool-shares", "Routing shares")
    calls = [r for r in ledger if r["kind"] == "request"]  # routed calls, not judges, DREAM or calibration
    if not calls:
        sec.parts.append(absent("pool-shares", "No routed calls yet."))
        return sec
    names = sorted({r["member"] for r in calls})
    fig = plots.new_figure((10.0, 3.0))
    ax = fig.add_subplot()
    xs = list(range(len(calls)))
    for n in names:
        ys = []
        for i in xs:
            w = calls[max(0, i - window + 1):i + 1]
            ys.append(sum(r["member"] == n for r in w) / len(w))
        ax.plot(xs, ys, label=n)
    ax.set_xlabel("call #")
    ax.set_ylabel(f"share of the last {window} calls")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    sec.parts.append(figure("pool-shares", fig, "Which member answered, over a sliding window of calls"))
    return sec


def _states(store: PoolStore) -> Section:
    sec = Section("pool-states", "Metabolic states")
    log = store.state_log(200)
    if not log:
        sec.parts.append(absent("pool-states", "No transitions yet (the pool has stayed in WAKE)."))
        return sec
    rows = [[datetime.datetime.fromtimestamp(r["ts"]).strftime("%Y-%m-%d %H:%M:%S"), r["from_state"] or "",
             r["to_state"], r["reason"]] for r in log]
    sec.parts.append(table(["time", "from", "to", "reason"], rows, left=4))
    return sec


def build_pool_report(store: PoolStore, budget_atp: float | None = None) -> str:
    sections = [_trust_over_time(store.outcome_history()), _cost(store), _shares(store.ledger(100_000)),
                _states(store)]
    spent = store.spent()
    title = f"K-1 pool report: {store.path.name if store.path else store.label}"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    budget = f" · budget {spent:.2f} of {budget_atp:g} ATP spent" if budget_atp else f" · {spent:.2f} ATP spent"
    nav = "".join(f'<li><a href="#{s.key}">{esc(s.title)}</a></li>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{esc(title)}</h1>\n"
            f'<p class="meta">{esc(store.path.resolve() if store.path else store.label)}{esc(budget)} · generated {when} by k1 {__version__}</p>\n'
            f"<nav><ol>{nav}</ol></nav>\n</header>\n<main>\n"
            + "\n".join(s.html() for s in sections) + "\n</main>\n</body>\n</html>\n")


def write_pool_report(store: PoolStore, out: str | Path, budget_atp: float | None = None) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_pool_report(store, budget_atp), encoding="utf-8")
    return path
