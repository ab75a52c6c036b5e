"""A small adapter for the shared parameters, opened at each detected shift (`k1-adapter`, `k1-route-adapter`).

The audit found most forgetting in the parameters every path uses (embeddings, final norm, tied head), and
freezing them after the first domain (`k1-freeze`) cut forgetting but left later domains learning up to
10 % worse. Here the shared parameters freeze at the first *detected* shift (no stage boundary, no label)
and every shift opens an adapter slot for the new data: a table of input-embedding corrections
(e ← e + Tᵢ[x]: a token's gradient reaches one row) and one of output-embedding corrections (logits ←
logits + y·Hᵢᵀ, y the normed last hidden state: the tied head's rows get a per-slot correction). Both start
at zero, so a new slot changes nothing until it learns.

Which slot a token uses is decided by the input alone, so no label is needed at evaluation: each segment
of training (the first domain, then the data after each shift) counts its token pairs (a bigram model of
its training batches); a token goes to the segment under whose model its prefix in the window (x_0..x_t,
causal) is likeliest, and uses that segment's adapter (the first segment has none: the frozen shared
parameters are its own). Routing is hard: a token's gradient reaches only its own
slot's adapter, and only the current slot is trained (older ones stay bit-identical), so what a later
domain learns in its adapter cannot reach tokens routed to an earlier segment.

Cost: 2·vocab·width parameters per slot (24,576 at the `small` preset: byte vocabulary, width 48; 3.1 % of
the soft tree, 5.9 % of the routed one; `slots` are allocated up front), a vocab² table of pair counts per segment, a likelihood per token and segment, and the adapter's own Adam step.
These are not in the table's FLOPs or parameter counts, which count the model.
"""

from __future__ import annotations

import torch
from torch import nn

from k1.experiments.shift import ShiftHook


class ShiftAdapters(nn.Module):
    """`slots` adapters (input and output embedding corrections) and the segment models that route tokens."""

    def __init__(self, width: int, vocab_size: int, slots: int = 4):
        super().__init__()
        self.slots = slots
        self.table = nn.ParameterList(nn.Parameter(torch.zeros(vocab_size, width)) for _ in range(slots))
        self.head = nn.ParameterList(nn.Parameter(torch.zeros(vocab_size, width)) for _ in range(slots))
        self.register_buffer("pairs", torch.zeros(slots + 1, vocab_size, vocab_size))  # per segment: pair counts
        self.segment = 0  # the segment training data belongs to now; segments 1.. have adapter slot s − 1
        self.route: torch.Tensor | None = None  # [B, T] the last forward's segment per token

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [self.table[slot], self.head[slot]]

    def assign(self, idx: torch.Tensor) -> torch.Tensor:
        """[B, T] long: per token, the open segment under whose token-pair model its prefix is likeliest."""
        open_ = self.segment + 1
        c = self.pairs[:open_] + 0.1  # add-0.1 smoothing
        logp = (c / c.sum(-1, keepdim=True)).log()  # [S, V, V]: log p(next | previous) per segment
        ll = logp[:, idx[:, :-1], idx[:, 1:]].cumsum(-1)  # [S, B, T-1]: log-likelihood of the prefix
        ll = torch.cat([torch.zeros_like(ll[..., :1]), ll], dim=-1)  # the first token has no pair yet
        return ll.argmax(0)

    @torch.no_grad()
    def observe(self, idx: torch.Tensor) -> None:
        """Count a training batch's token pairs into the current segment's model."""
        V = self.pairs.shape[-1]
        flat = (idx[:, :-1] * V + idx[:, 1:]).flatten()
        self.pairs[self.segment].view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=self.pairs.dtype))

    def delta_in(self, idx: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The embedding residual [B, T, C]: each token's row of its own slot's table (0 for segment 0).

        One gather from the open slots' tables stacked under a row of zeros (segment 0), indexed by (segment,
        token): the same values and gradients as a masked sum over the segments, in one op."""
        if self.route is None or self.segment == 0:
            return torch.zeros_like(e)
        rows = torch.stack([torch.zeros_like(self.table[0]), *(self.table[s] for s in range(self.segment))])
        return rows[self.route, idx].to(e.dtype)  # [S + 1, V, C] at ([B, T], [B, T]) → [B, T, C]

    def delta_out(self, y: torch.Tensor) -> torch.Tensor:
        """The logits residual [B, T, V]: each token's normed hidden state through its own slot's head rows."""
        out = None
        if self.route is not None:
            for seg in range(1, self.segment + 1):
                mask = (self.route == seg).unsqueeze(-1).to(y.dtype)
                d = mask * (y @ self.head[seg - 1].t())
                out = d if out is None else out + d
        return 0.0 if out is None else out

    def attach(self, model) -> list:
        """Hook the adapters into an `AgentTree`'s forward; → the handles (remove them to detach)."""

        def route(_module, args, kwargs):
            idx = args[0] if args else kwargs["idx"]
            self.route = self.assign(idx) if self.segment > 0 else None

        def embed(_module, args, e):
            return e + self.delta_in(args[0], e)

        model.output_adapter = self.delta_out
        return [model.register_forward_pre_hook(route, with_kwargs=True), model.tok_emb.register_forward_hook(embed)]


