"""The report's figures: plain data in, a matplotlib `Figure` out, and `to_data_uri` to embed it as PNG.

No file reading and no HTML here (that is `html.py`). Figures are built on `matplotlib.figure.Figure` with
the Agg canvas, never through pyplot, so no global figure state and no display is involved.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

WIDE = (10.0, 3.8)  # inches; at 100 dpi a figure fills the 1000 px page column
DECISION_STYLE = {  # trial decision → (colour, marker)
    "commit": ("#2a9d46", "^"), "rollback": ("#d62728", "v"), "invalid": ("#7f7f7f", "x"), None: ("#1f77b4", "o"),
}


def new_figure(size: tuple[float, float] = WIDE) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure, dpi: int = 100) -> str:
    """The figure as a `data:image/png;base64,...` URI (the page stays one self-contained file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # no tool URL inside the PNG
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---- one run ----------------------------------------------------------------------------------------
def loss_curves(train: list[tuple[int, float]], evals: list[dict], train_label: str) -> Figure:
    """Left: training loss and per-domain validation loss (nats/token); right: validation bits per byte.

    evals: rows of metrics.jsonl with kind "eval" ({"step", "val_loss", "val_bpb", "domains": {d: {loss, bpb}}}).
    """
    fig = new_figure()
    ax_loss, ax_bpb = fig.subplots(1, 2)
    if train:
        s, v = zip(*train)
        ax_loss.plot(s, v, color="#999999", lw=1, label=train_label)
    domains = sorted({d for e in evals for d in e.get("domains", {})})
    steps = [e["step"] for e in evals]
    for d in domains:
        pts = [(e["step"], e["domains"][d]) for e in evals if d in e.get("domains", {})]
        ax_loss.plot([p[0] for p in pts], [p[1]["loss"] for p in pts], marker="o", ms=3, label=f"val {d}")
        ax_bpb.plot([p[0] for p in pts], [p[1]["bpb"] for p in pts], marker="o", ms=3, label=d)
    if evals:
        ax_loss.plot(steps, [e["val_loss"] for e in evals], color="black", ls="--", marker="s", ms=3, label="val mean")
        ax_bpb.plot(steps, [e["val_bpb"] for e in evals], color="black", ls="--", marker="s", ms=3, label="mean")
    else:
        ax_bpb.text(0.5, 0.5, "no evaluation rows", ha="center", va="center", transform=ax_bpb.transAxes)
    ax_loss.set(title="Loss", xlabel="step", ylabel="cross-entropy (nats/token)")
    ax_bpb.set(title="Validation bits per byte (lower is better)", xlabel="step", ylabel="bits/byte")
    for ax in (ax_loss, ax_bpb):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def params_changed(steps: list[int], frac: list[float], n_selected: list[int], n_agents: list[int]) -> Figure:
    """Fraction of all parameters the optimizer changed at each step, and how many agents it updated."""
    fig = new_figure()
    ax_frac, ax_n = fig.subplots(1, 2)
    ax_frac.plot(steps, [100 * f for f in frac], lw=1, color="#1f77b4")
    ax_frac.set(title="Parameters changed per step", xlabel="step", ylabel="% of all parameters",
                ylim=(0, max(5.0, 105 * max(frac, default=0))))
    ax_n.step(steps, n_selected, where="mid", lw=1, label="updated")
    ax_n.step(steps, n_agents, where="mid", lw=1, color="#999999", ls="--", label="agents in the tree")
    ax_n.set(title="Agents updated per step", xlabel="step", ylabel="agents", ylim=(0, max(n_agents, default=1) + 1))
    ax_n.legend(fontsize=8)
    for ax in (ax_frac, ax_n):
        ax.grid(alpha=0.3)
    return fig


def _agent_axis(ax, names: list[str]) -> None:
    every = max(1, math.ceil(len(names) / 40))  # at most ~40 readable labels
    ax.set_yticks(range(0, len(names), every), names[::every], fontsize=7)


def selection_heatmap(names: list[str], steps: list[int], selected: np.ndarray) -> Figure:
    """selected: [A, S] with 1 = updated, 0 = not updated, NaN = the agent did not exist at that step."""
    fig = new_figure((10.0, 1.6 + 0.22 * len(names)))
    ax = fig.subplots()
    cmap = ListedColormap(["#f4f4f4", "#1f4e9c"]).with_extremes(bad="#c8c8c8")
    ax.imshow(np.ma.masked_invalid(selected), aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1,
              extent=(steps[0] - 0.5, steps[-1] + 0.5, len(names) - 0.5, -0.5))
    _agent_axis(ax, names)
    ax.set(title="Agents selected for update (dark: updated, light: untouched, grey: not in the tree)",
           xlabel="step", ylabel="agent")
    return fig


def trust_heatmap(names: list[str], steps: list[int], trust: np.ndarray) -> Figure:
    """trust: [A, S] trust in [0, 1] after each step; NaN where the agent did not exist."""
    fig = new_figure((10.0, 1.8 + 0.22 * len(names)))
    ax_map, ax_mean = fig.subplots(2, 1, height_ratios=[max(2, len(names) * 0.22), 1.4], sharex=True)
    cmap = colormaps["viridis"].with_extremes(bad="#c8c8c8")
    im = ax_map.imshow(np.ma.masked_invalid(trust), aspect="auto", interpolation="nearest", cmap=cmap,
                       vmin=0, vmax=1, extent=(steps[0] - 0.5, steps[-1] + 0.5, len(names) - 0.5, -0.5))
    _agent_axis(ax_map, names)
    ax_map.set(title="Trust per agent (grey: not in the tree)", ylabel="agent")
    fig.colorbar(im, ax=ax_map, label="trust (0–1)", fraction=0.03)
    with np.errstate(all="ignore"):
        ax_mean.plot(steps, np.nanmean(trust, axis=0), label="mean")
        ax_mean.plot(steps, np.nanmin(trust, axis=0), lw=0.8, ls="--", label="min")
        ax_mean.plot(steps, np.nanmax(trust, axis=0), lw=0.8, ls="--", label="max")
    ax_mean.set(xlabel="step", ylabel="trust", ylim=(0, 1))
    ax_mean.legend(fontsize=7, ncols=3)
    ax_mean.grid(alpha=0.3)
    return fig


def events_timeline(events: list[dict], last_step: int | None) -> Figure:
    """One row per event kind (trials split by action); colour and marker give a trial's decision."""
    labels = []
    for e in events:
        label = _event_label(e)
        if label not in labels:
            labels.append(label)
    fig = new_figure((10.0, 1.4 + 0.35 * len(labels)))
    ax = fig.subplots()
    seen = set()
    for e in events:
        decision = e.get("decision") if e.get("decision") in DECISION_STYLE else None
        colour, marker = DECISION_STYLE[decision]
        legend = decision or "event"
        ax.scatter([e["step"]], [labels.index(_event_label(e))], color=colour, marker=marker, s=45, zorder=3,
                   label=None if legend in seen else legend)
        seen.add(legend)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    if last_step:
        ax.set_xlim(0, last_step + 1)
    ax.set(title="Structural, safety and autonomy events", xlabel="step")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _event_label(e: dict) -> str:
    if e["event"] == "trial":
        return f"trial: {e.get('surgery') or e.get('action', '?')}"
    return e["event"]


# ---- grids ------------------------------------------------------------------------------------------
def heatmap(values, rows: list[str], cols: list[str], title: str, colorbar: str, *, diverging: bool = False,
            annotate: list[list[str]] | None = None, xlabel: str = "", ylabel: str = "",
            limits: tuple[float, float] | None = None) -> Figure:
    """A labelled [rows × cols] grid; `diverging` centres the colours on 0 (e.g. Δloss from an ablation);
    `limits` fixes the colour range (one scale shared by several grids)."""
    v = np.asarray(values, dtype=float)
    fig = new_figure((max(5.0, 1.6 + 0.9 * len(cols)), 1.6 + 0.32 * len(rows)))
    ax = fig.subplots()
    norm = None
    if diverging and np.isfinite(v).any():
        bound = max(float(np.nanmax(np.abs(v))), 1e-12)
        norm = TwoSlopeNorm(0.0, -bound, bound)
    vmin, vmax = limits if limits is not None and norm is None else (None, None)
    im = ax.imshow(np.ma.masked_invalid(v), aspect="auto", interpolation="nearest",
                   cmap="RdBu_r" if diverging else "viridis", norm=norm, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=30 if len(cols) > 4 else 0, ha="right" if len(cols) > 4 else "center")
    ax.set_yticks(range(len(rows)), rows, fontsize=8 if len(rows) > 12 else 9)
    if annotate is not None and len(rows) * len(cols) <= 120:
        for i, row in enumerate(annotate):
            for j, text in enumerate(row):
                level = float(im.norm(v[i, j])) if np.isfinite(v[i, j]) else 0.5
                dark = level < 0.6 if not diverging else abs(level - 0.5) > 0.35  # light text on dark cells
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=colorbar, fraction=0.05)
    return fig


