"""Page assembly for `k1 report`: read a run, compare or continual directory and write one HTML file.

The page is self-contained (CSS inline, plots as PNG data URIs, no script, no external URL). A section
appears when its data exists; a section whose data is absent is one line saying what is missing and how
to produce it. The figures themselves live in `plots.py`.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from k1 import __version__
from k1.common.files import write_atomic
from k1.common.load import under_load_note
from k1.engine.model.shape import TreeShape
from k1.engine.run.rundir import RunDir
from k1.errors import CheckpointError, K1Error
from k1.report import plots

log = logging.getLogger(__name__)

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header, main { max-width: 1040px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 24px; } h1 { margin: 0 0 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
.meta { color: #666; margin: 0 0 8px; } nav ol { columns: 2; margin: 8px 0; }
section { background: #fff; border: 1px solid #e4e4e4; border-radius: 6px; padding: 4px 20px 16px; margin: 18px 0; }
figure.plot { margin: 12px 0; } figure.plot img { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
.absent { color: #8a5a00; background: #fff7e0; border-left: 3px solid #e0a800; padding: 6px 10px; }
table { border-collapse: collapse; font-size: 13px; margin: 10px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; line-height: 1.3; }
code { background: #f0f0f0; padding: 0 3px; }
"""


# ---- HTML primitives --------------------------------------------------------------------------------
@dataclass
class Section:
    key: str  # stable id (anchor and data-section)
    title: str
    parts: list[str] = field(default_factory=list)

    def html(self) -> str:
        return (f'<section id="{self.key}" data-section="{self.key}">\n<h2>{esc(self.title)}</h2>\n'
                + "\n".join(self.parts) + "\n</section>")


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def figure(key: str, fig, caption: str) -> str:
    """A plot element tests can find: <figure class="plot" data-plot=KEY> holding one embedded PNG."""
    return (f'<figure class="plot" data-plot="{esc(key)}"><img src="{plots.to_data_uri(fig)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def absent(key: str, text: str) -> str:
    """One plain line for a section whose data does not exist (never a fake or empty plot)."""
    return f'<p class="absent" data-absent="{esc(key)}">{text}</p>'


def table(head: list[str], rows: list[list], left: int = 1) -> str:
    """A table; the first `left` columns are text (left-aligned), the rest numbers."""
    cls = lambda j: ' class="l"' if j < left else ""
    out = ["<table><thead><tr>" + "".join(f"<th{cls(j)}>{esc(h)}</th>" for j, h in enumerate(head)) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td{cls(j)}>{esc(v)}</td>" for j, v in enumerate(r)) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def fmt(v, spec: str = ".4f") -> str:
    if v is None:
        return "—"
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


# ---- reading a run directory --------------------------------------------------------------------------
def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); rewrite or remove it") from None


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d: skipped a line that is not JSON (an interrupted write?)", path, n)
    return rows


@dataclass
class RunLog:
    """Everything a run directory logged, read once."""

    dir: Path
    train: list[dict]  # metrics.jsonl kind=train (log intervals)
    evals: list[dict]  # metrics.jsonl kind=eval
    steps: list[dict]  # attribution.jsonl per-step rows, one per step (the last written wins after a rollback)
    events: list[dict]  # structural, safety and autonomy events ({"event": kind, "step", ...})
    summary: dict | None
    shapes: list[tuple[int, list[str]]]  # (step after which the shape applies, flat agent names)

    def names_at(self, step: int, n: int) -> list[str] | None:
        """Agent names in flat order during `step`, if the shape history has a tree of `n` agents then."""
        best = None
        for s, names in self.shapes:
            if s < step or best is None:
                best = names
        if best is not None and len(best) == n:
            return best
        return None

    def agent_union(self) -> list[str]:
        """Every agent the tree had during a logged step, in order of first appearance.

        Shapes tried in a rolled-back trial never trained a logged step, so their agents are left out.
        """
        names: dict[str, None] = {}
        for r in self.steps:
            names.update(dict.fromkeys(self.names_at(r["step"], len(r["grad_rms"])) or []))
            names.update(dict.fromkeys(r.get("selected", [])))
        if not names and self.shapes:
            names.update(dict.fromkeys(self.shapes[-1][1]))
        return list(names)


def load_run(run_dir: Path) -> RunLog:
    run = RunDir(run_dir)
    metrics = read_jsonl(run / RunDir.METRICS)
    attribution = read_jsonl(run / RunDir.ATTRIBUTION)
    by_step = {r["step"]: r for r in attribution if "event" not in r and "trial" not in r}  # the main line
    summary = read_json(run / RunDir.SUMMARY_JSON) if (run / RunDir.SUMMARY_JSON).is_file() else None
    events = [r for r in attribution if "event" in r]
    if not events and summary:
        events = [{"event": e["kind"], **{k: v for k, v in e.items() if k != "kind"}} for e in summary.get("events", [])]
    events = [e for e in events if e["event"] not in ("diagnostics", "proposals")]
    shapes = [(r["step"], TreeShape.from_dict(r["shape"]).names()) for r in read_jsonl(run / RunDir.SHAPES)]
    if not shapes and (run / RunDir.SHAPE).is_file():
        shapes = [(0, TreeShape.from_dict(read_json(run / RunDir.SHAPE)).names())]
    return RunLog(run_dir, [r for r in metrics if r.get("kind") == "train" and "trial" not in r],
                  [r for r in metrics if r.get("kind") == "eval"], [by_step[s] for s in sorted(by_step)],
                  events, summary, shapes)


def is_run_dir(d: Path) -> bool:
    return RunDir(d).has_logs()


# ---- a run ------------------------------------------------------------------------------------------
def run_sections(run: RunLog) -> list[Section]:
    return [_summary(run), _losses(run), _params(run), _selection(run), _trust(run), _events(run), _tree(run),
            _specialisation(run.dir)]


def _summary(run: RunLog) -> Section:
    sec = Section("summary", "Run summary")
    s = run.summary
    if not s:
        sec.parts.append(absent("summary", f"no summary.json in <code>{esc(run.dir)}</code>: the run has not "
                                           "finished (or was interrupted); the sections below come from its logs."))
        return sec
    rows = [["name", s.get("name")], ["policy", s.get("policy")], ["architecture", s.get("arch")],
            ["steps", s.get("steps")], ["parameters", fmt(s.get("params"), ",")],
            ["agents (start → end)", f"{s.get('agents')} → {s.get('final_agents')}"],
            ["validation loss (nats/token)", fmt(s.get("val_loss"))], ["validation bits/byte", fmt(s.get("val_bpb"), ".3f")],
            *[[f"  {d} bits/byte", fmt(v.get("bpb"), ".3f")] for d, v in (s.get("domains") or {}).items()],
            ["training tokens/s", fmt(s.get("tokens_per_s"), ",.0f")],
            ["parameters changed per step", fmt(s.get("frac_params_changed"), ".2%")],
            ["agents updated per step", fmt(s.get("agents_updated"), ".2f")],
            ["stopped early (self-stop)", s.get("stopped_early")]]
    sec.parts.append(table(["quantity", "value"], rows, left=2))
    return sec


def _losses(run: RunLog) -> Section:
    sec = Section("loss-curves", "Loss curves per domain")
    if run.steps:
        train, label = [(r["step"], r["loss"]) for r in run.steps if r.get("finite", True)], "train (every step)"
    else:
        train, label = [(r["step"], r["loss"]) for r in run.train], "train (log interval)"
    if not train and not run.evals:
        sec.parts.append(absent("loss-curves", "no training or evaluation rows: metrics.jsonl and attribution.jsonl "
                                               "are missing or empty."))
        return sec
    sec.parts.append(figure("loss-curves", plots.loss_curves(train, run.evals, label),
                            "Training loss on each step's batch and validation loss / bits per byte per domain "
                            "at each evaluation (fixed validation windows)."))
    if not run.evals:
        sec.parts.append(absent("eval", "no evaluation rows in metrics.jsonl: only the training loss is shown."))
    return sec


def _params(run: RunLog) -> Section:
    sec = Section("params-changed", "Fraction of parameters changed per step")
    if not run.steps:
        sec.parts.append(absent("params-changed", "no attribution.jsonl: run with the <code>attribution</code> "
                                                  "recorder to log which parameters change at each step."))
        return sec
    fig = plots.params_changed([r["step"] for r in run.steps], [r["frac_params_changed"] for r in run.steps],
                               [len(r.get("selected", [])) for r in run.steps], [len(r["grad_rms"]) for r in run.steps])
    mean = sum(r["frac_params_changed"] for r in run.steps) / len(run.steps)
    sec.parts.append(figure("params-changed", fig, f"Share of all parameters the optimizer changed at each step "
                                                   f"(mean {mean:.2%}); agents not selected stay bit-identical."))
    return sec


def selection_matrix(run: RunLog) -> tuple[list[str], list[int], np.ndarray]:
    """[A, S] over every agent the run had: 1 updated at that step, 0 not updated, NaN not in the tree."""
    names = run.agent_union()
    index = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(run.steps)))
    for j, r in enumerate(run.steps):
        alive = run.names_at(r["step"], len(r["grad_rms"]))
        if alive is not None:
            m[:, j] = np.nan
            m[[index[n] for n in alive], j] = 0.0
        m[[index[n] for n in r.get("selected", [])], j] = 1.0
    return names, [r["step"] for r in run.steps], m