class AdapterState:
    """The adapters, their Adam moments and the freeze flag: what travels in a run's checkpoint."""

    def __init__(self, adapters: ShiftAdapters, betas=(0.9, 0.95), eps: float = 1e-8):
        self.adapters, self.betas, self.eps = adapters, betas, eps
        self.m = [torch.zeros_like(p) for p in adapters.parameters()]
        self.v = [torch.zeros_like(p) for p in adapters.parameters()]
        # Adam steps of the current slot (its moments restart when a slot opens), a float64 count on the
        # parameters' device, so a step that was not finite is skipped without reading the flag on the host
        self.steps = torch.zeros((), dtype=torch.float64)

    def to(self, device) -> None:
        self.adapters.to(device)
        self.m, self.v = [t.to(device) for t in self.m], [t.to(device) for t in self.v]
        self.steps = self.steps.to(device)

    @torch.no_grad()
    def step(self, lr: float, ok: torch.Tensor | bool = True) -> None:
        """One Adam step of the current slot's parameters where `ok` (the engine's finite flag, left on the
        device); every other slot, and every slot on a step that was not finite, keeps its values."""
        ad, seg = self.adapters, self.adapters.segment
        if seg == 0:
            return
        ok = torch.as_tensor(ok, device=self.steps.device)
        current = {id(p) for p in ad.slot_parameters(seg - 1)}
        self.steps = self.steps + ok
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for p, m, v in zip(ad.parameters(), self.m, self.v):
            if id(p) not in current or p.grad is None:
                continue
            m.copy_(torch.where(ok, m.mul(b1).add(p.grad, alpha=1 - b1), m))
            v.copy_(torch.where(ok, v.mul(b2).addcmul(p.grad, p.grad, value=1 - b2), v))
            p.copy_(torch.where(ok, p.sub(lr * (m / c1) / ((v / c2).sqrt() + self.eps)), p))

    def zero_grad(self) -> None:
        for p in self.adapters.parameters():
            p.grad = None

    def open_slot(self) -> bool:
        """A shift: the next segment starts (and its slot, if one is left); False when none is left."""
        if self.adapters.segment >= self.adapters.slots:
            return False
        self.adapters.segment += 1
        self.steps = torch.zeros_like(self.steps)
        for m, v in zip(self.m, self.v):
            m.zero_()
            v.zero_()
        return True

    def state_dict(self) -> dict:
        return {"adapters": {k: v.detach().clone() for k, v in self.adapters.state_dict().items()},
                "segment": int(self.adapters.segment), "m": list(self.m), "v": list(self.v), "steps": int(self.steps)}

    def load_state_dict(self, s: dict) -> None:
        self.adapters.load_state_dict(s["adapters"])
        self.adapters.segment = int(s["segment"])
        self.m = [t.clone() for t in s["m"]]
        self.v = [t.clone() for t in s["v"]]
        self.steps = torch.tensor(float(s["steps"]), dtype=torch.float64, device=self.steps.device)


class AdapterOnShift(ShiftHook):
    """Freeze the shared parameters at the first detected shift; open an adapter slot at every shift; train
    the current slot every step (at the engine's learning rate); route every forward, evaluation included."""

    def __init__(self, detector, adapters: AdapterState):
        super().__init__(detector)
        self.ad, self.handles, self.model = adapters, [], None

    def _attach(self, state) -> None:
        if self.model is not state.model:  # a rebuilt or resumed model gets the hooks again
            for h in self.handles:
                h.remove()
            if self.model is not None:
                self.model.output_adapter = None
            self.ad.to(state.device)
            self.handles, self.model = self.ad.adapters.attach(state.model), state.model
        state.optimizer.shared_scale = 0.0 if self.ad.adapters.segment > 0 else 1.0

    def on_train_start(self, state, info):
        super().on_train_start(state, info)
        self._attach(state)

    def on_step_end(self, state, r):
        if getattr(r, "trial", None) is None:
            self.ad.step(r.lr, r.finite)  # a step that was not finite moves nothing, read on the device
            self.ad.adapters.observe(r.inputs.to(state.device))
        self.ad.zero_grad()
        super().on_step_end(state, r)

    def on_check(self, state, step):
        events = super().on_check(state, step)
        self._attach(state)
        return events

    def act(self, state) -> dict:
        opened = self.ad.open_slot()
        state.optimizer.shared_scale = 0.0
        return {"action": "adapter", "segment": int(self.ad.adapters.segment), "opened": opened}
