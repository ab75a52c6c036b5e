"""DREAM's training step, made cheap enough to train for real on CPU.

- The teacher's answer-token distributions are computed once, before training, and kept as its top-k
  log-probabilities at the distillation temperature, renormalised over those k tokens (k = 0 keeps the whole
  vocabulary, and the loss is then exactly the full KL); every epoch reads the cache instead of running the
  teacher again.
- Examples run in padded batches with an attention mask (right padding: a causal model's real positions never
  see the pads), and a Hugging Face student's LM head runs only on the answer positions, where the loss is.
- The loss of one example is `ce_weight` × cross-entropy on its answer tokens + (1 − ce_weight) × KL(teacher ‖
  student) at temperature T (× T²), each averaged over the example's answer tokens; a batch's loss is the mean
  of its examples' losses, so batching changes the step, not what an example contributes.
- AdamW with a linear warm-up and a cosine decay; after every epoch the student is scored on a validation split
  (a callable, higher is better) and the best epoch's weights are kept (early stopping with `patience`).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.progress import Progress


@dataclass
class Example:
    """One training sequence: token ids, where the answer starts, and the teacher's cached answer distribution."""

    ids: list[int]
    start: int  # ids[start:] are the answer tokens
    t_idx: torch.Tensor | None = None  # [A, k] token ids of the teacher's top-k at each answer position
    t_logp: torch.Tensor | None = None  # [A, k] its log-probabilities at temperature T, renormalised over the k
    meta: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[int]:
        return self.ids[self.start:]


def example(member, prompt, answer: str, eos: bool = False, **meta) -> Example:
    """prompt + answer (+ the member's end-of-turn token) cut from the left to the member's context."""
    p, a = member.prompt_ids(prompt), member.encode(answer)
    if eos and end_token(member) is not None:
        a = a + [end_token(member)]
    limit = getattr(member, "context", None) or member.max_positions
    ids = p + a
    if limit and len(ids) > limit:
        ids = ids[-limit:]
    return Example(ids, max(1, len(ids) - len(a)), meta=meta)


def end_token(member) -> int | None:
    tok = getattr(getattr(member, "tokenizer", None), "eos_token_id", None)
    return tok if isinstance(tok, int) else None


def answer_logits(member, batch: list[Example]) -> torch.Tensor:
    """The member's logits at the positions that predict each example's answer tokens, concatenated: [ΣA, V]."""
    model = member.model
    T = max(len(e.ids) for e in batch)
    x = torch.zeros(len(batch), T, dtype=torch.long)
    mask = torch.zeros(len(batch), T, dtype=torch.long)
    for i, e in enumerate(batch):
        x[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = 1
    rows = torch.cat([torch.full((len(e.ids) - e.start,), i) for i, e in enumerate(batch)])
    cols = torch.cat([torch.arange(e.start - 1, len(e.ids) - 1) for e in batch])
    base = getattr(model, "model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is not None and head is not None:  # Hugging Face: the LM head only where the loss is
        h = base(input_ids=x, attention_mask=mask).last_hidden_state
        return head(h[rows, cols])
    out = model(x) if len(batch) == 1 else model(x, attention_mask=mask) if _takes_mask(model) else None
    if out is None:  # a model without an attention mask runs one example at a time (exactly as unbatched)
        return torch.cat([answer_logits(member, [e]) for e in batch])
    logits = out[0] if isinstance(out, tuple) else getattr(out, "logits", out)
    return logits[rows, cols]


def _takes_mask(model) -> bool:
    import inspect
    return "attention_mask" in inspect.signature(model.forward).parameters


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def cache_teacher(teacher, examples: list[Example], temperature: float, topk: int = 64, batch_size: int = 8,
                  views: list[Example] | None = None) -> None:
    """Fill every example's teacher cache: top-k log-probabilities at `temperature`, renormalised (k=0: all).

    `views` (one per example, the same answer tokens after the teacher's own prompt) lets the teacher read a
    prompt the student does not see, such as an instruction (context distillation)."""
    teacher.model.eval()
    views = views or examples
    for e, v in zip(examples, views):
        if len(e.ids) - e.start != len(v.ids) - v.start:
            raise ValueError("the teacher's view of an example must end with the same answer tokens")
    for b, bv in zip(batches(examples, batch_size), batches(views, batch_size)):
        logits = answer_logits(teacher, bv).float() / temperature
        if topk and topk < logits.shape[-1]:
            vals, idx = logits.topk(topk, dim=-1)
        else:
            idx = torch.arange(logits.shape[-1]).expand_as(logits)
            vals = logits
        logp = F.log_softmax(vals, -1)
        i = 0
        for e in b:
            n = len(e.ids) - e.start
            e.t_idx, e.t_logp = idx[i:i + n].clone(), logp[i:i + n].clone()
            i += n


def batch_loss(student, batch: list[Example], *, temperature: float, ce_weight: float) -> torch.Tensor:
    """Mean over the batch of each example's loss (CE and cached-teacher KL, each averaged over its answer)."""
    s = answer_logits(student, batch).float()
    total = s.new_zeros(())
    i = 0
    for e in batch:
        n = len(e.ids) - e.start
        se = s[i:i + n]
        i += n
        loss = se.new_zeros(())
        if ce_weight > 0:
            loss = loss + ce_weight * F.cross_entropy(se, torch.tensor(e.targets))
        if ce_weight < 1:
            if e.t_idx is None:
                raise ValueError("logit distillation needs the teacher's cache (cache_teacher) first")
            s_logp = F.log_softmax(se / temperature, -1).gather(-1, e.t_idx)
            kl = (e.t_logp.exp() * (e.t_logp - s_logp)).sum(-1).mean() * temperature * temperature
            loss = loss + (1 - ce_weight) * kl
        total = total + loss
    return total / len(batch)


def cosine_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def train(student, examples: list[Example], *, epochs: int, lr: float, batch_size: int, temperature: float,
          ce_weight: float, rng: random.Random, schedule: str = "cosine", validate: Callable[[], float] | None = None,
          patience: int = 2, quiet: bool = True) -> dict:
    """AdamW over all the student's parameters; → {"losses": per step, "val": per epoch, "best_epoch"}.

    With `validate`, the weights of the best-scoring epoch are restored at the end (and training stops after
    `patience` epochs without improvement); the score before training counts as epoch 0."""
    model = student.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(examples) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_schedule(max(1, steps // 20), steps) if schedule == "cosine" else (lambda s: 1.0))
    losses, val = [], []
    best = (validate(), 0, copy.deepcopy(model.state_dict())) if validate else None
    if best:
        val.append(best[0])
    items = list(examples)
    with Progress(disable=quiet) as bar:
        job = bar.add_task(f"training {student.name}", total=steps)
        for epoch in range(1, epochs + 1):
            model.train()
            rng.shuffle(items)
            for b in batches(items, batch_size):
                loss = batch_loss(student, b, temperature=temperature, ce_weight=ce_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.detach())  # read once at the end: no host sync per step
                bar.advance(job)
            model.eval()
            if validate:
                score = validate()
                val.append(score)
                if score > best[0]:
                    best = (score, epoch, copy.deepcopy(model.state_dict()))
                elif epoch - best[1] >= patience:
                    break
    model.eval()
    if best:
        model.load_state_dict(best[2])
    losses = torch.stack(losses).tolist() if losses else []
    return {"losses": losses, "val": val, "best_epoch": best[1] if best else None, "steps": len(losses)}