def trust_matrix(run: RunLog) -> tuple[list[str], list[int], np.ndarray]:
    """[A, S] trust after each step that logged one (rows carrying `trust`); NaN where unknown."""
    rows = [r for r in run.steps if r.get("trust") is not None]
    names = run.agent_union()
    index = {n: i for i, n in enumerate(names)}
    m = np.full((len(names), len(rows)), np.nan)
    for j, r in enumerate(rows):
        alive = run.names_at(r["step"], len(r["trust"]))
        if alive is not None:  # else a tree whose names cannot be matched to this step: a blank column
            m[[index[n] for n in alive], j] = r["trust"]
    return names, [r["step"] for r in rows], m


def _selection(run: RunLog) -> Section:
    sec = Section("selection", "Agent selection over time")
    if not run.steps:
        sec.parts.append(absent("selection", "no attribution.jsonl: agent selections were not logged."))
        return sec
    reshaped = len({tuple(ns) for _, ns in run.shapes}) > 1
    sec.parts.append(figure("selection-heatmap", plots.selection_heatmap(*selection_matrix(run)),
                            "Which agents each step updated (rows: every agent the run ever had"
                            + (", including agents added or removed when the tree was reshaped" if reshaped else "")
                            + ")."))
    return sec


def _trust(run: RunLog) -> Section:
    sec = Section("trust", "Trust over time")
    if not any(r.get("trust") is not None for r in run.steps):
        sec.parts.append(absent("trust", "trust is not logged per step in this run's attribution.jsonl "
                                         "(no <code>trust</code> field), so no trust curve is drawn."))
        return sec
    sec.parts.append(figure("trust", plots.trust_heatmap(*trust_matrix(run)),
                            "Trust of each agent after each step (0–1, earned from the loss change after its "
                            "updates), with the mean, minimum and maximum across agents."))
    return sec


