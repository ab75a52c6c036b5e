"""DREAM: consolidate the pool's experiences by distilling a trusted teacher into a cheaper student.

1. Take the most important experiences (prioritized by SNARC importance) and split off a held-out share.
2. Teacher = the most trusted member (mean Beta trust over its contexts) with the role "teacher" if any
   has it; student = a cheaper trainable local member (role "student" first). The teacher answers every
   prompt (its calls are charged to the ledger under context "dream").
3. Train the student (AdamW on all its parameters): logit distillation — KL(teacher ‖ student) at
   temperature T on the answer tokens, × T² — when both share a tokenizer; otherwise sequence-level
   distillation: cross-entropy on the teacher's answer with the prompt positions masked out.
4. Measure on the held-out experiences before and after: the student's bits per byte of the teacher's
   answers, its top-1 agreement with them (teacher-forced), and a verifier's success where one is given.
5. Update the student's trust from that measurement (one outcome per held-out item, source "dream"), save
   the student's weights (safetensors, applied again when the pool is reopened), and replay the held-out
   prompts through the router before and after on a scratch copy of the store: the cost change is measured.
Every number in the returned report is computed here.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.progress import Progress

from k1.common.trust import beta_mean
from k1.errors import BackendError
from k1.pool.members.base import Member, prompt_text
from k1.pool.members.local import LocalMember
from k1.pool.route.snarc import prioritized_sample
from k1.pool.learn.weights import forget_cached_states, save_student

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
def _ids(member: LocalMember, prompt, answer: str) -> tuple[list[int], int]:
    """prompt + answer ids (cut from the left to the member's context) and where the answer starts."""
    p, a = member.prompt_ids(prompt), member.encode(answer)
    limit = getattr(member, "context", None) or member.max_positions
    ids = p + a
    if limit and len(ids) > limit:
        ids = ids[-limit:]
    return ids, max(1, len(ids) - len(a))


def _logits(member: LocalMember, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids])
    out = member.model(x)
    return (out[0] if isinstance(out, tuple) else out.logits)[0]  # [T, V]


def distill_loss(student: LocalMember, teacher: Member, prompt, answer: str, logit_kd: bool, T: float) -> torch.Tensor:
    ids, start = _ids(student, prompt, answer)
    s = _logits(student, ids)[start - 1:-1]  # predictions of the answer tokens, [A, V]
    if logit_kd:
        with torch.no_grad():
            t = _logits(teacher, ids)[start - 1:-1]
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T * T
    return F.cross_entropy(s, torch.tensor(ids[start:]))  # prompt positions carry no label


@torch.no_grad()
def measure(student: LocalMember, items: list[dict], verifier: Callable | None = None) -> dict:
    """Held-out quality: bits per byte of the teacher's answers, top-1 agreement, verifier success."""
    bits = n_bytes = agree = n_tok = 0.0
    ok = []
    for it in items:
        if not it["answer"]:
            continue
        sc = student.score(it["prompt"], it["answer"])
        bits += sc.bits_per_byte * sc.n_bytes
        n_bytes += sc.n_bytes
        ids, start = _ids(student, it["prompt"], it["answer"])
        pred = _logits(student, ids)[start - 1:-1].argmax(-1)
        agree += (pred == torch.tensor(ids[start:])).sum().item()
        n_tok += len(ids) - start
        if verifier is not None:
            g = student.generate(it["prompt"], max_tokens=it["max_tokens"])
            v = verifier(it["prompt_text"], g.text)
            if v is not None:
                ok.append(float(v))
    return {"bits_per_byte": bits / max(n_bytes, 1), "agreement": agree / max(n_tok, 1),
            "verifier_success": sum(ok) / len(ok) if ok else None, "items": len(items)}


