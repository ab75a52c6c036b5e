"""Human-readable event lines for the console (the JSONL logs keep full precision), e.g.

    step 120  trial 3  prune n3.a1.s2  held-out 2.712 → 2.705  commit
"""

from __future__ import annotations


def fmt(v) -> str:
    """Numbers to 4 significant digits; everything else as text."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _target(e: dict) -> str:
    for key in ("agent_name", "parent_name", "kept", "dropped", "new", "agent", "parent"):
        if key in e:
            return f" {e[key]}"
    return ""


def format_event(e: dict) -> str:
    kind, head = e.get("kind", "event"), f"step {e.get('step', '?')}"
    if kind == "trial":
        if e.get("decision") == "invalid":
            return f"{head}  trial {e.get('trial')}  {e.get('action')}  invalid ({e.get('error')})"
        what = e.get("action", "?")
        if what == "tune":
            what += f" lr×{fmt(e.get('to', {}).get('lr_scale'))} top-k {e.get('to', {}).get('top_k')}"
        else:
            what += _target(e)
        brk = "  boundary break" if e.get("boundary_break") else ""
        return (f"{head}  trial {e.get('trial')}  {what}{brk}  held-out {fmt(e.get('held_out_control'))} → "
                f"{fmt(e.get('held_out_with_change'))}  {e.get('decision')}")
    if kind == "rollback":
        return (f"{head}  rollback ({e.get('reason')})  restored step {e.get('restored_step')}  "
                f"lr scale {fmt(e.get('lr_scale'))}")
    if kind == "self_stop":
        return f"{head}  self-stop  val {fmt(e.get('val_loss'))} (best {fmt(e.get('best_val'))})"
    if kind == "stage":
        return f"{head}  autonomy stage {e.get('stage')} ({e.get('successful_breaks')} successful breaks)"
    if kind == "phase2":
        return f"{head}  phase 2 ({e.get('reason')})"
    if kind == "diagnostics":
        flags = [k for k in ("plateau", "unstable", "grad_explosion") if e.get(k)]
        return (f"{head}  diagnostics  dead {len(e.get('dead', []))}  gini {fmt(e.get('gini'))}  "
                f"top {e.get('top_agent')}" + (f"  {' '.join(flags)}" if flags else ""))
    if kind == "proposals":
        props = ", ".join(p["action"] + ("" if p.get("allowed") else "*") for p in e.get("proposals", []))
        return f"{head}  proposals: {props or 'none'}  (* = boundary break)"
    rest = "  ".join(f"{k} {fmt(v)}" for k, v in e.items()
                     if k not in ("step", "kind") and not isinstance(v, (dict, list)))
    return f"{head}  {kind}  {rest}".rstrip()
