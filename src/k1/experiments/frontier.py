"""The stability–plasticity frontier of `k1 continual`: every strategy's (forgetting, just-learnt) points
across the values of a swept setting, plotted and checked for dominance.

A strategy that forgets less is better only if it does not learn less for it: each point is a table's
mean max-based forgetting (x) and mean just-learnt bits per byte (y, the loss matrix's diagonal), both
lower-is-better. `k1 continual --sweep KEY=V1,V2,...` writes one table per value under
`OUT/sweep/KEY=V/`; `collect` reads every `continual.json` under the given directories, and
`write_frontier` writes `frontier.json`, `frontier.png` and a self-contained `frontier.html`.

    python -m k1.experiments.frontier OUT [MORE_DIRS ...] [--out DIR]

builds the frontier of existing tables without training anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from k1.common.files import write_atomic


def _setting(table_dir: Path, root: Path) -> str:
    """The swept setting a table was run with, from its directory name (`KEY=V`), or "default"."""
    name = table_dir.name
    return name if "=" in name else "default"


def collect(dirs: list[Path]) -> list[dict]:
    """One point per (table, strategy) of every continual.json under `dirs`."""
    points = []
    for root in dirs:
        for path in sorted(Path(root).rglob("continual.json")):
            report = json.loads(path.read_text())
            for s in report["strategies"]:
                if "just_learnt" not in s:  # a table written before plasticity was measured
                    continue
                points.append({"strategy": s["name"], "setting": _setting(path.parent, Path(root)),
                               "table": str(path.parent), "seeds": len(report["seeds"]),
                               "forgetting_max": s["forgetting_max"]["mean"],
                               "forgetting_std": s["forgetting_max"]["std"],
                               "just_learnt": s["just_learnt"]["mean"], "just_learnt_std": s["just_learnt"]["std"],
                               "final_avg": s["final_avg"]["mean"]})
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


PAIRS = [("k1-ewc", "tree-ewc"), ("k1-ewc", "random-path-ewc"), ("k1-attribution", "random-path"),
         ("k1-attribution", "tree-naive"), ("k1-freeze", "random-path-freeze"), ("k1-route", "random-path-route")]


def by_strategy(points: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["strategy"], []).append(p)
    return out


def plot(points: list[dict]):
    from k1.report.plots import new_figure

    fig = new_figure((8.0, 5.2))
    ax = fig.add_subplot()
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    for i, (name, pts) in enumerate(by_strategy(points).items()):
        pts = sorted(pts, key=lambda p: p["forgetting_max"])
        line = ax.plot([p["forgetting_max"] for p in pts], [p["just_learnt"] for p in pts], label=name,
                       marker="osD^v<>ph*"[i % 10], color=colours[(2 * i) % 20 + (i // 10) % 2])
        for p in pts:
            ax.annotate(p["setting"].split("=")[-1], (p["forgetting_max"], p["just_learnt"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=line[0].get_color())
    ax.set_xlabel("max-based forgetting, bits per byte (lower is better)")
    ax.set_ylabel("just-learnt bits per byte (lower is better)")
    ax.set_title("Stability–plasticity frontier: each point a table's mean; labels: the swept value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_frontier(dirs: list[Path], out: Path) -> dict:
    """frontier.json, frontier.png and frontier.html in `out` from every table under `dirs`."""
    from k1.report.html import CSS, esc, figure, table

    points = collect(dirs)
    groups = by_strategy(points)
    verdicts = [{"frontier": a, "over": b, "dominates": dominates(groups[a], groups[b])}
                for a, b in PAIRS if a in groups and b in groups]
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
             "the swept setting. A strategy is better than another only where its frontier dominates.</p>"),
            figure("frontier", fig, "Forgetting against just-learnt bits per byte, per strategy."),
            table(["frontier", "over", "dominates"], [[v["frontier"], v["over"], "yes" if v["dominates"] else "no"]
                                                      for v in verdicts], left=2),
            table(["strategy", "setting", "seeds", "forgetting (max)", "just-learnt bpb", "final avg", "table"],
                  rows, left=2),
            f"<p>Read from: {esc(', '.join(str(d) for d in dirs))}</p></section></main></body></html>"]
    write_atomic(out / "frontier.html", "\n".join(page))
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-3].strip() if __doc__ else "")
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
    print(f"{len(result['points'])} points; wrote {(out or dirs[0]) / 'frontier.png'} and frontier.html")
    for v in result["dominance"]:
        print(f"{v['frontier']} dominates {v['over']}: {'yes' if v['dominates'] else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