def _events(run: RunLog) -> Section:
    sec = Section("events", "Structural and autonomy events")
    if not run.events:
        source = RunDir.ATTRIBUTION if (run.dir / RunDir.ATTRIBUTION).is_file() else RunDir.SUMMARY_JSON
        sec.parts.append(absent("events", f"no structural, safety or autonomy events in this run ({source} has none: "
                                          "no trial, stage change, rollback, self-stop or phase 2)."))
        return sec
    last = run.steps[-1]["step"] if run.steps else (run.summary or {}).get("steps")
    sec.parts.append(figure("events-timeline", plots.events_timeline(run.events, last),
                            "Each event at the step it happened; trials by action, coloured by decision."))
    rows = []
    for e in run.events:
        shown = ("event", "step", "decision", "action", "surgery", "reason", "rel_gain")
        details = ", ".join(f"{k}={fmt(v, '.4g')}" for k, v in e.items()
                            if k not in shown and not isinstance(v, (dict, list)))
        what = e.get("surgery") or e.get("action") or e.get("stage") or ""
        rows.append([e["step"], e["event"], what, e.get("decision", ""), fmt(e.get("rel_gain"), "+.2e"),
                     e.get("reason", ""), details])
    sec.parts.append(table(["step", "event", "what", "decision", "rel. gain", "reason", "details"], rows, left=7))
    return sec


def _tree(run: RunLog) -> Section:
    from k1.explain.step_tree import render_text, step_tree

    sec = Section("attribution-tree", "Attribution tree of the last step")
    try:
        text = render_text(step_tree(run.dir))
    except K1Error as e:
        sec.parts.append(absent("attribution-tree", f"no attribution tree: {esc(e)}"))
        return sec
    sec.parts.append(f'<pre data-tree="last">{esc(text)}</pre>')
    return sec