def grouped_bars(groups: list[str], series: dict[str, tuple[list[float], list[float]]], title: str,
                 ylabel: str) -> Figure:
    """Bars per group, one colour per series, with ± std error bars: series name → (means, stds)."""
    fig = new_figure((max(6.0, 1.5 + 1.2 * len(groups)), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, (means, stds)) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, groups)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---- several runs -----------------------------------------------------------------------------------
LINE_STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "x", "P", "*"]


def line_style(i: int, n_points: int) -> dict:
    """The i-th run's line: its own (line style, marker) pair; on long lines the markers are staggered.

    Two runs can draw exactly the same curve (k1-auto whose trials all rolled back is attribution); with a
    colour alone the later line hides the earlier one, with its own dashes and staggered markers both show.
    """
    # markevery as fractions of the axes diagonal: a marker each tenth, each run's started a little later
    spacing = 0.1
    every = (spacing * (i % len(MARKERS)) / len(MARKERS), spacing) if n_points > 12 else None
    return {"ls": LINE_STYLES[i % len(LINE_STYLES)], "marker": MARKERS[i % len(MARKERS)], "ms": 4,
            "markevery": every, "lw": 1.2}


def same_as(series: dict[str, list]) -> dict[str, str]:
    """label → the first earlier label whose points are exactly equal (non-empty series only)."""
    out: dict[str, str] = {}
    labels = list(series)
    for j, label in enumerate(labels):
        for earlier in labels[:j]:
            if series[label] and series[label] == series[earlier] and earlier not in out:
                out[label] = earlier
                break
    return out


