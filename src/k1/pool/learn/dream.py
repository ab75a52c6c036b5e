"""DREAM: consolidate the pool's experiences by distilling a trusted teacher into a cheaper student.

1. Take the most important experiences (prioritized by SNARC importance) and split off a held-out share.
2. Teacher = the most trusted member (mean Beta trust over its task classes) with the role "teacher" if any
   has it; student = a cheaper trainable local member (role "student" first). The teacher answers every
   prompt (its calls are charged to the ledger as kind "dream"), optionally under a system message
   of its own and several more times at a temperature; a verifier can keep only the right answers.
3. Train the student (AdamW on all its parameters, `learn/distill.py`): logit distillation — KL(teacher ‖
   student) at temperature T on the answer tokens, × T², from a top-k cache of the teacher, optionally
   mixed with cross-entropy — when both share a tokenizer; otherwise sequence-level distillation:
   cross-entropy on the teacher's answer with the prompt positions masked out. A validation split of the
   training experiences picks the epoch to keep.
4. Measure on the first half of the held-out experiences (the trust prompts) before and after: the student's
   bits per byte of the teacher's answers, its top-1 agreement with them (teacher-forced), and a verifier's
   success where one is given.
5. Update the student's trust from that measurement (one outcome per trust prompt, source "dream"), save
   the student's weights (safetensors, applied again when the pool is reopened), and replay the other half of
   the held-out prompts (never used for trust) through the pool's own choice (greedy) and attempts before and
   after, as quiet calls charged to the ledger as DREAM's: the cost change is measured.
Every number in the returned report is computed here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import Progress

from k1.common.trust import beta_mean
from k1.errors import BackendError
from k1.pool.errors import BudgetExhausted
from k1.pool.learn.distill import batch_loss, batches, cache_teacher, example, train
from k1.pool.learn.weights import forget_cached_states, publish_student
from k1.pool.members.base import Member, prompt_text
from k1.pool.members.local import LocalMember
from k1.pool.route.attempts import attempts
from k1.pool.route.intake import replay_call
from k1.pool.route.snarc import prioritized_sample

log = logging.getLogger(__name__)


# ---- choosing teacher and student -------------------------------------------------------------------
def mean_trust(store, name: str) -> float:
    s = f = 0.0
    for (m, _), (a, b) in store.trust().items():
        if m == name:
            s, f = s + a, f + b
    return beta_mean(s, f)


def pick_pair(router, teacher: str | None = None, student: str | None = None) -> tuple[Member, LocalMember]:
    pool = router.pool
    names = pool.names
    if teacher is None:
        tagged = [n for n in names if "teacher" in pool.members[n].roles] or names
        teacher = max(tagged, key=lambda n: (mean_trust(router.store, n), pool.members[n].estimate_cost(64, 64)))
    t = pool[teacher]
    if student is None:
        trainable = [n for n in names if n != teacher and _model(pool.members[n]) is not None]
        tagged = [n for n in trainable if "student" in pool.members[n].roles] or trainable
        if not tagged:
            raise BackendError("DREAM needs a local member to train as the student (a k1 or hf member)")
        student = min(tagged, key=lambda n: pool.members[n].estimate_cost(64, 64))
    s = pool[student]
    if _model(s) is None:
        raise BackendError(f"member {student!r} is not a local model; DREAM can only train k1 and hf members")
    return t, s


def _model(m: Member):
    return getattr(m, "model", None) if isinstance(m, LocalMember) else None


def same_tokenizer(a: Member, b: Member) -> bool:
    if a.kind != b.kind or not isinstance(a, LocalMember):
        return False
    if a.kind == "hf":
        return a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    return getattr(a.tokenizer, "name", None) == getattr(b.tokenizer, "name", None) and \
        a.model.vocab_size == b.model.vocab_size


# ---- examples and losses ------------------------------------------------------------------------------
def _logits(member: LocalMember, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids])
    out = member.model(x)
    return (out[0] if isinstance(out, tuple) else out.logits)[0]  # [T, V]



@torch.no_grad()
def measure(ledger, student: LocalMember, items: list[dict], verifier: Callable | None = None) -> dict:
    """Held-out quality: bits per byte of the teacher's answers, top-1 agreement, verifier success; `grades`
    holds one grade per item (its verifier score, else its agreement) for the trust update. The student's calls
    (scoring, answering) are charged through `ledger` as "dream-measure"."""
    bits = n_bytes = agree = n_tok = 0.0
    ok, grades = [], []
    for it in items:
        if not it["answer"]:
            continue
        sc = ledger.score(student, it["prompt"], it["answer"], kind="dream-measure", session="dream")
        bits += sc.bits_per_byte * sc.n_bytes
        n_bytes += sc.n_bytes
        e = example(student, it["prompt"], it["answer"])
        ids, start = e.ids, e.start
        pred = _logits(student, ids)[start - 1:-1].argmax(-1)
        hits = (pred == torch.tensor(ids[start:])).sum().item()
        agree += hits
        n_tok += len(ids) - start
        grade = hits / max(1, len(ids) - start)
        if verifier is not None:
            g = ledger.call(student, it["prompt"], kind="dream-measure", session="dream", max_tokens=it["max_tokens"])
            v = verifier(it["prompt_text"], g.text)
            if v is not None:
                ok.append(float(v))
                grade = float(v)
        grades.append((it, grade))
    return {"bits_per_byte": bits / max(n_bytes, 1), "agreement": agree / max(n_tok, 1),
            "verifier_success": sum(ok) / len(ok) if ok else None, "items": len(items), "grades": grades}


def distill(student: LocalMember, teacher: Member, items: list[dict], *, epochs: int, lr: float, temperature: float,
            logit_kd: bool, rng: random.Random, quiet: bool = True, batch_size: int = 1, topk: int = 0,
            ce_weight: float | None = None, schedule: str = "constant", validate: Callable | None = None,
            patience: int = 2, eos: bool = False) -> dict:
    """Train the student on `items` ({prompt, answer}); → the training record (losses per step, validation).

    The defaults are the original method (one example a step, the full teacher distribution, constant lr);
    DREAM passes batches, a top-k teacher cache and a cosine schedule."""
    ce_weight = (0.0 if logit_kd else 1.0) if ce_weight is None else (ce_weight if logit_kd else 1.0)
    examples = [example(student, it["prompt"], it["answer"], eos=eos) for it in items]
    if ce_weight < 1:
        views = [example(teacher, it.get("teacher_prompt") or it["prompt"], it["answer"], eos=eos) for it in items]
        cache_teacher(teacher, examples, temperature, topk, max(batch_size, 8), views=views)
    rec = train(student, examples, epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature,
                ce_weight=ce_weight, rng=rng, schedule=schedule, validate=validate, patience=patience, quiet=quiet)
    forget_cached_states(student)
    return rec


# ---- replay ---------------------------------------------------------------------------------------------
def replay(router, prompts: list, verifier: Callable | None, max_tokens: int) -> dict:
    """Run `prompts` through the router's own choice (greedy) and attempts, as quiet calls: each is charged to
    the ledger as DREAM's, and none leaves an outcome, experience or state behind. → cost and success."""
    for m in router.pool.members.values():  # measure cold: a prefix cached by an earlier replay is not DREAM's doing
        forget_cached_states(m)
    atp, ok, members = 0.0, [], {}
    for p in prompts:
        call = replay_call(router, p, max_tokens)
        for _ in attempts(router, call):
            pass
        out = call.routed
        atp += out.generation.cost.atp
        members[out.member] = members.get(out.member, 0) + 1
        if verifier is not None:
            v = verifier(prompt_text(p), out.generation.text)
            if v is not None:
                ok.append(float(v))
    return {"atp": atp, "calls": len(prompts), "members": members,
            "verifier_success": sum(ok) / len(ok) if ok else None}


