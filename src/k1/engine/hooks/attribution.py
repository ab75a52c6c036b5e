"""`attribution`: one JSON object per step in `attribution.jsonl` — who was blamed, who moved, how much.

Records are buffered on the device and written at each log interval with one host sync, so logging every
step costs no per-step synchronisation.
"""

from __future__ import annotations

import json

import torch

from k1.engine.hooks.base import HOOKS, Hook


@HOOKS.register("attribution")
class AttributionHook(Hook):
    def on_train_start(self, state, info):
        self.policy = info.policy
        self.file = open(info.out_dir / "attribution.jsonl", "a")
        self.buffer = []

    def on_step_end(self, state, r):
        self.buffer.append(r)
        if r.log_due:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        if len({len(r.agent_names) for r in self.buffer}) > 1:  # the tree was reshaped inside the buffer
            buffer, self.buffer = self.buffer, []
            for r in buffer:
                self.buffer = [r]
                self.flush()
            return
        rs = self.buffer
        # host sync (log interval): one transfer per field for the whole buffer
        scales = torch.stack([r.plan.scale for r in rs]).tolist()
        grads = torch.stack([r.signals.grad_rms for r in rs]).tolist()
        gates = torch.stack([r.signals.gate_mass for r in rs]).tolist()
        trusts = torch.stack([r.trust for r in rs]).tolist()
        scalars = torch.stack([torch.stack([r.loss.float(), r.stats.params_changed.float(),
                                            r.stats.update_norm.float(), r.finite.float()]) for r in rs]).tolist()
        paths = [None if r.plan.path is None else r.plan.path.tolist() for r in rs]
        names = rs[0].agent_names
        for r, sc, gr, gm, tr, (loss, changed, unorm, finite), path in zip(rs, scales, grads, gates, trusts,
                                                                            scalars, paths):
            row = {
                **r.key(), "policy": self.policy, "loss": loss, "finite": bool(finite),
                "selected": [n for n, s in zip(names, sc) if s > 0],
                "blame_path": None if path is None else _dedupe([names[i] for i in path]),
                "scale": {n: s for n, s in zip(names, sc) if s > 0},
                "grad_rms": [round(g, 8) for g in gr],
                "gate_mass": [round(g, 6) for g in gm],
                "trust": [round(t, 5) for t in tr],
                "params_changed": int(changed),
                "frac_params_changed": changed / r.total_params,
                "update_norm": unorm,
            }
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.buffer = []

    def on_event(self, state, event):
        self.flush()  # keep the log in step order
        self.file.write(json.dumps({"event": event["kind"], **{k: v for k, v in event.items() if k != "kind"}}) + "\n")
        self.file.flush()

    def on_checkpoint(self, state, step, path):
        self.flush()  # a checkpoint's step must be on disk before anything can resume from it

    def on_train_end(self, state, summary):
        self.flush()
        self.file.close()


def _dedupe(path: list[str]) -> list[str]:
    out = []
    for n in path:
        if not out or out[-1] != n:
            out.append(n)
    return out
