"""The stability–plasticity frontier of `k1 continual`: every strategy's (forgetting, just-learnt) points
across the values of a swept setting, plotted and checked for dominance.

A strategy that forgets less is better only if it does not learn less for it: each point is a table's
mean max-based forgetting (x) and mean just-learnt bits per byte (y, the loss matrix's diagonal), both
lower-is-better. `k1 continual --sweep KEY=V1,V2,...` writes one table per value under
`OUT/sweep/KEY=V/`; `collect` reads every `continual.json` under the given directories, and
`write_frontier` writes `frontier.json`, `frontier.png` and a self-contained `frontier.html`.

The plot has one panel per swept setting (a family: the λ sweep of the EWC rows, the learning-rate sweep of
the sparse rows), each point with its seed spread (± one sample std on both axes, and every seed's own
point faint beside it); `tree-ewc`'s frontier is drawn in every panel that lacks it, as the reference of
the goal. Dominance is judged on the means and on each seed's own frontier (`seed_dominance`).

    python -m k1.experiments.frontier OUT [MORE_DIRS ...] [--out DIR]

builds the frontier of existing tables without training anything, and prints its points and the dominance
verdicts as Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from k1.common.files import write_atomic


def _setting(table_dir: Path) -> str:
    """The swept setting a table was run with, from its directory name (`KEY=V`), or "default"."""
    name = table_dir.name
    return name if "=" in name else "default"


def collect(dirs: list[Path]) -> list[dict]:
    """One point per (table, strategy) of every continual.json under `dirs`: the means and stds over seeds,
    and each seed's own values (`per_seed`)."""
    points = []
    for root in dirs:
        for path in sorted(Path(root).rglob("continual.json")):
            report = json.loads(path.read_text())
            for s in report["strategies"]:
                if "just_learnt" not in s:  # a table written before plasticity was measured
                    continue
                setting = _setting(path.parent)
                key, _, value = setting.partition("=")
                per_seed = [{"seed": r["seed"], "forgetting_max": r["forgetting_max"],
                             "just_learnt": r["just_learnt"], "final_avg": r["final_avg"]}
                            for r in s.get("per_seed", []) if "just_learnt" in r]
                points.append({"strategy": s["name"], "setting": setting, "key": key, "value": value or key,
                               "table": str(path.parent), "seeds": len(report["seeds"]),
                               "forgetting_max": s["forgetting_max"]["mean"],
                               "forgetting_std": s["forgetting_max"]["std"],
                               "just_learnt": s["just_learnt"]["mean"], "just_learnt_std": s["just_learnt"]["std"],
                               "final_avg": s["final_avg"]["mean"], "per_seed": per_seed})
    return points


def dominates(a: list[dict], b: list[dict]) -> bool:
    """Whether frontier `a` dominates frontier `b`: every point of b is matched or beaten by a point of a on
    both forgetting and just-learnt, and beaten on at least one for some point (lower is better)."""
    if not a or not b:
        return False
    def no_worse(p, q):
        return p["forgetting_max"] <= q["forgetting_max"] and p["just_learnt"] <= q["just_learnt"]

    def better(p, q):
        return no_worse(p, q) and (p["forgetting_max"] < q["forgetting_max"] or p["just_learnt"] < q["just_learnt"])

    return all(any(no_worse(p, q) for p in a) for q in b) and any(any(better(p, q) for p in a) for q in b)


def seed_dominance(a: list[dict], b: list[dict]) -> tuple[int, int]:
    """(k, n): on how many of the n seeds that every point of `a` and `b` has, that seed's own frontier of
    `a` (its values at every setting) dominates that seed's frontier of `b`."""
    if not a or not b:
        return 0, 0
    seeds = set.intersection(*({r["seed"] for r in p.get("per_seed", [])} for p in [*a, *b]))

    def at(points, seed):
        return [next(r for r in p["per_seed"] if r["seed"] == seed) for p in points]

    return sum(dominates(at(a, s), at(b, s)) for s in seeds), len(seeds)


# (frontier, over): the goal's pairs (a K-1 row over tree-ewc), the choice over its random-path control, the
# adapter over plain routes, and rows over the naive reference
PAIRS = [("k1-ewc", "tree-ewc"), ("k1-route-adapter", "tree-ewc"), ("k1-route", "tree-ewc"),
         ("k1-ewc", "random-path-ewc"), ("k1-attribution", "random-path"), ("k1-attribution", "tree-naive"),
         ("k1-freeze", "random-path-freeze"), ("k1-route", "random-path-route"), ("random-path-route", "k1-route"),
         ("k1-route-adapter", "k1-route"), ("k1-route-adapter", "tree-naive"), ("k1-route", "tree-naive"),
         ("random-path-route", "tree-naive")]
REFERENCE = "tree-ewc"  # drawn in every panel: the goal is a frontier that dominates it


