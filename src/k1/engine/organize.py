"""`Organizer`: runs the safety rails and the autonomy loop at the trainer's one point between steps.

Per step it only accumulates device tensors (`observe`). At log intervals it checks for non-finite or
spiking losses (one host sync) and rolls back to the last snapshot with a learning-rate cut. After each
evaluation it snapshots a healthy model and applies the self-stop rule. Every `check_every` steps in
phase 2 it diagnoses, proposes, and trials one proposal:

    snapshot S0 → train k steps (control) → held-out loss L_c → snapshot C
    restore S0, same batches → apply the change → train k steps → held-out loss L_x
    gain = (L_c − L_x) / L_c
    allowed action: commit if gain ≥ −gate_threshold;  boundary break: commit only if gain ≥ ε
    otherwise restore C — the control branch's progress is kept, so no committed progress is lost.
"""

from __future__ import annotations

import logging
import math

import torch

from k1.engine.autonomy import Autonomy, AutonomyConfig, Proposal, Window, diagnose
from k1.engine.level import AgentLevel
from k1.engine.plasticity import extract, grow, merge, prune, reorganize
from k1.engine.safety import SafetyConfig, SnapshotRing, all_finite
from k1.errors import ConfigError

log = logging.getLogger(__name__)


class Organizer:
    def __init__(self, trainer, acfg: AutonomyConfig, scfg: SafetyConfig):
        self.t, self.acfg, self.scfg = trainer, acfg, scfg
        self.autonomy = Autonomy(acfg) if acfg.enabled else None
        disk = trainer.out_dir / "snapshots" if scfg.on_disk else None
        self.ring = SnapshotRing(scfg.ring, disk) if scfg.enabled else None
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.loss_ema: float | None = None
        self.val_history: list[float] = []
        self.counts = {"rollbacks": 0, "commits": 0, "trial_rollbacks": 0, "breaks_tried": 0}
        self._reset_window()

    # ---- per step: device tensors only ---------------------------------------------------------
    def observe(self, r) -> None:
        if self.ring is not None:
            self.pending.append((r.loss, r.grad_norm))
        if self.autonomy is None:
            return
        self.w_sel += r.plan.selected.float()
        if r.plan.path is not None:
            culprit = r.plan.path[-1]
        else:  # no blame path: the leaf with the largest gradient
            culprit = torch.where(self._leaf_mask, r.signals.grad_rms, -1.0).argmax()
        self.w_culprit.index_add_(0, culprit.view(1), torch.ones(1, device=culprit.device))
        self.w_grads.append(r.signals.grad_rms)
        self.w_losses.append(r.loss)
        self.w_gnorms.append(r.grad_norm)

    def _reset_window(self) -> None:
        A, dev = self.t.shape.n_agents, self.t.device
        self.w_sel, self.w_culprit = torch.zeros(A, device=dev), torch.zeros(A, device=dev)
        self.w_grads, self.w_losses, self.w_gnorms = [], [], []
        self._leaf_mask = torch.tensor(self.t.shape.is_leaf(), device=dev)

    # ---- safety ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.ring is not None and len(self.ring) == 0:
            self.ring.push(self.t.capture("start"))

    def check_safety(self) -> None:
        if self.ring is None or not self.pending:
            return
        vals = torch.stack([torch.stack([a.float(), b.float()]) for a, b in self.pending]).tolist()  # host sync
        self.pending = []
        losses = [v[0] for v in vals]
        bad = next((x for x in losses if not math.isfinite(x)), None)
        spike = (self.loss_ema is not None and bad is None
                 and max(losses) > self.scfg.spike_factor * self.loss_ema)
        if bad is not None or spike or not all(math.isfinite(v[1]) for v in vals):
            reason = "non-finite loss" if bad is not None else ("loss spike" if spike else "non-finite gradient")
            self.rollback(reason, {"max_loss": max(losses) if bad is None else str(bad), "loss_ema": self.loss_ema})
            return
        for x in losses:
            self.loss_ema = x if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * x

    def reset_loss_baseline(self) -> None:
        """Forget the loss EMA (e.g. when the data distribution changes on purpose, as in `k1 continual`)."""
        self.loss_ema = None
        self.pending = []

    def rollback(self, reason: str, measured: dict) -> None:
        snap = self.ring.latest()
        self.t.restore_snapshot(snap, reset_step=False)
        self.t.lr_scale = max(self.acfg.lr_scale_bounds[0], self.t.lr_scale * self.scfg.lr_cut)
        self.counts["rollbacks"] += 1
        self.pending = []
        self._reset_window()
        self.t.emit({"kind": "rollback", "reason": reason, "restored_step": snap.step,
                     "lr_scale": self.t.lr_scale, **measured})

    def after_eval(self, metrics: dict) -> None:
        val = metrics["val_loss"]
        if self.ring is not None and math.isfinite(val) and all_finite(self.t.model):
            self.ring.push(self.t.capture("eval"))
        if self.autonomy is None:
            return
        if self.autonomy.phase == 1 and self.t.step >= self.acfg.phase2_step:
            self.autonomy.phase = 2
            self.t.emit({"kind": "phase2", "reason": "step"})
        prev = self.val_history[-1] if self.val_history else None
        self.val_history.append(val)
        gain = 0.0 if prev is None else (prev - val) / max(abs(prev), 1e-12)
        if self.autonomy.observe_eval(val, gain):
            self.t.stop_requested = True
            self.t.emit({"kind": "self_stop", "val_loss": val, "best_val": self.autonomy.best_val,
                         "patience": self.autonomy.patience, "min_delta": self.autonomy.min_delta,
                         "evals_without_improvement": self.autonomy.evals_since_best})

    # ---- autonomy ---------------------------------------------------------------------------------
    def maybe_act(self, step: int) -> None:
        a = self.autonomy
        if a is None or step % self.acfg.check_every or self.t.stop_requested or not self.w_losses:
            return
        if step + self.acfg.trial_steps > self.t.cfg.train.steps:
            return  # no room left for a trial inside the step budget
        w = self._window()
        diag = diagnose(w, self.t.shape.names(), self.acfg)
        self.t.emit({"kind": "diagnostics", "stage": a.stage, "phase": a.phase, **diag})
        if a.phase == 1 and (step >= self.acfg.phase2_step or (self.acfg.phase2_on_plateau and diag["plateau"])):
            a.phase = 2
            self.t.emit({"kind": "phase2", "reason": "plateau" if step < self.acfg.phase2_step else "step"})
        if a.phase == 2:
            knobs = {"lr_scale": self.t.lr_scale, "top_k": self.t.policy.k}
            props = a.propose(diag, w, self.t.shape, knobs, self._affinity())
            self.t.emit({"kind": "proposals", "stage": a.stage,
                         "proposals": [{"action": p.action, "reason": p.reason, "allowed": a.allows(p.action)}
                                       for p in props]})
            # the most pressing allowed action, and the most pressing forbidden one as a boundary break
            allowed = next((p for p in props if a.allows(p.action)), None)
            forbidden = next((p for p in props if not a.allows(p.action)), None)
            for p in (allowed, forbidden)[: self.acfg.max_trials_per_check]:
                if p is not None and self.t.step + self.acfg.trial_steps <= self.t.cfg.train.steps:
                    self.trial(p)
        self._reset_window()

    def _window(self) -> Window:
        losses = torch.stack(self.w_losses).float().tolist()  # host sync (check point)
        gnorms = torch.stack(self.w_gnorms).float().tolist()
        ok = [i for i, x in enumerate(losses) if math.isfinite(x)]
        return Window([losses[i] for i in ok], [gnorms[i] for i in ok if math.isfinite(gnorms[i])],
                      self.w_sel.cpu(), self.w_culprit.cpu(), torch.stack(self.w_grads).float().cpu(),
                      self.t.trust.trust.float().cpu())

    def _affinity(self) -> dict | None:
        """The child whose best alternative parent beats its own by the widest margin."""
        x, _ = self.t.trial_batches()[0]
        aff = self.t.model.gate_affinity(x.to(self.t.device))
        shape, best = self.t.shape, None
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

    def trial(self, p: Proposal) -> None:
        t, a = self.t, self.autonomy
        boundary = not a.allows(p.action)
        s0, data0 = t.capture("trial"), t.sampler.state_dict()
        before = t.trial_loss()
        t.train_quiet(self.acfg.trial_steps)
        control, c_snap, data1 = t.trial_loss(), t.capture("control"), t.sampler.state_dict()
        t.restore_snapshot(s0, reset_step=True)
        t.sampler.load_state_dict(data0)
        try:
            detail = self.apply(p)
        except ConfigError as e:  # the proposal is not a valid operation on this tree
            t.restore_snapshot(c_snap, reset_step=True)
            t.sampler.load_state_dict(data1)
            t.emit({"kind": "trial", "action": p.action, "reason": p.reason, "decision": "invalid", "error": str(e)})
            return
        t.train_quiet(self.acfg.trial_steps)
        after = t.trial_loss()
        gain = (control - after) / max(abs(control), 1e-12)
        commit = gain >= self.acfg.break_epsilon if boundary else gain >= -self.scfg.gate_threshold
        if not commit:
            t.restore_snapshot(c_snap, reset_step=True)
        t.sampler.load_state_dict(data1)  # both branches drew the same batches
        self.counts["commits" if commit else "trial_rollbacks"] += 1
        self.counts["breaks_tried"] += int(boundary)
        t.emit({"kind": "trial", "action": p.action, "reason": p.reason, "boundary_break": boundary,
                "decision": "commit" if commit else "rollback", "held_out_before": before,
                "held_out_control": control, "held_out_with_change": after, "rel_gain": gain,
                "agents": t.shape.n_agents, **detail})
        if boundary:
            new_stage = a.record_break(commit)
            if new_stage:
                t.emit({"kind": "stage", "stage": new_stage, "successful_breaks": a.successful_breaks})

    def apply(self, p: Proposal) -> dict:
        t = self.t
        if p.action == "tune":
            old = {"lr_scale": t.lr_scale, "top_k": t.policy.k}
            t.lr_scale = p.args["lr_scale"]
            if p.args.get("top_k") is not None:
                t.policy.k = min(p.args["top_k"], t.shape.n_agents)
            return {"from": old, "to": {"lr_scale": t.lr_scale, "top_k": t.policy.k}}
        rows = extract(t.model, t.optimizer)
        shape, cfg = t.shape, t.cfg.model
        if p.action == "grow":
            s = grow(shape, rows, p.args["parent"], lambda kind, n: AgentLevel(
                kind, n, cfg.width, cfg.mlp_width, cfg.n_heads, depth=shape.n_levels).to(t.device))
        elif p.action == "prune":
            s = prune(shape, rows, p.args["agent"], min_agents=self.acfg.agent_bounds[0])
        elif p.action == "merge":
            s = merge(shape, rows, p.args["keep"], p.args["drop"])
        elif p.action == "reorganize":
            s = reorganize(shape, rows, p.args["agent"], p.args["parent"])
        else:
            raise ConfigError(f"unknown action {p.action!r}")
        t.apply_surgery(s)
        self._reset_window()
        return {"surgery": s.op, **s.detail}

    def state_dict(self) -> dict:
        """JSON-able state for checkpoints: counters, loss baseline, validation history, autonomy stage."""
        a = self.autonomy
        return {"counts": self.counts, "loss_ema": self.loss_ema, "val_history": self.val_history,
                "autonomy": None if a is None else {k: getattr(a, k) for k in (
                    "stage", "successful_breaks", "phase", "best_val", "evals_since_best", "patience", "min_delta")}}

    def load_state_dict(self, state: dict) -> None:
        self.counts.update(state.get("counts", {}))
        self.loss_ema, self.val_history = state.get("loss_ema"), state.get("val_history", [])
        if self.autonomy is not None and state.get("autonomy"):
            for k, v in state["autonomy"].items():
                setattr(self.autonomy, k, v)
        self._reset_window()  # the tree may have been rebuilt to the checkpoint's shape

    def summary(self) -> dict:
        out = {"safety": dict(self.counts)}
        if self.autonomy is not None:
            out["autonomy"] = {"stage": self.autonomy.stage, "successful_breaks": self.autonomy.successful_breaks,
                               "phase": self.autonomy.phase}
        return out
