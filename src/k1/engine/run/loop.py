"""The loop: `run(state, stages, hooks)` — the one training loop of `k1 train`, `k1 compare` and
`k1 continual`.

Per step:

    batch → train_step(state) → hooks.on_step_end → [evaluate when due → hooks.on_eval]
          → hooks.on_check → [checkpoint when due]

Hooks return requests (`k1.engine.hooks.requests`); `apply` carries each out and records it as an event. A
phase-2 trial is a request the loop executes itself: train `trial_steps` on a control branch, restore,
apply the change, train the same batches, judge both on held-out data, commit or roll back to the control
branch. Trial steps go through the same `train_step` and reach the recorders keyed by (step, trial, branch).
A stage is a step budget (continual runs have one per domain); a run is a list of stages.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from k1 import __version__
from k1.engine.config import save_config
from k1.data import BatchSampler
from k1.engine.selforg.actions import ACTIONS
from k1.engine.run.checkpoint import prune_checkpoints, save_checkpoint
from k1.engine.hooks.events import format_event
from k1.engine.hooks.record import RunInfo
from k1.engine.hooks.requests import Event, Evaluate, PushSnapshot, Rollback, Stop, Trial, UseSampler
from k1.engine.run.step import train_step
from k1.engine.run.summary import run_summary, summary_markdown
from k1.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """Train until `state.step == end`. `domains`: train on these (a fresh sampler at the stage's start);
    None keeps the current sampler. `trial_domains`: what trials judge on (None: every domain).
    `eval_every`: None → the config's; 0 → only at the stage's end."""

    name: str
    end: int
    index: int = 0
    domains: list[str] | None = None
    trial_domains: list[str] | None = None
    eval_every: int | None = None


def run(state, stages: list[Stage], hooks: list, out_dir: Path | None = None, final_checkpoint: bool = True) -> dict:
    """Train `state` through `stages` under `hooks`; write the run directory (when given); → summary.
    `final_checkpoint=False`: no full checkpoint at the end (hooks may write their own)."""
    return Loop(state, hooks, out_dir, final_checkpoint).run(stages)


class Loop:
    """The loop's machinery: `run(stages)`, and the pieces it is made of — `step`, `evaluate`, `apply`,
    `trial` — public so tests and experiments can drive a run one piece at a time."""

    def __init__(self, state, hooks, out_dir, final_checkpoint=True):
        self.state, self.hooks, self.final_checkpoint = state, list(hooks), final_checkpoint
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._t0, self._tokens = time.perf_counter(), 0
        self._handlers = {Evaluate: self._evaluate, PushSnapshot: self._push, Rollback: self._rollback,
                          Stop: self._stop, Trial: self._trial, Event: lambda r: self.emit(r.data),
                          UseSampler: self._use_sampler}

    # ---- hooks and requests ---------------------------------------------------------------------------
    def notify(self, method: str, *args) -> list:
        out = []
        for h in self.hooks:
            got = getattr(h, method, lambda *a: None)(self.state, *args)
            out += got or []
        return out

    def apply(self, requests) -> None:
        for req in requests or []:
            self._handlers[type(req)](req)

    def emit(self, event: dict) -> None:
        """Record a structural, safety or autonomy event (logged, summarised, shown by `k1 explain`)."""
        event = {"step": self.state.step, **event}
        self.state.record.events.append(event)
        log.info("%s", format_event(event))
        self.notify("on_event", event)

    # ---- the run ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Write the run directory's config and shape; hooks see the run start (a resume too)."""
        st, cfg = self.state, self.state.cfg
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not (self.out_dir / "config.toml").exists():
                save_config(cfg, self.out_dir / "config.toml")
        st.write_shape(self.out_dir)
        info = RunInfo(self.out_dir, st.agent_names, st.total_params, cfg.train.steps, cfg.policy.name, st.step,
                       list(st.corpus.domains))
        self.apply(self.notify("on_train_start", info))
        st.model.train()

    def run(self, stages: list[Stage]) -> dict:
        st = self.state
        self.start()
        try:
            for stage in stages:
                if st.stop_requested:
                    break
                if stage.index < st.record.stage or (stage.index == st.record.stage and st.step >= stage.end):
                    continue  # finished before a resume
                self._stage(stage)
        except KeyboardInterrupt:  # never lose work: checkpoint where we are, then let the CLI say so
            self.save()
            raise
        if st.record.last_eval.get("step") != st.step:  # trials may have moved past the last scheduled point
            self.apply([Evaluate()])
        if self.final_checkpoint and self.out_dir is not None \
                and not (self.out_dir / "checkpoints" / f"step-{st.step}").exists():
            self.save()
        summary = run_summary(st)
        if self.out_dir is not None:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            (self.out_dir / "summary.md").write_text(summary_markdown(summary))
        self.notify("on_train_end", summary)
        return summary

    def _stage(self, stage: Stage) -> None:
        st, tcfg = self.state, self.state.cfg.train
        st.stage_end = stage.end
        st.trial_domains = list(stage.trial_domains or st.eval_sets)
        resumed = st.record.stage == stage.index and st.record.stage_started
        if not resumed:
            st.record.stage, st.record.stage_started = stage.index, True
            if stage.domains is not None:
                B, T = tcfg.batch_size * st.dist.world, st.cfg.model.context
                st.sampler = BatchSampler(st.corpus, B, T, seed=tcfg.seed, domains=list(stage.domains))
            self.apply(self.notify("on_stage_start", stage))
        eval_every = tcfg.eval_every if stage.eval_every is None else stage.eval_every
        self._t0, self._tokens = time.perf_counter(), 0
        while st.step < stage.end and not st.stop_requested:
            step = st.step + 1
            log_due = step % tcfg.log_every == 0 or step == stage.end
            self.step(log_due)
            # ---- the one point between steps where structure, schedule and state may change ----
            if (eval_every and step % eval_every == 0) or step == tcfg.steps:
                self.evaluate()
            self.apply(self.notify("on_check", step))
            if (tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0) or st.stop_requested:
                self.save()
            if log_due:
                self._t0, self._tokens = time.perf_counter(), 0  # evals, trials, saves are not training time
        if st.record.last_eval.get("step") != st.step:
            self.apply([Evaluate()])
        self.apply(self.notify("on_stage_end", stage, st.record.last_eval))

    def step(self, log_due: bool = False):
        """One training step on the current sampler; hooks see its result and their requests are applied."""
        st = self.state
        x, y = st.next_batch()
        r = train_step(st, x, y, log_due, self.notify("loss_terms"))
        self._tokens += r.tokens
        if log_due:
            if st.device.type == "cuda":
                torch.cuda.synchronize()  # timing needs finished kernels
            dt = time.perf_counter() - self._t0
            st.record.train_time += dt
            st.record.train_tokens += self._tokens
            r = replace(r, tokens_per_s=self._tokens / max(dt, 1e-9))
        self.apply(self.notify("on_step_end", r))
        return r

    def evaluate(self) -> dict:
        self.apply([Evaluate()])
        return self.state.record.last_eval

    def trial(self, proposal, boundary_break: bool = False) -> None:
        self.apply([Trial(proposal, boundary_break)])

    # ---- request handlers ---------------------------------------------------------------------------------
    def _evaluate(self, _req) -> None:
        st = self.state
        st.record.last_eval = {**st.evaluate(), "step": st.step}
        self.apply(self.notify("on_eval", st.step, st.record.last_eval))

    def _push(self, req: PushSnapshot) -> None:
        st = self.state
        if not st.cfg.safety.enabled:
            return
        snap = st.snapshot(req.reason)
        st.ring.push(snap)
        if st.cfg.safety.on_disk and self.out_dir is not None:  # the ring mirrored under <run>/snapshots/
            save_checkpoint(self.out_dir / "snapshots" / f"step-{snap['at_step']}", snap["model"],
                            {k: v for k, v in snap.items() if k != "model"})

    def _rollback(self, req: Rollback) -> None:
        st = self.state
        snap = st.ring.latest()
        if snap is None:
            return
        shape = st.shape
        st.restore(snap, undo_steps=False)
        st.lr_scale = max(st.cfg.autonomy.lr_scale_bounds[0], st.lr_scale * st.cfg.safety.lr_cut)
        st.safety.counts["rollbacks"] += 1
        st.safety.pending = []
        st.autonomy.reset_window(st.shape)
        if st.shape != shape:
            st.write_shape(self.out_dir)
        self.emit({"kind": "rollback", "reason": req.reason, "restored_step": snap["at_step"],
                   "lr_scale": st.lr_scale, **req.measured})

    def _stop(self, req: Stop) -> None:
        self.state.stop_requested = True
        self.emit({"kind": req.reason, **req.measured})

    def _use_sampler(self, req: UseSampler) -> None:
        self.state.sampler = req.sampler

    def _branch(self, trial: int, branch: str) -> None:
        st = self.state
        for _ in range(st.cfg.autonomy.trial_steps):
            x, y = st.next_batch()
            r = train_step(st, x, y, True, self.notify("loss_terms"), trial=trial, branch=branch)
            self.notify("on_step_end", r)  # recorders only: the rails and autonomy ignore trial steps

    def _trial(self, req: Trial) -> None:
        st, a, acfg = self.state, self.state.autonomy, self.state.cfg.autonomy
        if st.step + acfg.trial_steps > st.stage_end or st.stop_requested:
            return  # no room left for a trial inside this stage
        p, boundary = req.proposal, not a.allows(req.proposal.action)
        counts = st.safety.counts
        counts["trials"] += 1
        tid, shape0 = counts["trials"], st.shape
        s0, data0 = st.snapshot("trial"), st.sampler.state_dict()
        before = st.trial_loss()
        self._branch(tid, "control")
        control, c_snap, data1 = st.trial_loss(), st.snapshot("control"), st.sampler.state_dict()
        st.restore(s0, undo_steps=True)
        st.sampler.load_state_dict(data0)
        try:
            detail = ACTIONS.get(p.action)(st, p.args)
        except ConfigError as e:  # the proposal is not a valid operation on this tree
            st.restore(c_snap, undo_steps=True)
            st.sampler.load_state_dict(data1)
            self.emit({"kind": "trial", "trial": tid, "action": p.action, "reason": p.reason,
                       "decision": "invalid", "error": str(e)})
            return
        self._branch(tid, "change")
        after = st.trial_loss()
        gain = (control - after) / max(abs(control), 1e-12)
        commit = gain >= acfg.break_epsilon if boundary else gain >= -st.cfg.safety.gate_threshold
        if not commit:
            st.restore(c_snap, undo_steps=True)
        st.sampler.load_state_dict(data1)  # both branches drew the same batches
        st.autonomy.reset_window(st.shape)
        if st.shape != shape0:
            st.write_shape(self.out_dir)
        counts["commits" if commit else "trial_rollbacks"] += 1
        counts["breaks_tried"] += int(boundary)
        self.emit({"kind": "trial", "trial": tid, "action": p.action, "reason": p.reason,
                   "boundary_break": boundary, "decision": "commit" if commit else "rollback",
                   "held_out_before": before, "held_out_control": control, "held_out_with_change": after,
                   "rel_gain": gain, "agents": st.shape.n_agents, **detail})
        if boundary:
            new_stage = a.record_break(commit)
            if new_stage:
                self.emit({"kind": "stage", "stage": new_stage, "successful_breaks": a.successful_breaks})

    # ---- checkpoints --------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        st = self.state
        if self.out_dir is None:
            return None
        ev = st.record.last_eval
        if ev.get("step") == st.step and (st.record.best is None or ev["val_loss"] < st.record.best["val_loss"]):
            st.record.best = {"step": st.step, "val_loss": ev["val_loss"]}
        path = st.save(self.out_dir / "checkpoints" / f"step-{st.step}",
                       meta={"k1_version": __version__, "torch_version": torch.__version__,
                             "policy": st.cfg.policy.name})
        best = st.record.best and self.out_dir / "checkpoints" / f"step-{st.record.best['step']}"
        prune_checkpoints(self.out_dir, st.cfg.train.keep_checkpoints, best or None)
        self.notify("on_checkpoint", st.step, path)
        return path
