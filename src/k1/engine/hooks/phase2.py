"""`AutonomyHook`: phase 2. Accumulates the measurement window each step; every `check_every` steps it
diagnoses, emits the diagnostics and proposals, and requests a trial of the most pressing allowed action
and of the most pressing forbidden one (a boundary break). After evaluations it switches to phase 2 and
applies the self-stop rule. The window and the stage book-keeping live in `state.autonomy`."""

from __future__ import annotations

from k1.engine.hooks.base import Hook
from k1.engine.hooks.requests import Event, Stop, Trial
from k1.engine.selforg.autonomy import diagnose


class AutonomyHook(Hook):
    def on_step_end(self, state, r):
        if r.trial is None:
            state.autonomy.observe(r)

    def on_eval(self, state, step, metrics):
        a, acfg, out = state.autonomy, state.cfg.autonomy, []
        val = metrics["val_loss"]
        if a.phase == 1 and state.step >= acfg.phase2_step:
            a.phase = 2
            out.append(Event({"kind": "phase2", "reason": "step"}))
        prev = a.val_history[-1] if a.val_history else None
        a.val_history.append(val)
        gain = 0.0 if prev is None else (prev - val) / max(abs(prev), 1e-12)
        if a.observe_eval(val, gain):
            out.append(Stop("self_stop", {"val_loss": val, "best_val": a.best_val, "patience": a.patience,
                                          "min_delta": a.min_delta, "evals_without_improvement": a.evals_since_best}))
        return out

    def on_check(self, state, step):
        a, acfg = state.autonomy, state.cfg.autonomy
        if step % acfg.check_every or state.stop_requested or not a.w_losses:
            return None
        if step + acfg.trial_steps > state.stage_end:
            return None  # no room left for a trial inside this stage's step budget
        w = a.window(state.trust.trust)
        diag = diagnose(w, state.agent_names, acfg)
        out = [Event({"kind": "diagnostics", "stage": a.stage, "phase": a.phase, **diag})]
        if a.phase == 1 and (step >= acfg.phase2_step or (acfg.phase2_on_plateau and diag["plateau"])):
            a.phase = 2
            out.append(Event({"kind": "phase2", "reason": "plateau" if step < acfg.phase2_step else "step"}))
        if a.phase == 2:
            knobs = {"lr_scale": state.lr_scale, "top_k": state.policy.k}
            props = a.propose(diag, w, state.shape, knobs, _affinity(state))
            out.append(Event({"kind": "proposals", "stage": a.stage, "proposals": [
                {"action": p.action, "reason": p.reason, "allowed": a.allows(p.action)} for p in props]}))
            allowed = next((p for p in props if a.allows(p.action)), None)
            forbidden = next((p for p in props if not a.allows(p.action)), None)
            out += [Trial(p, boundary_break=p is forbidden)
                    for p in (allowed, forbidden)[: acfg.max_trials_per_check] if p is not None]
        a.reset_window(state.shape)
        return out


def _affinity(state) -> dict | None:
    """The child whose best alternative parent beats its own by the widest margin."""
    x, _ = state.tune_sets[state.trial_domains[0]][0]  # the first window trials judge on
    aff = state.model.gate_affinity(x.to(state.device))
    shape, best = state.shape, None
    offs, parents = shape.level_offsets(), shape.flat_parents()
    for lv, m in aff.items():  # m: [N_{l-1}, N_l]
        for i in range(m.shape[1]):
            flat = offs[lv] + i
            own = parents[flat] - offs[lv - 1]
            if len(shape.children(shape.agents[parents[flat]].id)) < 2:
                continue  # moving an only child would leave a dangling parent
            alt = int(m[:, i].argmax())
            gain = float(m[alt, i] - m[own, i])
            if alt != own and (best is None or gain > best["gain"]):
                best = {"agent": shape.agents[flat].id, "agent_name": shape.agents[flat].name,
                        "parent": shape.agents[offs[lv - 1] + alt].id,
                        "parent_name": shape.agents[offs[lv - 1] + alt].name, "gain": gain}
    return best