def _specialisation(run_dir: Path) -> Section:
    sec = Section("specialisation", "Specialisation of agents to domains")
    path = RunDir(run_dir) / RunDir.SPECIALIZE
    if not path.is_file():
        sec.parts.append(absent("specialisation", "no specialisation measured: run "
                                                  f"<code>k1 specialize --run {esc(run_dir)}</code>."))
        return sec
    try:
        return _specialisation_parts(sec, read_json(path))
    except (K1Error, KeyError, IndexError, TypeError, ValueError) as e:
        sec.parts = [absent("specialisation", f"<code>{esc(path)}</code> does not match the specialize.json schema "
                                              f"({esc(repr(e))}); rerun <code>k1 specialize --run {esc(run_dir)}</code>.")]
        return sec


def _specialisation_parts(sec: Section, s: dict) -> Section:
    domains, agents = s["domains"], s["agents"]
    sec.parts.append(figure("specialization-ablation", plots.heatmap(
        s["ablation_dloss"], agents, domains, "Loss increase when the agent is ablated", "Δ loss (nats/token)",
        diverging=True, xlabel="domain", ylabel="agent"),
        "Validation loss change per domain when each agent is removed (red: the agent helps that domain)."))
    sec.parts.append(figure("specialization-gate", plots.heatmap(
        s["gate_share"], agents, domains, "Gate share per domain", "share of gate mass",
        xlabel="domain", ylabel="agent"), "Mean routing weight each agent receives on each domain's text."))
    order = sorted(range(len(agents)), key=lambda i: -(s["score"][i] if s["score"][i] is not None else -1e9))
    rows = [[agents[i], s["specialist_domain"][i] or "—", fmt(s["score"][i]),
             f"[{fmt(s['ci_low'][i])}, {fmt(s['ci_high'][i])}]", fmt(s["p_value"][i], ".3g")] for i in order[:10]]
    sec.parts.append("<p>Top specialists (highest specialisation score first):</p>"
                     + table(["agent", "specialist domain", "score", "95% CI", "p-value"], rows, left=2))
    return sec


# ---- a compare directory ------------------------------------------------------------------------------
def compare_sections(d: Path) -> list[Section]:
    data = read_json(d / "compare.json")
    if isinstance(data, list):  # written before compare.json became an object: rows only
        data = {"rows": data}
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "policy" in r for r in rows):
        raise CheckpointError(f"{d / 'compare.json'}: expected an object whose 'rows' each have a 'policy'; "
                              "rewrite it with `k1 compare`")
    domains = list(rows[0].get("domains", {})) if rows else []
    tab = Section("compare-table", "Compare: every row on the same data, seed and budget")
    body = [[r["policy"], r.get("model", ""), fmt(r.get("val_loss")), fmt(r.get("val_bpb"), ".3f"),
             *[fmt(r.get("domains", {}).get(x, {}).get("bpb"), ".3f") for x in domains],
             fmt(r.get("tokens_per_s"), ",.0f") + ("*" if r.get("under_load") else ""),
             fmt(r.get("frac_params_changed"), ".2%"), f"{fmt(r.get('agents_updated'), '.1f')}/{r.get('agents', '—')}",
             fmt(r.get("params"), ",")] for r in rows]
    uni = data.get("unigram")
    if uni:
        body.append(["unigram entropy", "—", "—", fmt(uni.get("val_bpb"), ".3f"),
                     *[fmt(uni.get("domains", {}).get(x), ".3f") for x in domains], "—", "—", "—", "—"])
    tab.parts.append(table(
        ["policy", "model", "val loss", "val bpb", *[f"{x} bpb" for x in domains], "tokens/s",
         "params changed/step", "agents/step", "params"], body, left=2))

    tab.parts.append(f"<p>{esc(under_load_note(rows))} {_compare_provenance(data)}</p>")
    runs = {r["policy"]: load_run(d / r["policy"]) for r in rows if is_run_dir(d / r["policy"])}
    missing = [r["policy"] for r in rows if r["policy"] not in runs]
    curves = Section("compare-curves", "Validation curves, every row overlaid")
    changed = Section("compare-params", "Parameters changed per step, every row")
    if missing:
        note = absent("compare-runs", "no run logs for " + ", ".join(f"<code>{esc(m)}</code>" for m in missing)
                      + f" (expected run directories under <code>{esc(d)}</code>).")
        curves.parts.append(note)
        changed.parts.append(note)
    evals = {k: [(e["step"], e) for e in r.evals] for k, r in runs.items() if r.evals}
    if evals:
        panels = [("mean over domains", "")] + [(x, x) for x in domains]
        curves.parts.append(figure("compare-val-curves", plots.overlaid_curves(
            evals, panels, "Validation bits per byte (lower is better)", "bits/byte", "bpb"),
            "Validation bits per byte at each evaluation, mean and per domain, one line per row"
            + _identical_note(evals) + "."))
        curves.parts.append(figure("compare-train-loss", plots.train_loss_overlay(
            {k: [(t["step"], t["loss"]) for t in r.train] for k, r in runs.items()}),
            "Training loss at each log interval, one line per row."))
    elif not missing:
        curves.parts.append(absent("compare-val-curves", "the rows' metrics.jsonl hold no evaluation rows."))
    per_step = {k: [(s["step"], s["frac_params_changed"]) for s in r.steps] for k, r in runs.items()}
    means = {r["policy"]: r["frac_params_changed"] for r in rows if r.get("frac_params_changed") is not None}
    if any(per_step.values()) or means:
        changed.parts.append(figure("compare-params-changed", plots.params_changed_overlay(per_step, means),
                                    "Share of all parameters changed at each step (log scale) and its mean per row."))
    return [tab, curves, changed]