# ---- the whole phase -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DreamConfig:
    """What one DREAM run does (`dream(router, DreamConfig(...))`, or `dream(router, k=16, ...)`).

    With `verified_only`, the student trains only on the teacher's answers that `verifier` accepts (the teacher
    is not always right, and the student learns its mistakes as readily as its sums). With `samples` (rejection
    sampling; needs a verifier, implies verified-only), the teacher also answers every training experience
    `samples` more times at `sample_temperature`, each call charged to the ledger, and every distinct verified
    answer is a training example. `first_line` keeps a verified answer up to the line the verifier read (then
    the end-of-turn token, so the student learns to stop there). `ce_weight` mixes cross-entropy on the answers
    into the logit distillation. `val` carves that share of the training experiences off as a validation split:
    the student is scored on it after every epoch (verifier success, then loss) and the best epoch is kept. With
    `teacher_system`, the teacher answers chat prompts with that system message in place of its own (context
    distillation: the student learns to answer the plain prompt as the instructed teacher does; the teacher's
    logits are read after the instructed prompt). With `task_class`, only that class's experiences are
    consolidated, and the student is also measured before and after on `class_tasks` calibration tasks of the
    class (judged by their verifiers; never trained on, and no training prompt equals one of them): that
    measurement replaces its calibration for the class, so its trust follows it. With `student_kind`, DREAM
    trains a student from the pool's own use instead, its trust from prompts neither trained on nor replayed
    (`dream_student.py`)."""

    # who: the most trusted teacher and a cheaper trainable student, unless named
    teacher: str | None = None
    student: str | None = None
    # what: the `k` most important experiences (of `task_class`), `holdout` of them held out
    k: int = 64
    holdout: float = 0.25
    task_class: str | None = None
    class_tasks: int = 16
    # the teacher's answers
    max_tokens: int = 32
    teacher_system: str | None = None
    verifier: Callable | None = None
    verified_only: bool = False
    samples: int = 0
    sample_temperature: float = 0.8
    first_line: bool = False
    # training
    epochs: int = 3
    lr: float = 3e-4
    temperature: float = 2.0
    ce_weight: float = 0.0
    batch_size: int = 8
    topk: int = 64
    val: float = 0.0
    patience: int = 2
    schedule: str = "cosine"
    seed: int = 0
    # a student built from the pool's own use instead (`dream_student.py`): "k1" (a K-1 tree trained further by
    # the engine) or "lora" (an adapter on an hf student, merged); `practice` self-instruct prompts answered by
    # the teacher (with `shots` accepted answers shown to it), kept where the verifier accepts; options for the
    # trainer (e.g. {"steps": 600} for "k1")
    student_kind: str | None = None
    practice: int = 0
    shots: int = 0
    student_options: dict | None = None
    # with student_kind: the constant answer and a format-only student measured on the trust prompts beside it
    controls: bool = False
    # where the student's weights go (default: beside the store), and whether to show progress
    weights_dir: str | Path | None = None
    quiet: bool = True