def by_strategy(points: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["strategy"], []).append(p)
    return out


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def plot(points: list[dict]):
    """One panel per swept setting: each strategy's means (± one std over seeds on both axes) joined in the
    order of the swept value, its seeds' own points faint beside them, and the reference's frontier dashed
    in every panel that lacks it."""
    import matplotlib

    from k1.report.plots import new_figure

    keys = list(dict.fromkeys(p["key"] for p in points))
    fig = new_figure((5.2 * len(keys) + 0.8, 5.4))
    axes = fig.subplots(1, len(keys), sharex=True, sharey=True, squeeze=False)[0]
    names = list(by_strategy(points))
    palette = matplotlib.colormaps["tab10"].colors
    style = {n: (palette[i % 10], "osD^v<>ph*"[i % 10]) for i, n in enumerate(names)}
    ref = sorted((p for p in points if p["strategy"] == REFERENCE), key=lambda p: _number(p["value"]))
    for ax, key in zip(axes, keys):
        groups = by_strategy([p for p in points if p["key"] == key])
        if ref and REFERENCE not in groups:
            ax.plot([p["forgetting_max"] for p in ref], [p["just_learnt"] for p in ref], ls="--",
                    color=style[REFERENCE][0], alpha=0.6, marker=".", label=f"{REFERENCE} ({ref[0]['key']} sweep, means)")
        for name, pts in groups.items():
            colour, marker = style[name]
            pts = sorted(pts, key=lambda p: _number(p["value"]))
            ax.errorbar([p["forgetting_max"] for p in pts], [p["just_learnt"] for p in pts],
                        xerr=[p["forgetting_std"] for p in pts], yerr=[p["just_learnt_std"] for p in pts],
                        marker=marker, color=colour, capsize=2, lw=1.2, label=f"{name} ({pts[0]['seeds']} seeds)")
            seeds = [r for p in pts for r in p["per_seed"]]
            ax.scatter([r["forgetting_max"] for r in seeds], [r["just_learnt"] for r in seeds], s=9,
                       color=colour, alpha=0.35, marker=marker, linewidths=0)
            for p in pts:
                ax.annotate(p["value"], (p["forgetting_max"], p["just_learnt"]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points", color=colour)
        ax.set_title("default settings" if key == "default" else f"sweep of {key}", fontsize=10)
        ax.set_xlabel("max-based forgetting, bits per byte (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("just-learnt bits per byte (lower is better)")
    fig.suptitle("Stability–plasticity frontier: means ± one std over seeds, faint: each seed; labels: the swept "
                 "value", fontsize=10)
    return fig


def write_frontier(dirs: list[Path], out: Path) -> dict:
    """frontier.json, frontier.png and frontier.html in `out` from every table under `dirs`."""
    from k1.report.html import CSS, esc, figure, table

    points = collect(dirs)
    groups = by_strategy(points)
    verdicts = []
    for a, b in PAIRS:
        if a in groups and b in groups:
            k, n = seed_dominance(groups[a], groups[b])
            verdicts.append({"frontier": a, "over": b, "dominates": dominates(groups[a], groups[b]),
                             "seeds_dominating": k, "seeds": n,
                             "points": [len(groups[a]), len(groups[b])]})
    result = {"points": points, "dominance": verdicts}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "frontier.json", json.dumps(result, indent=1))
    if not points:
        return result
    fig = plot(points)
    fig.savefig(out / "frontier.png", dpi=100, metadata={"Software": None})
    rows = [[p["strategy"], p["setting"], p["seeds"], f"{p['forgetting_max']:.3f} ± {p['forgetting_std']:.3f}",
             f"{p['just_learnt']:.3f} ± {p['just_learnt_std']:.3f}", f"{p['final_avg']:.3f}", p["table"]]
            for p in sorted(points, key=lambda p: (p["strategy"], p["setting"]))]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>K-1 stability–plasticity frontier</title>",
            f"<style>{CSS}</style></head><body><header><h1>Stability–plasticity frontier</h1></header><main>",
            ("<section><p>Each point: one table's mean max-based forgetting against its mean just-learnt bits per "
             "byte (the loss matrix's diagonal), both lower-is-better; one line per strategy across the values of "
             "the swept setting, error bars ± one sample std over seeds. A strategy is better than another only "
             "where its frontier dominates, on the means and on each seed's own frontier.</p>"),
            figure("frontier", fig, "Forgetting against just-learnt bits per byte, per strategy."),
            table(["frontier", "over", "dominates (means)", "seeds dominating", "points"],
                  [[v["frontier"], v["over"], "yes" if v["dominates"] else "no", f"{v['seeds_dominating']}/{v['seeds']}",
                    f"{v['points'][0]} / {v['points'][1]}"] for v in verdicts], left=2),
            table(["strategy", "setting", "seeds", "forgetting (max)", "just-learnt bpb", "final avg", "table"],
                  rows, left=2),
            f"<p>Read from: {esc(', '.join(str(d) for d in dirs))}</p></section></main></body></html>"]
    write_atomic(out / "frontier.html", "\n".join(page))
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(next((ln.strip() for ln in (__doc__ or "").splitlines() if "python -m" in ln), ""))
        return 0 if argv else 2
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    dirs = [Path(a) for a in argv]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        print(f"k1 frontier: error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    result = write_frontier(dirs, out or dirs[0])
    print(f"{len(result['points'])} points; wrote {(out or dirs[0]) / 'frontier.png'} and frontier.html\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The points (means ± std and each seed's values) and the dominance verdicts as Markdown tables."""
    lines = ["| strategy | setting | seeds | forgetting (max) | just-learnt bpb | final avg | per seed: forgetting / just-learnt |",
             "|---|---|---|---|---|---|---|"]
    for p in sorted(result["points"], key=lambda p: (p["strategy"], p["key"], _number(p["value"]))):
        seeds = "; ".join(f"{r['forgetting_max']:.3f} / {r['just_learnt']:.3f}" for r in p["per_seed"])
        lines.append(f"| {p['strategy']} | {p['setting']} | {p['seeds']} | {p['forgetting_max']:.3f} ± "
                     f"{p['forgetting_std']:.3f} | {p['just_learnt']:.3f} ± {p['just_learnt_std']:.3f} | "
                     f"{p['final_avg']:.3f} | {seeds} |")
    lines += ["", "| frontier | over | dominates (means) | seeds dominating | points |", "|---|---|---|---|---|"]
    lines += [f"| {v['frontier']} | {v['over']} | {'yes' if v['dominates'] else 'no'} | "
              f"{v['seeds_dominating']}/{v['seeds']} | {v['points'][0]} / {v['points'][1]} |"
              for v in result["dominance"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