def legend_label(label: str, same: dict[str, str]) -> str:
    return f"{label} (= {same[label]})" if label in same else label


def overlaid_curves(series: dict[str, list[tuple[int, dict]]], panels: list[tuple[str, str]], title: str,
                    ylabel: str, key: str) -> Figure:
    """One panel per (panel title, domain or "" for the mean); one line per run label.

    series: label → [(step, eval row)]; `key` is "bpb" or "loss".
    """
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = new_figure((10.0, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    same = same_as(series)
    for ax, (panel, domain) in zip(axes, panels):
        for i, (label, pts) in enumerate(series.items()):
            xs = [s for s, e in pts if not domain or domain in e.get("domains", {})]
            ys = [(e[f"val_{key}"] if not domain else e["domains"][domain][key]) for s, e in pts
                  if not domain or domain in e.get("domains", {})]
            ax.plot(xs, ys, label=legend_label(label, same), **line_style(i, len(xs)))
        ax.set(title=panel, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def train_loss_overlay(series: dict[str, list[tuple[int, float]]]) -> Figure:
    fig = new_figure()
    ax = fig.subplots()
    same = same_as(series)
    for i, (label, pts) in enumerate(series.items()):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=legend_label(label, same),
                    **line_style(i, len(pts)))
    ax.set(title="Training loss (per logged step)", xlabel="step", ylabel="cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def params_changed_overlay(series: dict[str, list[tuple[int, float]]], means: dict[str, float]) -> Figure:
    """Left: % of parameters changed at each step per run (log scale); right: the mean per run."""
    fig = new_figure()
    ax_steps, ax_mean = fig.subplots(1, 2, width_ratios=[2, 1])
    same = same_as(series)
    for i, (label, pts) in enumerate(series.items()):
        if pts:
            ax_steps.plot([p[0] for p in pts], [100 * p[1] for p in pts], label=legend_label(label, same),
                          **line_style(i, len(pts)))
    ax_steps.set_yscale("log")
    percent = FuncFormatter(lambda v, _: f"{v:g}%")
    ax_steps.yaxis.set_major_formatter(percent)
    ax_steps.yaxis.set_minor_formatter(percent)
    ax_steps.tick_params(axis="y", which="minor", labelsize=7)
    ax_steps.set(title="Parameters changed per step", xlabel="step", ylabel="% of all parameters (log scale)")
    ax_steps.grid(alpha=0.3, which="both")
    if ax_steps.get_legend_handles_labels()[0]:
        ax_steps.legend(fontsize=8)
    labels = list(means)
    ax_mean.barh(range(len(labels)), [100 * means[k] for k in labels], color="#1f77b4")
    ax_mean.set_yticks(range(len(labels)), labels, fontsize=8)
    ax_mean.invert_yaxis()
    ax_mean.set(title="Mean over the run", xlabel="% of all parameters per step")
    ax_mean.grid(axis="x", alpha=0.3)
    return fig