def dream(router, config: DreamConfig | None = None, /, **overrides) -> dict:
    """One DREAM run (module docstring); `overrides` replace fields of `config` (default `DreamConfig()`)."""
    cfg = replace(config or DreamConfig(), **overrides)
    if cfg.student_kind is not None:
        from k1.pool.learn.dream_student import dream_student

        return dream_student(router, cfg, pick_pair=pick_pair, measure=measure, probe=_probe, replay=replay,
                             same_tokenizer=same_tokenizer)
    t_start = time.perf_counter()
    rng = random.Random(cfg.seed)
    store = router.store
    exps = store.experiences()
    probe = []
    if cfg.task_class is not None:
        from k1.pool.learn.calibrate import calibration_tasks
        probe = [c for c in calibration_tasks(cfg.class_tasks) if c.cls == cfg.task_class]
        held_texts = {c.text for c in probe}
        exps = [e for e in exps if e["context"] == cfg.task_class and e["prompt"] not in held_texts]
    if (cfg.verified_only or cfg.samples) and cfg.verifier is None:
        raise BackendError("DREAM's verified_only (and samples) needs a verifier")
    verified = cfg.verified_only or cfg.samples > 0
    if len(exps) < 4:
        raise BackendError(f"DREAM needs at least 4 experiences{f' of class {cfg.task_class!r}' if cfg.task_class else ''}; "
                           f"the pool has {len(exps)} (use it first)")
    t, s = pick_pair(router, cfg.teacher, cfg.student)
    logit_kd = same_tokenizer(t, s)
    calls = 0

    def instructed(prompt):
        if cfg.teacher_system is None or not isinstance(prompt, list):
            return prompt
        return [{"role": "system", "content": cfg.teacher_system}] + [m for m in prompt if m.get("role") != "system"]

    def ask(prompt, temp: float, call_seed: int | None):
        nonlocal calls
        g = router.ledger.call(t, instructed(prompt), kind="dream", session="dream", task_class="dream",
                               max_tokens=cfg.max_tokens, temperature=temp, seed=call_seed,
                               stop=["\n"] if cfg.first_line and temp > 0 else None)
        calls += 1
        return g

    router.metabolism.enter_dream(f"distilling {t.name} → {s.name}")
    try:
        chosen = prioritized_sample(exps, cfg.k, rng=rng)
        n_held = min(len(chosen) - 1, max(1, round(cfg.holdout * len(chosen))))
        held, train_exps = chosen[:n_held], chosen[n_held:]  # the sample's order is random: a random split
        n_val = min(len(train_exps) - 1, max(1, round(cfg.val * len(train_exps)))) if cfg.val > 0 else 0
        val_exps, train_exps = train_exps[:n_val], train_exps[n_val:]
        router.ledger.afford(_most_atp(router, t, s, held, train_exps, val_exps, probe, cfg),  # or buy nothing
                             f"distilling {t.name} → {s.name} on {len(chosen)} experiences")
        items = {"train": [], "val": [], "held": []}
        with Progress(disable=cfg.quiet) as bar:
            task = bar.add_task("teacher answers", total=len(chosen) + cfg.samples * len(train_exps))
            for part, group in (("train", train_exps), ("val", val_exps), ("held", held)):
                for e in group:
                    prompt = e["extra"].get("messages") or e["prompt"]
                    g = ask(prompt, 0.0, None)
                    items[part].append({"prompt": prompt, "teacher_prompt": instructed(prompt),
                                        "prompt_text": e["prompt"], "answer": g.text,
                                        "context": e["context"], "max_tokens": cfg.max_tokens, "samples": []})
                    bar.advance(task)
            for i, it in enumerate(items["train"]):  # rejection sampling: the verifier keeps what is right
                for j in range(cfg.samples):
                    it["samples"].append(ask(it["prompt"], cfg.sample_temperature, cfg.seed * 1_000_003 + i * 1009 + j).text)
                    bar.advance(task)
        # trust from prompts the replay does not reuse: the held-out experiences' first half grades the student,
        # the second half is replayed
        n_trust = -(-len(items["held"]) // 2)
        trust, prompts = items["held"][:n_trust], [it["prompt"] for it in items["held"][n_trust:]]
        replay_before = replay(router, prompts, cfg.verifier, cfg.max_tokens)
        before = measure(router.ledger, s, trust, cfg.verifier)
        class_before = _probe(router.ledger, s, probe)
        if verified:
            train_items = kept_answers(items["train"], cfg.verifier, cfg.first_line)
            if not train_items:
                raise BackendError(f"none of the teacher's {len(items['train'])} training answers passed the verifier")
        else:
            train_items = [it for it in items["train"] if it["answer"]]
        validate = _validator(router.ledger, s, t, items["val"], cfg.verifier, cfg.first_line, cfg.temperature, cfg.topk) if items["val"] else None
        rec = distill(s, t, train_items, epochs=cfg.epochs, lr=cfg.lr, temperature=cfg.temperature, logit_kd=logit_kd, rng=rng,
                      quiet=cfg.quiet, batch_size=cfg.batch_size, topk=cfg.topk, ce_weight=cfg.ce_weight, schedule=cfg.schedule,
                      validate=validate, patience=cfg.patience, eos=verified and cfg.first_line)
        losses = rec["losses"]
        after = measure(router.ledger, s, trust, cfg.verifier)
        class_after = _probe(router.ledger, s, probe)
        saved = publish_student(router, s, after["grades"], class_after["rows"] if probe else None, cfg.task_class,
                                "dream", cfg.weights_dir)
    except BudgetExhausted as e:  # others spent the budget meanwhile: one line; no weights or trust were saved
        raise BudgetExhausted(f"DREAM stopped, nothing saved: {e}") from None
    finally:
        router.metabolism.leave_dream()
    try:
        replay_after = replay(router, prompts, cfg.verifier, cfg.max_tokens)
    except BudgetExhausted as e:
        raise BudgetExhausted(f"DREAM saved the student ({saved}) but could not replay its workload: {e}") from None
    per_epoch = max(1, -(-len(train_items) // cfg.batch_size))
    return {
        "teacher": t.name, "student": s.name, "method": "logit-kd" if logit_kd else "sequence-kd",
        "temperature": cfg.temperature if logit_kd else None, "experiences": len(chosen), "train": len(train_items),
        "train_prompts": len(items["train"]), "validation": len(items["val"]), "held_out": len(items["held"]),
        "trust_prompts": len(trust), "replay_prompts": len(prompts),
        "verified_only": verified, "samples": cfg.samples, "teacher_calls": calls,
        "ce_weight": cfg.ce_weight if logit_kd else 1.0, "topk": cfg.topk, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
        "steps": rec["steps"], "val": rec["val"], "best_epoch": rec["best_epoch"],
        "first_loss": losses[0] if losses else None,
        "last_loss": sum(losses[-per_epoch:]) / len(losses[-per_epoch:]) if losses else None,
        "before": _public(before), "after": _public(after), "replay_before": replay_before,
        "replay_after": replay_after, "task_class": cfg.task_class,
        "class_before": {key: v for key, v in class_before.items() if key != "rows"} if probe else None,
        "class_after": {key: v for key, v in class_after.items() if key != "rows"} if probe else None,
        "replay_atp_change": replay_after["atp"] / replay_before["atp"] - 1 if replay_before["atp"] else None,
        "teacher_system": cfg.teacher_system, "weights": str(saved) if saved else None, "seconds": time.perf_counter() - t_start,
    }


def _public(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "grades"}


def first_line_of(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def kept_answers(items: list[dict], verifier: Callable, first_line: bool) -> list[dict]:
    """The verified training examples: every distinct answer (the greedy one and the samples) that the verifier
    accepts, cut to its first line with `first_line`."""
    out = []
    for it in items:
        seen = set()
        for a in [it["answer"], *it.get("samples", [])]:
            if not a or (verifier(it["prompt_text"], a) or 0) < 0.5:
                continue
            a = " " * (a[:1] == " ") + first_line_of(a) if first_line else a
            if a.strip() and a not in seen:
                seen.add(a)
                out.append({**it, "answer": a})
    return out


def _validator(ledger, student, teacher, val_items: list[dict], verifier, first_line: bool, temperature: float, topk: int):
    """Score on the validation split, higher is better: (verifier success of greedy answers, −loss of the
    teacher's answers there), so a tie in success goes to the epoch closer to the teacher."""
    answered = [it for it in val_items if it["answer"]]
    examples = [example(student, it["prompt"], it["answer"]) for it in answered]
    kd = bool(examples) and same_tokenizer(teacher, student)
    if kd:
        views = [example(teacher, it.get("teacher_prompt") or it["prompt"], it["answer"]) for it in answered]
        cache_teacher(teacher, examples, temperature, topk, views=views)

    @torch.no_grad()
    def score():
        forget_cached_states(student)
        ok = []
        if verifier is not None:
            for it in val_items:
                g = ledger.call(student, it["prompt"], kind="dream-measure", session="dream",
                                max_tokens=it["max_tokens"])
                v = verifier(it["prompt_text"], g.text)
                if v is not None:
                    ok.append(float(v))
        loss = [batch_loss(student, b, temperature=temperature, ce_weight=0.0 if kd else 1.0).item()
                for b in batches(examples, 8)]
        forget_cached_states(student)
        return (sum(ok) / len(ok) if ok else 0.0, -sum(loss) / max(1, len(loss)))
    return score


def _probe(ledger, student: LocalMember, tasks: list) -> dict:
    """The student on held-out calibration tasks of one class: verifier success and the rows to store."""
    if not tasks:
        return {"success": None, "n": 0, "rows": []}
    from k1.pool.learn.calibrate import calibrate_member

    rows = calibrate_member(ledger, student, tasks, kind="dream-measure")
    return {"success": sum(r["score"] for r in rows) / len(rows), "n": len(rows), "rows": rows}


def _most_atp(router, teacher: Member, student: Member, held: list, train: list, val: list, probe: list, cfg) -> float:
    """The most ATP one DREAM run's member calls may cost (each call's own estimate, as its reservation uses): the
    teacher's answers and samples, the student's measurement before and after (and validation), both replays."""
    def most(m: Member, prompt, max_tokens: int = cfg.max_tokens) -> float:
        return m.estimate_cost(m.prompt_tokens(prompt), max_tokens)

    def prompt(e):
        return e["extra"].get("messages") or e["prompt"]
    members = list(router.pool.members.values())
    atp = sum(most(teacher, prompt(e)) for e in held + train + val) + cfg.samples * sum(most(teacher, prompt(e)) for e in train)
    student_calls = 2 if cfg.verifier is not None else 1  # scoring the teacher's answer, then answering
    atp += 2 * student_calls * sum(most(student, prompt(e)) for e in held)
    atp += cfg.epochs * sum(most(student, prompt(e)) for e in val) if cfg.verifier is not None else 0.0
    atp += 2 * sum(most(student, c.prompt, 64) for c in probe)
    return atp + 2 * sum(max(most(m, prompt(e)) for m in members) for e in held)
