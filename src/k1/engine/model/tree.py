"""`AgentTree`: a language model whose body is a tree of agents, each a small transformer block or MLP.

Shared token/position embedding and a tied output head around per-level stacked agents. Two wirings:
- `tree` (default): each agent refines its parent's output; the parent scores its children with their
  gate keys (softmax over siblings, per token); a leaf's weight is the product of gates along its path;
  the output mixes the leaves — a hierarchical mixture of experts whose shape is part of the computation.
- `levels`: the public prototype's semantics — every agent of a level reads the same input and a level's
  output is the mean of its agents.

Soft gating runs every agent on every token, so a token's cost grows with the tree's size. `routing="top1"`
is hard routing (a Switch-Transformer-style mixture over MLP agents): each token keeps one residual stream
and, level by level, goes to the one child its current agent scores highest; the child's refinement is
added scaled by its gate probability (so the gate keys learn). A token's cost then grows with the tree's
depth. `routing="topk"` generalises it: each token visits the `route_k` children its current agents score
highest (with the tree wiring, among the children of the agents it visited on the level above), and adds
each child's refinement scaled by that child's gate probability; k = 1 is top-1 exactly. Attention needs
keys and values of every token, so only level 0 (the root) may be a `block`; the routed levels must be
`mlp`. Each agent takes at most `capacity_factor · k · tokens / N` visits per level (static shapes, no
host sync); overflow visits are dropped, so a token may pass a level unchanged. In training a Switch
load-balancing term (`route_balance` × N·Σ fᵢ·Pᵢ per level, fᵢ the share of visits) is added to the loss
so the router does not collapse onto one agent, and, with `route_z` > 0, the router z-loss of ST-MoE
(`route_z` × the mean over tokens and levels of logsumexp(router scores)²), which keeps the router's
logits small so that its softmax stays trainable.

Isolation per token: a routed token reaches an agent's MLP only if it was dispatched to it, so every
agent off a token's path gets exactly zero gradient from that token, except the gate keys of the children
that competed for it (the router's softmax; tests/engine/test_routing.py checks both).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from k1.engine.model.cache import KVCache
from k1.engine.model.level import AgentLevel
from k1.engine.model.rows import LevelRows, select_rows
from k1.engine.model.shape import TreeShape


class ModelConfig(BaseModel):
    """Architecture of the tree (and of the dense baseline, which copies width, heads and context)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branching: list[int] = Field(default=[4, 3, 2], min_length=1)  # [4, 3, 2] → 41 agents
    kinds: str | list[str] = "block"  # one kind for all levels, or one per level ("block" | "mlp")
    wiring: Literal["tree", "levels"] = "tree"
    width: int = Field(default=128, ge=8)
    mlp_width: int = Field(default=256, ge=8)
    n_heads: int = Field(default=4, ge=1)
    context: int = Field(default=64, ge=2)
    vocab_size: int | None = None  # None: taken from the tokenizer
    dense_layers: int | None = None  # DenseGPT depth; None: as deep as the tree (MLP widened to match)
    routing: Literal["soft", "top1", "topk"] = "soft"  # hard per-token routing over MLP agents (see above)
    route_k: int = Field(default=2, ge=1)  # routing "topk": children a token visits per level
    capacity_factor: float = Field(default=1.25, gt=0)  # routed: visits an agent takes, × k · tokens / N
    route_balance: float = Field(default=0.01, ge=0)  # routed: weight of the load-balancing loss
    route_z: float = Field(default=0.0, ge=0)  # routed: weight of the router z-loss (ST-MoE uses 1e-3)
    gate_balance: float = Field(default=0.0, ge=0)  # soft tree: weight of the gate load-balancing loss
    defer_weight_grads: bool = False  # matrix gradients only for the agents a sparse step selects (level.py)

    @model_validator(mode="after")
    def _routed_levels_are_mlp(self):
        if self.routing != "soft":
            kinds = [self.kinds] * (len(self.branching) + 1) if isinstance(self.kinds, str) else self.kinds
            if any(k != "mlp" for k in kinds[1:]):
                raise ValueError(f'routing "{self.routing}" routes tokens over MLP agents: every level below the root '
                                 'must be "mlp", e.g. kinds = ["block", "mlp", "mlp", "mlp"]')
        return self