def _identical_note(evals: dict) -> str:
    """Name the rows whose curves are exactly another row's, so a line drawn on top is not taken as missing."""
    same = plots.same_as(evals)
    if not same:
        return ""
    return ("; " + ", ".join(f"{a} is identical to {b}" for a, b in same.items())
            + " (same loss at every evaluation), drawn over it with its own dashes and markers")


def _compare_provenance(data: dict) -> str:
    """The run's setting and versions, and the warning that tokens/s measures the machine's load too."""
    parts = []
    if data.get("seed") is not None:
        parts.append(f"seed {esc(data['seed'])}")
    if data.get("preset"):
        parts.append(f"preset <code>{esc(data['preset'])}</code>")
    if data.get("threads"):
        parts.append(f"{esc(data['threads'])} thread{'' if data['threads'] == 1 else 's'}")
    if data.get("wall_s") is not None:
        parts.append(f"{fmt(data['wall_s'], '.0f')} s wall")
    v = data.get("versions") or {}
    parts += [f"{name} {esc(v[key])}" for key, name in (("torch", "torch"), ("python", "Python"), ("k1", "k1"))
              if v.get(key)]
    run = ("This run: " + ", ".join(parts) + ". ") if parts else ""
    return (run + "Tokens/s depends on the machine and its load: another job on the same cores can slow a row "
            "many times over, so compare tokens/s only between rows of one quiet run.")


# ---- a continual directory ------------------------------------------------------------------------------
def continual_sections(d: Path) -> list[Section]:
    try:
        return _continual(read_json(d / "continual.json"))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / 'continual.json'}: does not match the continual.json schema ({e!r}); "
                              "rerun `k1 continual` to rewrite it") from None


