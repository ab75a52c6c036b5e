"""The attribution tree of one logged step: per agent RMS gradient, update scale and its role.

Roles: `culprit` (end of the blame path), `path` (on the blame path), `selected` (updated, off the path),
`untouched` (scale 0: bit-identical after the step). Reads `attribution.jsonl` and `shape.json` of a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from k1.engine.model.shape import TreeShape
from k1.errors import CheckpointError

MARKS = {"culprit": "★", "path": "→", "selected": "+", "untouched": "·"}


def load_step(run_dir: Path, step: int | None = None) -> dict:
    path = run_dir / "attribution.jsonl"
    if not path.is_file():
        raise CheckpointError(f"no attribution log at {path}; is {run_dir} a k1 run directory?")
    last = None
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "event" in row or "trial" in row:  # events, and trial-branch steps (they reuse step numbers)
                continue
            if step is None or row["step"] == step:
                last = row
                if step is not None:
                    break
    if last is None:
        raise CheckpointError(f"{path}: no record for step {step}" if step else f"{path} is empty")
    return last


def load_events(run_dir: Path) -> list[dict]:
    """Structural, safety and autonomy events of a run (without the per-check diagnostics)."""
    path = run_dir / "attribution.jsonl"
    if not path.is_file():
        return []
    rows = (json.loads(line) for line in open(path) if '"event"' in line)
    return [r for r in rows if "event" in r and r["event"] not in ("diagnostics", "proposals")]


def render_events(events: list[dict]) -> str:
    """One line per event: structural changes, rollbacks, stage history, self-stop."""
    if not events:
        return "events: none (structure and stage never changed in this run)"
    lines = ["events:"]
    for e in events:
        kind = e["event"]
        if kind == "trial":
            what = e.get("surgery") or e["action"]
            target = e.get("agent") or e.get("child") or e.get("keep") or e.get("to") or ""
            gain = f"gain {e['rel_gain']:+.4f}" if "rel_gain" in e else e.get("error", "")
            brk = " (boundary break)" if e.get("boundary_break") else ""
            lines.append(f"  step {e['step']:>5}  {e['decision']:<8} {what} {target}{brk}: {gain}")
        elif kind == "stage":
            lines.append(f"  step {e['step']:>5}  stage → {e['stage']} after {e['successful_breaks']} successful breaks")
        elif kind == "rollback":
            lines.append(f"  step {e['step']:>5}  rollback ({e['reason']}) to step {e['restored_step']}, "
                         f"lr scale {e['lr_scale']}")
        else:
            rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "step"))
            lines.append(f"  step {e['step']:>5}  {kind} {rest}")
    return "\n".join(lines)


def load_shape(run_dir: Path, step: int | None = None) -> TreeShape:
    """The tree as it was during `step` (shapes.jsonl history), else the current shape.json."""
    history = run_dir / "shapes.jsonl"
    if step is not None and history.is_file():
        shape = None
        for line in open(history):
            row = json.loads(line)
            if row["step"] < step or shape is None:
                shape = row["shape"]
        if shape is not None:
            return TreeShape.from_dict(shape)
    path = run_dir / "shape.json"
    if not path.is_file():
        raise CheckpointError(f"missing {path}; is {run_dir} a k1 run directory?")
    return TreeShape.from_dict(json.loads(path.read_text()))


def step_tree(run_dir: str | Path, step: int | None = None) -> dict:
    """A JSON-able description of one step: agents with grad, scale, role and children."""
    run_dir = Path(run_dir)
    row = load_step(run_dir, step)
    shape = load_shape(run_dir, row["step"])
    path = row.get("blame_path") or []
    culprit = path[-1] if path else None
    names = {a.id: a.name for a in shape.agents}
    agents = []
    for i, a in enumerate(shape.agents):
        scale = row["scale"].get(a.name, 0.0)
        role = ("culprit" if a.name == culprit else "path" if a.name in path
                else "selected" if scale > 0 else "untouched")
        agents.append({"name": a.name, "id": a.id, "level": a.level, "parent": names.get(a.parent),
                       "grad_rms": row["grad_rms"][i], "gate_mass": row["gate_mass"][i],
                       "scale": scale, "role": role})
    return {"step": row["step"], "policy": row["policy"], "loss": row["loss"], "blame_path": path,
            "events": load_events(run_dir),
            "params_changed": row["params_changed"], "frac_params_changed": row["frac_params_changed"],
            "agents": agents}


def tree_rows(agents: list[dict]) -> list[tuple[str, dict]]:
    """(indented label, agent) in depth-first order, drawn with the same branches as `k1 explain`."""
    by_parent: dict[str | None, list[dict]] = {}
    for a in agents:
        by_parent.setdefault(a["parent"], []).append(a)
    rows: list[tuple[str, dict]] = []

    def walk(a: dict, prefix: str, last: bool, top: bool) -> None:
        rows.append((f"{prefix}{'' if top else ('└─ ' if last else '├─ ')}{a['name']}", a))
        kids = by_parent.get(a["name"], [])
        for j, k in enumerate(kids):
            walk(k, prefix + ("" if top else ("   " if last else "│  ")), j == len(kids) - 1, False)

    for root in by_parent.get(None, []):
        walk(root, "", True, True)
    return rows


def render_text(tree: dict) -> str:
    """An indented text tree, one agent per line, then the blame-path line."""
    lines = [f"step {tree['step']}  policy {tree['policy']}  loss {tree['loss']:.4f}  "
             f"params changed {tree['params_changed']:,} ({tree['frac_params_changed']:.2%})",
             f"{'agent':<28} {'grad_rms':>10} {'gate':>7} {'scale':>6}  role"]
    for label, a in tree_rows(tree["agents"]):
        lines.append(f"{label:<28} {a['grad_rms']:>10.3e} {a['gate_mass']:>7.3f} {a['scale']:>6.2f}  "
                     f"{MARKS[a['role']]} {a['role']}")
    path = tree["blame_path"]
    lines.append("blame path: " + (" → ".join(path) if path else "(none: this policy has no blame path)"))
    lines.append(render_events(tree.get("events", [])))
    return "\n".join(lines)
