"""One order's table and paired tests from the finished runs of several `k1 continual --out` folders.

A round of experiments may train its rows in more than one folder (rows added by later code, with the
runs of the others read as they were). `python -m k1.experiments.rounds OUT[:S1,S2] [OUT ...]` reads every
finished run (`OUT/runs/<strategy>-seed<N>/continual_run.json`; with `:S1,S2` only those strategies of
that folder), refuses a strategy found in two folders,
and prints, as Markdown: per strategy the means ± std over seeds, the ratios to `tree-naive`, and every
paired test `continual.paired` makes for these strategies (the pre-registered `PRIMARY` ones stand
alone; the rest carry Holm's correction). `--order NAME=OUT+OUT:S1`
(repeatable) does the same per order, then lists every order's primary tests together with Holm's correction
over them. `--json` writes the same numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from k1.experiments.continual import holm, paired


def load(outs: list[str]) -> dict[str, list[dict]]:
    """strategy → its finished runs (sorted by seed), from every folder (`OUT` or `OUT:S1,S2`)."""
    found: dict[str, list[dict]] = {}
    where: dict[str, str] = {}
    for spec in outs:
        out, _, only = spec.partition(":")
        for f in sorted(Path(out).glob("runs/*-seed*/continual_run.json")):
            name = f.parent.name.rsplit("-seed", 1)[0]
            if only and name not in only.split(","):
                continue
            if where.setdefault(name, out) != out:
                raise SystemExit(f"{name} has runs in both {where[name]} and {out}: pass one of them")
            found.setdefault(name, []).append(json.loads(f.read_text()))
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in found.items()}


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def table(results: dict[str, list[dict]]) -> list[dict]:
    naive = results.get("tree-naive")
    rows = []
    for name, runs in results.items():
        diag = [statistics.mean(r["R"][j][j] for r in runs) for j in range(len(runs[0]["R"]))]
        row = {"strategy": name, "seeds": len(runs),
               **{k: [r[k] for r in runs] for k in ("final_avg", "forgetting_max", "just_learnt")},
               "diag": diag, "shifts": [len(r.get("shifts_detected") or []) for r in runs]}
        if naive:
            f0 = statistics.mean(r["forgetting_max"] for r in naive)
            n_diag = [statistics.mean(r["R"][j][j] for r in naive) for j in range(len(naive[0]["R"]))]
            row["forgetting_vs_naive"] = statistics.mean(row["forgetting_max"]) / f0 if f0 > 0 else None
            row["final_vs_naive"] = statistics.mean(row["final_avg"]) / statistics.mean(r["final_avg"] for r in naive) - 1
            row["worst_learnt_vs_naive"] = max(d / n - 1 for d, n in zip(diag[1:], n_diag[1:]))
        rows.append(row)
    return rows


def markdown(results: dict[str, list[dict]]) -> str:
    lines = [("| strategy | seeds | final avg bpb | forgetting (max) | just-learnt bpb | shifts detected | "
              "forgetting ÷ tree-naive | final avg vs tree-naive | worst just-learnt vs tree-naive |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table(results):
        ratio = r.get("forgetting_vs_naive")
        lines.append(f"| {r['strategy']} | {r['seeds']} | {_ms(r['final_avg'])} | {_ms(r['forgetting_max'])} | "
                     f"{_ms(r['just_learnt'])} | {statistics.mean(r['shifts']):.1f} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}×'} | "
                     f"{r['final_vs_naive'] * 100:+.1f}% | {r['worst_learnt_vs_naive'] * 100:+.1f}% |"
                     if "final_vs_naive" in r else
                     f"| {r['strategy']} | {r['seeds']} | {_ms(r['final_avg'])} | {_ms(r['forgetting_max'])} | "
                     f"{_ms(r['just_learnt'])} | {statistics.mean(r['shifts']):.1f} | — | — | — |")
    lines += ["", "| candidate − reference | metric | seeds | mean diff ± std | seeds candidate lower | p | p (Holm) |",
              "|---|---|---|---|---|---|---|"]
    for t in paired(results):
        star = " (primary)" if t.get("primary") else ""
        lines.append(f"| {t['candidate']} − {t['reference']}{star} | {t['metric']} | {t['seeds']} | "
                     f"{t['mean_diff']:+.3f} ± {t['std_diff']:.3f} | {t['candidate_better']}/{t['seeds']} | "
                     f"{t['p_value']:.4f} | {t['p_holm']:.4f} |")
    return "\n".join(lines)


def primaries(orders: dict[str, dict[str, list[dict]]]) -> str:
    """Every order's pre-registered primary tests in one table, with Holm's correction over all of them."""
    rows = [(name, t) for name, results in orders.items() for t in paired(results) if t["primary"]]
    lines = [("| order | candidate − reference | seeds | forgetting diff ± std | seeds candidate lower | p | "
              "p (Holm over these) |"), "|---|---|---|---|---|---|---|"]
    for (name, t), ph in zip(rows, holm([t["p_value"] for _, t in rows])):
        lines.append(f"| {name} | {t['candidate']} − {t['reference']} | {t['seeds']} | {t['mean_diff']:+.3f} ± "
                     f"{t['std_diff']:.3f} | {t['candidate_better']}/{t['seeds']} | {t['p_value']:.4f} | {ph:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outs", nargs="*", help="a --out folder of k1 continual, or FOLDER:S1,S2 for some of its strategies")
    ap.add_argument("--order", action="append", default=[], metavar="NAME=OUT[:S],OUT...",
                    help="one order's folders (repeatable): each order's table, then every primary test, Holm over all")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    orders = {}
    for spec in a.order:
        name, _, outs = spec.partition("=")
        orders[name] = load(outs.split("+"))
    if a.outs:
        orders[""] = load(a.outs)
    for name, results in orders.items():
        if not results:
            raise SystemExit(f"no finished runs for {name or ', '.join(a.outs)}")
        print(f"\n### {name}\n" if name else "", markdown(results), sep="")
    if a.order:
        print("\n### primary tests\n")
        print(primaries(orders))
    if a.json:
        a.json.write_text(json.dumps({name: {"table": table(r), "paired": paired(r)} for name, r in orders.items()},
                                     indent=1))


if __name__ == "__main__":
    main()