def _continual(c: dict) -> list[Section]:
    domains, metric = c["domains"], c.get("metric", "bpb")
    setup = Section("continual-setup", "Continual learning: setup")
    setup.parts.append(f"<p>Domains trained in order {' → '.join(esc(x) for x in domains)}, "
                       f"{esc(c.get('steps_per_domain', '?'))} steps each, seeds {esc(c.get('seeds', '?'))}. "
                       f"R[i][j] is the validation {esc(metric)} on domain j after training stage i "
                       "(lower is better); cells show mean ± std over seeds.</p>")
    mats = Section("continual-matrix", f"Continual matrix R ({metric}) per strategy")
    names = ["final_avg", "bwt", "forgetting_first", "forgetting_max", "fwt"]
    rows, bars = [], {}
    every = np.concatenate([np.asarray(s["R"]["mean"], dtype=float).ravel() for s in c["strategies"]] or [np.zeros(1)])
    limits = (float(np.nanmin(every)), float(np.nanmax(every))) if np.isfinite(every).any() else None
    for s in c["strategies"]:
        mean, std = np.asarray(s["R"]["mean"], dtype=float), np.asarray(s["R"]["std"], dtype=float)
        labels = _stage_labels(len(mean), domains)
        notes = [[f"{m:.3f}\n±{sd:.3f}" for m, sd in zip(mr, sr)] for mr, sr in zip(mean, std)]
        mats.parts.append(figure(f"continual-{s['name']}", plots.heatmap(
            mean, labels, domains, f"{s['name']}: {metric} after each stage", f"{metric} (lower is better)",
            annotate=notes, xlabel="evaluated on domain", ylabel="after training stage", limits=limits),
            f"Strategy {s['name']}: the R matrix, mean ± std over seeds (one colour scale for every strategy)."))
        spec = s.get("strong_specialists")
        rows.append([s["name"], *[_pm(s.get(n)) for n in names], _pct(s.get("frac_params_changed")),
                     _sci(s.get("train_flops")), "—" if not spec else f"{spec['mean']:.1f} ± {_std(spec):.1f}"])
        bars[s["name"]] = ([_mean(s.get(n)) for n in names], [_std(s.get(n)) for n in names])
    table_sec = Section("continual-metrics", "Continual-learning metrics")
    table_sec.parts.append(table(["strategy", "final avg", "BWT", "forgetting (first)", "forgetting (max)", "FWT",
                                  "params changed/step", "training FLOPs", "strong specialists"], rows, left=1))
    if c.get("paired"):
        table_sec.parts.append("<p>Paired over seeds: candidate − reference per seed (negative: the candidate is "
                               "lower, i.e. better); p from a two-sided paired sign-flip permutation test.</p>")
        table_sec.parts.append(table(
            ["candidate − reference", "metric", "seeds", "mean diff ± std", "seeds candidate lower", "p"],
            [[f"{x['candidate']} − {x['reference']}", x["metric"], str(x["seeds"]),
              f"{x['mean_diff']:+.3f} ± {x['std_diff']:.3f}", f"{x['candidate_better']}/{x['seeds']}",
              f"{x['p_value']:.4f}"] for x in c["paired"]], left=2))
    table_sec.parts.append(figure("continual-metrics", plots.grouped_bars(
        ["final avg", "BWT", "forget. first", "forget. max", "FWT"], bars,
        f"Continual-learning metrics ({metric}), mean ± std over seeds", metric),
        "Final average, backward transfer, forgetting and forward transfer per strategy."))
    return [setup, mats, table_sec]


def _stage_labels(n: int, domains: list[str]) -> list[str]:
    if n == len(domains):
        return [f"after {x}" for x in domains]
    if n == len(domains) + 1:
        return ["before training"] + [f"after {x}" for x in domains]
    return [f"stage {i}" for i in range(n)]


def _mean(m) -> float:
    return float("nan") if not m or m.get("mean") is None else m["mean"]


def _std(m) -> float:
    return 0.0 if not m or m.get("std") is None else m["std"]


def _pct(m) -> str:
    return "—" if not m or m.get("mean") is None else f"{m['mean']:.1%}"


def _sci(m) -> str:
    return "—" if not m or m.get("mean") is None else f"{m['mean']:.3g}"


def _pm(m) -> str:
    return "—" if not m or m.get("mean") is None else f"{m['mean']:.4f} ± {_std(m):.4f}"


# ---- the page -----------------------------------------------------------------------------------------
def build_report(d: Path) -> str:
    """The whole page for directory `d` (run, compare or continual; a directory may be more than one)."""
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such directory; pass a run, compare or continual directory")
    sections, kinds = [], []
    if (d / "compare.json").is_file():
        kinds.append("compare")
        sections += compare_sections(d)
    if (d / "continual.json").is_file():
        kinds.append("continual")
        sections += continual_sections(d)
    if is_run_dir(d):
        kinds.append("run")
        sections += run_sections(load_run(d))
    if not kinds:
        raise CheckpointError(f"{d}: no metrics.jsonl, attribution.jsonl, compare.json or continual.json; "
                              "pass a run, compare or continual directory")
    title = f"K-1 {' + '.join(kinds)} report: {d.resolve().name}"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<li><a href="#{s.key}">{esc(s.title)}</a></li>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{esc(title)}</h1>\n"
            f'<p class="meta">{esc(shown_path(d))} · generated {when} by k1 {__version__}</p>\n'
            f"<nav><ol>{nav}</ol></nav>\n</header>\n<main>\n"
            + "\n".join(s.html() for s in sections) + "\n</main>\n</body>\n</html>\n")


def shown_path(d: Path) -> Path:
    """The directory as the user named it; an absolute path shows only its last part (no home folder leaks)."""
    return Path(d.resolve().name) if d.is_absolute() else d


def write_report(dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `dir` to `out` (default `dir/report.html`) and return its path."""
    d = Path(dir)
    page = build_report(d)
    path = Path(out) if out is not None else d / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, page)
    log.info("wrote %s (%.0f KiB)", path, len(page) / 1024)
    return path