def distill(student: LocalMember, teacher: Member, items: list[dict], *, epochs: int, lr: float, temperature: float,
            logit_kd: bool, rng: random.Random, quiet: bool = True) -> list[float]:
    """Train the student on `items` (AdamW on all its parameters); → the loss of every step."""
    model = student.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    items = list(items)
    with Progress(disable=quiet) as bar:
        task = bar.add_task(f"distilling {teacher.name} → {student.name}", total=epochs * len(items))
        for _ in range(epochs):
            rng.shuffle(items)
            for it in items:
                loss = distill_loss(student, teacher, it["prompt"], it["answer"], logit_kd, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(loss.item())
                bar.advance(task)
    model.eval()
    forget_cached_states(student)
    return losses


# ---- replay ---------------------------------------------------------------------------------------------
def replay(router, prompts: list[str], verifier: Callable | None, max_tokens: int) -> dict:
    """Run `prompts` through a router on a scratch copy of its store (greedy selection): cost and success."""
    from k1.pool.route.router import Router
    from k1.pool.store import PoolStore

    tmp = Path(tempfile.mkdtemp(prefix="k1-dream-"))
    try:
        src = sqlite3.connect(router.store.path)
        dst = sqlite3.connect(tmp / "replay.sqlite")
        src.backup(dst)
        src.close()
        dst.close()
        store = PoolStore(tmp / "replay.sqlite")
        store.reset_budget()
        pool = router.pool
        for m in pool.members.values():  # measure cold: a prefix cached by an earlier replay is not DREAM's doing
            if getattr(m, "prefix_cache", None) is not None:
                m.prefix_cache.clear()
        scratch = copy.copy(pool)  # the same loaded members under replay settings; the pool itself is untouched
        scratch.settings = pool.settings.model_copy(update={"selection": "greedy", "cross_check": 0.0, "judge": None,
                                                           "budget_atp": float("inf")})
        try:
            r = Router(scratch, store)
            atp, ok, members = 0.0, [], {}
            for p in prompts:
                out = r.generate(p, session="dream-replay", max_tokens=max_tokens)
                atp += out.generation.cost.atp
                members[out.member] = members.get(out.member, 0) + 1
                if verifier is not None:
                    v = verifier(prompt_text(p), out.generation.text)
                    if v is not None:
                        ok.append(float(v))
        finally:
            store.close()
        return {"atp": atp, "calls": len(prompts), "members": members,
                "verifier_success": sum(ok) / len(ok) if ok else None}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the whole phase -------------------------------------------------------------------------------------
def dream(router, *, teacher: str | None = None, student: str | None = None, k: int = 64, holdout: float = 0.25,
          epochs: int = 3, lr: float = 3e-4, temperature: float = 2.0, max_tokens: int = 32,
          verifier: Callable | None = None, weights_dir: str | Path | None = None, seed: int = 0,
          quiet: bool = True, task_class: str | None = None, class_tasks: int = 16,
          verified_only: bool = False) -> dict:
    """With `verified_only`, the student trains only on the teacher's answers that `verifier` accepts (the
    teacher is not always right, and the student learns its mistakes as readily as its sums). With `task_class`, only that class's experiences are consolidated, and the student is also measured
    before and after on `class_tasks` calibration tasks of the class (judged by their verifiers; never
    trained on): that measurement replaces its calibration for the class, so its trust follows it."""
    t_start = time.perf_counter()
    rng = random.Random(seed)
    store = router.store
    exps = store.experiences()
    probe = []
    if task_class is not None:
        from k1.pool.learn.calibrate import calibration_tasks
        probe = [c for c in calibration_tasks(class_tasks) if c.cls == task_class]
        held_texts = {c.text for c in probe}
        exps = [e for e in exps if e["context"] == task_class and e["prompt"] not in held_texts]
    if verified_only and verifier is None:
        raise BackendError("DREAM's verified_only needs a verifier")
    if len(exps) < 4:
        raise BackendError(f"DREAM needs at least 4 experiences{f' of class {task_class!r}' if task_class else ''}; "
                           f"the pool has {len(exps)} (use it first)")
    t, s = pick_pair(router, teacher, student)
    logit_kd = same_tokenizer(t, s)
    router.metabolism.enter_dream(f"distilling {t.name} → {s.name}")
    try:
        chosen = prioritized_sample(exps, k, rng=rng)
        n_held = min(len(chosen) - 1, max(1, round(holdout * len(chosen))))
        held, train = chosen[:n_held], chosen[n_held:]  # the sample's order is random: a random split
        items = {"train": [], "held": []}
        with Progress(disable=quiet) as bar:
            task = bar.add_task("teacher answers", total=len(chosen))
            for part, group in (("train", train), ("held", held)):
                for e in group:
                    prompt = e["extra"].get("messages") or e["prompt"]
                    g = t.generate(prompt, max_tokens=max_tokens)
                    store.charge(t.name, "success", g.cost.atp, g.cost.flops, g.cost.latency_s, context="dream",
                                 session="dream", prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens)
                    items[part].append({"prompt": prompt, "prompt_text": e["prompt"], "answer": g.text,
                                        "context": e["context"], "max_tokens": max_tokens})
                    bar.advance(task)
        prompts = [it["prompt"] for it in items["held"]]
        replay_before = replay(router, prompts, verifier, max_tokens)
        before = measure(s, items["held"], verifier)
        class_before = _probe(s, probe)
        train_items = [it for it in items["train"] if it["answer"]]
        if verified_only:
            train_items = [it for it in train_items if (verifier(it["prompt_text"], it["answer"]) or 0) >= 0.5]
            if not train_items:
                raise BackendError(f"none of the teacher's {len(items['train'])} training answers passed the verifier")
        losses = distill(s, t, train_items, epochs=epochs, lr=lr, temperature=temperature, logit_kd=logit_kd,
                         rng=rng, quiet=quiet)
        after = measure(s, items["held"], verifier)
        class_after = _probe(s, probe)
        if probe:  # the student's prior for this class is now what it solves after DREAM
            store.set_calibration(s.name, class_after["rows"], task_class)
        # the student's trust follows the measurement: one graded outcome per held-out item
        for it in items["held"]:
            a = measure(s, [it], verifier)
            grade = a["verifier_success"] if a["verifier_success"] is not None else a["agreement"]
            store.record_outcome(s.name, it["context"] or "dream", grade, "dream")
        saved = save_student(router, s, weights_dir)
    finally:
        router.metabolism.leave_dream()
    replay_after = replay(router, prompts, verifier, max_tokens)
    return {
        "teacher": t.name, "student": s.name, "method": "logit-kd" if logit_kd else "sequence-kd",
        "temperature": temperature if logit_kd else None, "experiences": len(chosen), "train": len(train_items),
        "held_out": len(items["held"]), "verified_only": verified_only, "epochs": epochs,
        "first_loss": losses[0] if losses else None,
        "last_loss": sum(losses[-len(train_items):]) / max(1, len(train_items)) if losses else None,
        "before": before, "after": after, "replay_before": replay_before, "replay_after": replay_after,
        "task_class": task_class,
        "class_before": {k: v for k, v in class_before.items() if k != "rows"} if probe else None,
        "class_after": {k: v for k, v in class_after.items() if k != "rows"} if probe else None,
        "replay_atp_change": replay_after["atp"] / replay_before["atp"] - 1 if replay_before["atp"] else None, "weights": str(saved) if saved else None,
        "seconds": time.perf_counter() - t_start,
    }


def _probe(student: LocalMember, tasks: list) -> dict:
    """The student on held-out calibration tasks of one class: verifier success and the rows to store."""
    if not tasks:
        return {"success": None, "n": 0, "rows": []}
    from k1.pool.learn.calibrate import calibrate_member

    rows = calibrate_member(student, tasks)
    return {"success": sum(r["score"] for r in rows) / len(rows), "n": len(rows), "rows": rows}
