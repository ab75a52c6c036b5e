"""The run summary: `summary.json` (numbers and every event) and `summary.md` (the same, for reading)."""

from __future__ import annotations

from k1.engine.hooks.events import fmt


def run_summary(st) -> dict:
    steps_run = max(st.step, 1)
    ev, rec = st.record.last_eval, st.record
    return {
        "name": st.cfg.name, "policy": st.cfg.policy.name, "arch": st.cfg.arch, "steps": st.step,
        "steps_executed": rec.steps_executed, "params": st.total_params, "agents": rec.initial_agents,
        "train_flops": st.train_flops.item(),  # counted from the model's shapes, trial branches included
        **{k: ev.get(k) for k in ("val_loss", "val_bpb")}, "domains": ev.get("domains", {}),
        "tokens_per_s": rec.train_tokens / rec.train_time if rec.train_time else None,
        "frac_params_changed": st.progress.frac_changed.item() / steps_run,  # host sync (end)
        "agents_updated": st.progress.agents.item() / steps_run,
        "final_agents": st.shape.n_agents, "stopped_early": st.stop_requested, "events": rec.events,
        "safety": dict(st.safety.counts),
        **({"autonomy": {"stage": st.autonomy.stage, "successful_breaks": st.autonomy.successful_breaks,
                         "phase": st.autonomy.phase}} if st.cfg.autonomy.enabled else {}),
    }


def summary_markdown(s: dict) -> str:
    """A readable run summary: final numbers, then every structural, safety and autonomy event."""
    lines = [f"# Run summary: {s['name']}", "",
             f"- policy `{s['policy']}`, {s['steps']} steps ({s.get('steps_executed', s['steps'])} executed, "
             f"trial branches included), {s['params']:,} parameters, "
             f"agents {s['agents']} at the start, {s['final_agents']} at the end",
             f"- validation loss {s['val_loss']:.4f}, bits per byte {s['val_bpb']:.3f}",
             f"- parameters changed per step: {s['frac_params_changed']:.1%}; agents updated per step: "
             f"{s['agents_updated']:.2f}", f"- stopped early (self-stop): {s['stopped_early']}",
             f"- safety: {s.get('safety')}", f"- autonomy: {s.get('autonomy', 'off')}", ""]
    shown = [e for e in s["events"] if e["kind"] not in ("diagnostics", "proposals")]
    if not shown:
        lines.append("No structural, safety or autonomy events happened in this run.")
    else:
        lines += ["| step | event | details |", "|---|---|---|"]
        for e in shown:
            det = ", ".join(f"{k}={fmt(v)}" for k, v in e.items() if k not in ("step", "kind"))
            lines.append(f"| {e['step']} | {e['kind']} | {det} |")
    kinds = {(e["kind"], e.get("decision")) for e in s["events"]}
    checks = {"committed change": ("trial", "commit") in kinds, "rolled-back change": ("trial", "rollback") in kinds
              or any(e["kind"] == "rollback" for e in s["events"]),
              "stage advance": any(e["kind"] == "stage" for e in s["events"]), "self-stop": s["stopped_early"]}
    lines += ["", "What this run exercised. An unticked item did not happen in this run; the scenarios in "
              "tests/engine/test_autonomy.py and tests/engine/test_safety.py trigger each of them on purpose:", ""]
    lines += [f"- [{'x' if v else ' '}] {k}" for k, v in checks.items()]
    return "\n".join(lines) + "\n"