class AgentTree(nn.Module):
    """forward(idx [B, T], targets [B, T] | None) → (logits [B, T, V], loss | None)."""

    def __init__(self, shape: TreeShape, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.shape, self.cfg, self.vocab_size = shape, cfg, vocab_size
        C = cfg.width
        self.tok_emb = nn.Embedding(vocab_size, C)
        self.pos_emb = nn.Embedding(cfg.context, C)
        self.ln_f = nn.LayerNorm(C)
        nn.init.normal_(self.tok_emb.weight, 0.0, 0.02)
        nn.init.normal_(self.pos_emb.weight, 0.0, 0.02)
        self.levels = nn.ModuleList(
            AgentLevel(kind, n, C, cfg.mlp_width, cfg.n_heads, depth=shape.n_levels)
            for kind, n in zip(shape.kinds, shape.level_sizes())
        )
        self._register_topology(shape)
        for level in self.levels:
            level.defer_weight_grads = cfg.defer_weight_grads
        self.aux_loss: torch.Tensor | None = None  # routed: the load-balancing term of the last forward
        self.z_loss: torch.Tensor | None = None  # routed: the router z-loss of the last forward
        self.last_gate_mass: torch.Tensor | None = None  # [n_agents] mean path weight of the last forward
        # optional f(normed hidden [B, T, C]) → logits residual [B, T, V], set by a continual plugin (adapter.py)
        self.output_adapter = None

    def _register_topology(self, shape: TreeShape) -> None:
        leaf = torch.tensor(shape.is_leaf())
        offs = shape.level_offsets()
        for lv, n in enumerate(shape.level_sizes()):
            self.register_buffer(f"parent_idx_{lv}", torch.tensor(shape.parent_index(lv)), persistent=False)
            self.register_buffer(f"leaf_{lv}", leaf[offs[lv]:offs[lv] + n].float(), persistent=False)
        self._has_leaf = [bool(leaf[offs[lv]:offs[lv] + n].any()) for lv, n in enumerate(shape.level_sizes())]

    # ---- parameter groups (used by the sparse optimizer and the signals) -----------------------
    def agent_levels(self) -> list[AgentLevel]:
        return list(self.levels)

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters every path uses (embeddings, final norm; the head is tied to tok_emb)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("levels.")]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, ablate: torch.Tensor | None = None,
                cache: KVCache | None = None):
        """`ablate` ([A] bool, flat order) removes those agents' contributions: an ablated agent passes its
        input through unchanged (its residual refinement is dropped), so its subtree still runs.

        `cache` (decoding, `new_cache()`): idx holds the positions after the cached ones; only they are
        computed, attending to the cached keys, and the cache grows by T. The same code runs with and
        without it, so cached logits are the uncached ones. Soft-gated trees only."""
        B, T = idx.shape
        p0 = 0 if cache is None else cache.length
        if p0 + T > self.cfg.context:
            raise ValueError(f"sequence length {T} exceeds the model context {self.cfg.context}" if cache is None
                             else f"positions {p0}..{p0 + T - 1} exceed the model context {self.cfg.context}")
        pos = torch.arange(p0, p0 + T, device=idx.device)
        h = self.tok_emb(idx) + self.pos_emb(pos)  # [B, T, C]
        keep = None if ablate is None else ~ablate.bool()
        if self.cfg.defer_weight_grads:  # a stash left by a backward that no step finished is stale
            for level in self.levels:
                level.clear_deferred()
        if self.cfg.routing != "soft":
            if cache is not None:
                raise ValueError(f"cached decoding supports soft-gated trees, not routing={self.cfg.routing!r}")
            h = self._routed(h, keep)
        else:
            h = self._tree(h, keep, cache) if self.cfg.wiring == "tree" else self._levels(h, keep, cache)
        if cache is not None:
            cache.length += T
        y = self.ln_f(h)
        logits = F.linear(y, self.tok_emb.weight)  # tied head, [B, T, V]
        if self.output_adapter is not None:
            logits = logits + self.output_adapter(y)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
            weight = self.cfg.route_balance if self.cfg.routing != "soft" else self.cfg.gate_balance
            if self.aux_loss is not None and self.training and weight:
                loss = loss + weight * self.aux_loss
            if self.cfg.routing != "soft" and self.z_loss is not None and self.training and self.cfg.route_z:
                loss = loss + self.cfg.route_z * self.z_loss
        return logits, loss

    # ---- deferred weight gradients (ModelConfig.defer_weight_grads) -------------------------------------
    def finish_weight_grads(self, plan=None, rows: list[LevelRows] | None = None) -> list[torch.Tensor]:
        """Between `loss.backward()` and `optimizer.step(plan)`: form the deferred matrix gradients of the
        agents `plan` selects (every agent when plan is None; `rows`: the step's row selection, rows.py, found
        from the plan if not given). A no-op unless the option is on. Returns the compact row gradients
        (`AgentLevel.row_grads`), which the step clips together with every `.grad`."""
        if not self.cfg.defer_weight_grads:
            return []
        offs, sizes = self.shape.level_offsets(), self.shape.level_sizes()
        if plan is not None and rows is None:
            rows = select_rows(plan, offs, sizes)
        formed = []
        for lv, level in enumerate(self.levels):
            scale = None if plan is None else plan.scale[offs[lv]:offs[lv] + sizes[lv]]
            formed += level.finish_weight_grads(None if rows is None else rows[lv], scale)
        return formed

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self.cfg.defer_weight_grads:  # the compact row gradients are gradients too
            for level in self.levels:
                level.clear_deferred()

    def _level_keep(self, keep: torch.Tensor | None, lv: int) -> torch.Tensor | None:
        if keep is None:
            return None
        off = self.shape.level_offsets()[lv]
        return keep[off:off + self.levels[lv].n_agents].view(-1, 1, 1, 1)

    def new_cache(self) -> KVCache:
        """An empty `KVCache` for `forward(idx, cache=...)`."""
        return KVCache(len(self.levels))

    def _run_level(self, lv: int, inp: torch.Tensor, keep: torch.Tensor | None,
                   normed: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        y = self.levels[lv](inp, normed, None if cache is None else cache.levels[lv])
        k = self._level_keep(keep, lv)
        return y if k is None else torch.where(k, y, inp)  # ablated: identity

    def _tree(self, h: torch.Tensor, keep: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = h.shape
        self.aux_loss = None
        prev_out = h.unsqueeze(0)  # [1, B, T, C]: the embedding is the root's "parent"
        prev_w = h.new_ones(1, B, T)  # path weight of each agent of the previous level
        out = None
        masses, balance = [], self.cfg.gate_balance > 0 and self.training and torch.is_grad_enabled()
        for lv, level in enumerate(self.levels):
            pidx = getattr(self, f"parent_idx_{lv}")
            N = pidx.shape[0]
            # siblings read the same parent output: normalise it once per parent, for the gate scores and
            # for the children's first layer norm alike (profiled in docs/performance.md)
            normed = F.layer_norm(prev_out, (C,)).index_select(0, pidx)  # [N, B, T, C]
            inp = prev_out.index_select(0, pidx)  # [N, B, T, C] each agent reads its parent's output
            y = self._run_level(lv, inp, keep, normed, cache)
            if lv == 0:
                w = prev_w
            else:  # the parent scores its children: softmax over siblings of <norm(parent out), child key>
                scores = torch.bmm(normed.view(N, B * T, C), level.gate_key.unsqueeze(-1)).view(N, B, T)
                scores = scores / math.sqrt(C) + level.gate_bias.view(-1, 1, 1)
                gates = _grouped_softmax(scores, pidx, prev_w.shape[0])
                w = prev_w.index_select(0, pidx) * gates
                if balance:
                    self.aux_loss = _gate_imbalance(gates, pidx, prev_w) + (0 if self.aux_loss is None else self.aux_loss)
            if self._has_leaf[lv]:  # only leaves feed the output (internal levels skip the mixing)
                lw = w * getattr(self, f"leaf_{lv}").view(-1, 1, 1)
                mixed = (lw.unsqueeze(-1) * y).sum(0)
                out = mixed if out is None else out + mixed
            masses.append(w.detach().mean(dim=(1, 2)))
            prev_out, prev_w = y, w
        self.last_gate_mass = torch.cat(masses)
        return out

    @property
    def route_k(self) -> int:
        """Children a routed token visits per level: 1 for "top1", `cfg.route_k` for "topk"."""
        return 1 if self.cfg.routing == "top1" else self.cfg.route_k

    def _routed(self, h: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Hard top-k routing (module docstring): one stream per token; per level each token visits the k
        children its current agents score highest, and their refinements are added, each scaled by its gate
        probability. k = 1 is top-1 routing."""
        B, T, C = h.shape
        R, k = B * T, self.route_k
        y0 = self._run_level(0, h.unsqueeze(0), keep)[0]  # the root sees every token (it may attend)
        x = y0.reshape(R, C)
        agent = torch.full((R, k), -1, dtype=torch.long, device=h.device)  # each token's agents (-1: none)
        agent[:, 0] = 0  # every token starts at the root
        path_w = h.new_zeros(R, k)
        path_w[:, 0] = 1.0
        masses, aux, z = [h.new_ones(1)], h.new_zeros(()), h.new_zeros(())
        for lv in range(1, len(self.levels)):
            level = self.levels[lv]
            N = level.n_agents
            scores = F.layer_norm(x, (C,)) @ level.gate_key.T / math.sqrt(C) + level.gate_bias  # [R, N]
            if self.cfg.wiring == "tree":  # a token may only go to a child of one of its current agents
                parent = getattr(self, f"parent_idx_{lv}")
                under = parent.view(1, 1, N) == agent.unsqueeze(2)  # [R, k, N]: child n is under the token's j-th agent
                allowed = under.any(1)
            else:
                under = None
                allowed = torch.ones(R, N, dtype=torch.bool, device=h.device)
            active = allowed.any(1)  # False: the token's agents are leaves, so the token has arrived
            masked_scores = scores.masked_fill(~allowed, -torch.inf).masked_fill(~active.unsqueeze(1), 0.0)
            probs = torch.softmax(masked_scores, -1)
            if self.cfg.route_z:  # ST-MoE's z-loss over the tokens still routing
                lse = torch.logsumexp(masked_scores.float(), -1)
                z = z + (lse.pow(2) * active).sum() / active.sum().clamp_min(1)
            p, choice = probs.max(-1, keepdim=True) if k == 1 else probs.topk(min(k, N), -1)  # [R, k']
            valid = (p > 0) & active.unsqueeze(1)  # fewer than k allowed children: the rest are not visits
            kk = choice.shape[1]
            # dispatch the R·k' (token, child) visits, token-major, each agent taking at most `cap` of them
            onehot = F.one_hot(choice.reshape(-1), N) * valid.reshape(-1, 1)  # [R·k', N]
            cap = max(1, min(R * kk, math.ceil(self.cfg.capacity_factor * R * kk / N)))
            pos = (onehot.cumsum(0) * onehot).sum(1) - 1  # the visit's place in its agent's queue
            kept = valid.reshape(-1) & (pos < cap)
            slot = torch.where(kept, choice.reshape(-1) * cap + pos, N * cap)  # overflow → a spare row, dropped
            src = x if kk == 1 else x.unsqueeze(1).expand(R, kk, C).reshape(R * kk, C)
            buf = x.new_zeros(N * cap + 1, C).index_copy(0, slot, src)
            delta = level._mlp(buf[:-1].view(N, cap, C))  # [N, cap, C]: only dispatched tokens
            kp = self._level_keep(keep, lv)
            if kp is not None:
                delta = delta * kp.view(N, 1, 1)
            delta = torch.cat([delta.reshape(N * cap, C), delta.new_zeros(1, C)]).index_select(0, slot)
            gate = torch.where(kept, p.reshape(-1), torch.zeros_like(p.reshape(-1)))
            x = x + (gate.unsqueeze(1) * delta).view(R, kk, C).sum(1)
            # a visit's path weight: its parent's (the token's agent it sits under) times its gate probability
            if under is None:
                parent_w = path_w.sum(1, keepdim=True).expand(R, kk)
            else:
                parent_w = (under.gather(2, choice.unsqueeze(1).expand(R, k, kk)) * path_w.unsqueeze(2)).sum(1)
            new_w = torch.where(valid, parent_w * p, torch.zeros_like(p))
            hit = onehot * kept.reshape(-1, 1)  # [R·k', N]
            masses.append((hit * new_w.reshape(-1, 1)).detach().sum(0) / R)
            n_active = active.sum().clamp_min(1)
            f = hit.sum(0) / (n_active * kk)  # the share of visits each agent took (sums to ≤ 1)
            aux = aux + N * (f * (probs * active.unsqueeze(1)).sum(0) / n_active).sum()
            # tokens that arrived keep their agents (and weights); the others move to their children
            move = active.unsqueeze(1)
            nxt = torch.where(valid, choice, torch.full_like(choice, -1))
            agent = torch.where(move, F.pad(nxt, (0, k - kk), value=-1), agent)
            path_w = torch.where(move, F.pad(new_w, (0, k - kk)), path_w)
        self.last_gate_mass = torch.cat(masses)
        self.aux_loss = aux
        self.z_loss = z / max(1, len(self.levels) - 1)
        return x.view(B, T, C)

    @torch.no_grad()
    def gate_affinity(self, idx: torch.Tensor) -> dict[int, torch.Tensor]:
        """For each level l ≥ 2: [N_{l-1}, N_l], the mean gate score every agent of level l-1 would give
        every agent of level l (<norm(parent output), child key> + bias): where a child fits (reorganize)."""
        C = self.cfg.width
        prev = (self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))).unsqueeze(0)
        ys = []
        for lv, level in enumerate(self.levels):
            prev = level(prev.index_select(0, getattr(self, f"parent_idx_{lv}")))
            ys.append(prev)
        out = {}
        for lv in range(2, len(self.levels)):
            pooled = F.layer_norm(ys[lv - 1], (C,)).mean(dim=(1, 2))  # [N_{l-1}, C]: score is linear in it
            out[lv] = pooled @ self.levels[lv].gate_key.T / math.sqrt(C) + self.levels[lv].gate_bias
        return out

    def _levels(self, h: torch.Tensor, keep: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        self.aux_loss = None
        for lv, level in enumerate(self.levels):
            normed = F.layer_norm(h, (h.shape[-1],)).unsqueeze(0).expand(level.n_agents, *h.shape)
            h = self._run_level(lv, h.unsqueeze(0).expand(level.n_agents, *h.shape), keep, normed, cache).mean(0)
        self.last_gate_mass = torch.cat([h.new_full((lv.n_agents,), 1.0 / lv.n_agents) for lv in self.levels])
        return h

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample continuation tokens (idx: [B, T]) with a sliding context window."""
        return sample(self, idx, max_new_tokens, temperature, top_k, generator)


def _gate_imbalance(gates: torch.Tensor, group: torch.Tensor, parent_w: torch.Tensor) -> torch.Tensor:
    """How far each parent's batch-mean gate split is from uniform: Σ_parents m_p · (n_p Σ_i ḡ_i² − 1).

    ḡ_i is child i's gate averaged over the tokens, weighted by the parent's path weight (tokens that never
    reach the parent do not count); n_p its number of children, m_p the parent's mean path weight. Each
    term is 0 for an even split and n_p − 1 when one child takes everything — the soft tree's analogue of
    the Switch load-balancing loss, against gates that send every input to the same child.
    """
    pw = parent_w.detach()  # [P, B, T]
    mass = pw.mean(dim=(1, 2))  # [P]
    share = (gates * pw.index_select(0, group)).mean(dim=(1, 2)) / mass.index_select(0, group).clamp_min(1e-12)
    n = torch.zeros_like(mass).index_add_(0, group, torch.ones_like(share))
    sq = torch.zeros_like(mass).index_add_(0, group, share.pow(2))
    return (mass * (n * sq - 1) * (n > 0)).sum()  # a childless parent has nothing to balance


def _grouped_softmax(scores: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of scores [N, B, T] within groups of siblings (group[i] = parent index of agent i)."""
    idx = group.view(-1, 1, 1).expand_as(scores)
    gmax = scores.new_full((n_groups, *scores.shape[1:]), -torch.inf)
    gmax = gmax.scatter_reduce(0, idx, scores.detach(), reduce="amax")  # per-group max for stability
    e = torch.exp(scores - gmax.index_select(0, group))
    denom = torch.zeros_like(gmax).index_add_(0, group, e)
    return e / denom.index_select(0, group)


@torch.no_grad()
def sample(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoregressive sampling shared by the tree and the dense baseline."""
    context = model.cfg.context
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -context:])
        logits = logits[:, -1, :] / max(temperature, 1e-6)
        if top_k:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -torch.inf
        nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
