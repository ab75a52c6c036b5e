"""DREAM with a student built from the pool's own use (`DreamConfig.student_kind`: "k1" or "lora").

One task class at a time, and nothing but what the pool did:
1. The class's served prompts are split **by problem** (`students.data.problem_key`: a + b and b + a, one Python
   template, on one side only) into training, trust and replay prompts; calibration prompts are left out.
2. The student is trained by `students.from_pool.student_from_store` on the answers of the training side that the
   class's verifier accepts (any member's, the student's own included), plus — with `practice` — self-instruct
   prompts made from their templates, answered by the teacher (every call charged to the ledger as DREAM's; with
   `shots`, the pool's first accepted answers — or the first accepted practice answers — are shown to the teacher
   as finished turns; under `teacher_system` if given; `samples` more answers at a temperature) and kept only
   where the verifier accepts the answer. No practice prompt is a trust, replay or calibration problem. The verifier only
   judges; it never writes an answer.
   - "k1": the engine trains a copy of the student's K-1 run further (`train_k1_student`, attributed sparse update);
   - "lora": a LoRA adapter on the student (a Hugging Face member), merged.
   The trained weights replace the member's in place, are saved beside the store and published, so a serving
   pool (`StudentPoll`) takes them up without a restart.
   The student learns the accepted answers' *text*, never the teacher's logits: this is sequence-level
   distillation, so the teacher may be of another family with another tokenizer (Gemma-3-270M teaching a
   SmolLM2 student; the report's `same_tokenizer` says which case ran).
3. Trust comes from the **trust prompts only** — never trained on, never replayed: one verifier-graded outcome per
   prompt (source "dream"); the class's calibration tasks are asked before and after and the student's
   calibration for the class is replaced by the after-measurement, so it enters `auto` for the class only if it
   passes there (a class without calibration tasks, such as copy, is calibrated on the trust prompts). The cost change is measured by replaying the **replay prompts** through the pool's own choice.
4. With `controls`, the two controls answer the same trust prompts beside the student (`evaluate.py`): the
   constant answer (the most common training answer) and a format-only student (trained from the same weights
   with the same recipe on the same prompts, every number, copied string or prose word in the answers wrong).
   A student that beats neither has learnt the answer's form, not the class. Their calls are DREAM's measurement
   ("dream-measure" on the ledger); the control is never served.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from k1.errors import BackendError
from k1.pool.errors import BudgetExhausted


def split_prompts(exps: list[dict], task_class: str, holdout: float, seed: int) -> tuple[list, list, list]:
    """(train, trust, replay) experiences, whole problems on one side; `holdout` of the problems are held out and
    shared between trust and replay (trust gets the larger half)."""
    from k1.pool.learn.students.data import problem_key

    groups: dict = {}
    for e in exps:
        groups.setdefault(problem_key(task_class, e["prompt"]), []).append(e)
    keys = sorted(groups, key=repr)
    random.Random(f"dream-split-{seed}").shuffle(keys)
    n_held = max(min(len(keys) - 1, max(2, round(holdout * len(keys)))), 0)
    held = keys[:n_held]
    n_trust = -(-len(held) // 2)
    pick = lambda ks: [e for k in ks for e in groups[k]]
    return pick(keys[n_held:]), pick(held[:n_trust]), pick(held[n_trust:])


def _item(e: dict, max_tokens: int) -> dict:
    return {"prompt": (e.get("extra") or {}).get("messages") or e["prompt"], "prompt_text": e["prompt"],
            "answer": e.get("response") or "", "context": e["context"], "max_tokens": max_tokens}


def _public(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "grades"}


def adopt(member, spec: dict) -> None:
    """Load the trained student's weights (its pool-file entry `spec`) into `member` in place."""
    from k1.pool.learn.weights import forget_cached_states

    if spec["kind"] == "k1":
        from k1.engine.run.generate import load_run_model

        model, _, _ = load_run_model(Path(spec["run"]))
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(spec["path"])
    member.model.load_state_dict(model.state_dict())
    member.model.eval()
    forget_cached_states(member)


def held_out_success(ledger, member, items: list[dict], verifier) -> dict:
    """`member` answers every item (greedy; charged as "dream-measure") → the verifier's mean success."""
    ok = []
    for it in items:
        g = ledger.call(member, it["prompt"], kind="dream-measure", session="dream", max_tokens=it["max_tokens"])
        v = verifier(it["prompt_text"], g.text)
        if v is not None:
            ok.append(float(v))
    return {"verifier_success": sum(ok) / len(ok) if ok else None, "items": len(items), "judged": len(ok)}


def controls(router, cfg, pairs: list, out_dir: Path, items: list[dict], verifier, *, name: str, base,
             options: dict) -> dict:
    """The constant answer and a format-only student (trained as the student was, from the same `base`) on
    `items`; → {"constant": {"answer", ...success}, "format_only": {...success, "examples"}}."""
    from k1.pool.learn.students import train_student
    from k1.pool.learn.students.evaluate import (
        ConstantMember,
        constant_answer,
        format_only,
    )
    from k1.pool.pool import load_member

    answer = constant_answer(pairs)
    const = held_out_success(router.ledger, ConstantMember(answer, name=f"{name}-constant"), items, verifier)
    wrong = format_only(pairs, cfg.seed)
    spec = train_student(cfg.student_kind, wrong, out_dir, name=f"{name}-format-only", base=base, seed=cfg.seed,
                         **options)
    member = load_member({k: v for k, v in spec.items() if k != "record"})
    try:
        fmt = held_out_success(router.ledger, member, items, verifier)
    finally:
        member.close()
    return {"constant": {"answer": answer, **const}, "format_only": {"examples": len(wrong), **fmt}}


def dream_student(router, cfg, *, pick_pair, measure, probe, replay, same_tokenizer=None) -> dict:
    """One DREAM run that trains `cfg.student_kind` students (module docstring); → the report. `dream()` passes
    its own choice of teacher and student, held-out measurement, calibration probe, replay and tokenizer check
    (so the two ways of DREAM measure alike, and this file does not import dream.py back)."""
    from k1.pool.learn.calibrate import MAX_PER_CLASS, CalTask, calibration_tasks
    from k1.pool.learn.students.data import problem_key
    from k1.pool.learn.students.from_pool import student_from_store
    from k1.pool.learn.verifiers import class_verifier
    from k1.pool.learn.weights import publish_student
    from k1.pool.members.hf import HFMember
    from k1.pool.members.k1 import K1Member
    from k1.pool.route.taskclass import question

    t_start = time.perf_counter()
    if cfg.task_class is None:
        raise BackendError("DREAM's student needs --task-class: it learns one class, judged by its verifier")
    verifier = cfg.verifier or class_verifier(cfg.task_class)
    t, s = pick_pair(router, cfg.teacher, cfg.student)
    want = {"k1": K1Member, "lora": HFMember}[cfg.student_kind]
    if not isinstance(s, want):
        raise BackendError(f"a {cfg.student_kind!r} student must be a {'k1' if cfg.student_kind == 'k1' else 'hf'} "
                           f"member; {s.name!r} is {s.kind!r} (name one with --student)")
    tasks = [c for c in calibration_tasks(cfg.class_tasks) if c.cls == cfg.task_class]
    reserved = {question(c.text).strip() for c in calibration_tasks(MAX_PER_CLASS)}
    exps = [e for e in router.store.experiences()
            if e["context"] == cfg.task_class and question(e["prompt"]).strip() not in reserved]
    if len({problem_key(cfg.task_class, e["prompt"]) for e in exps}) < 3:
        raise BackendError(f"DREAM needs at least 3 served problems of class {cfg.task_class!r} (one to learn "
                           f"from, one to trust on, one to replay); the pool has {len(exps)} experiences of it")
    train_exps, trust_exps, replay_exps = split_prompts(exps, cfg.task_class, cfg.holdout, cfg.seed)
    trust = [_item(e, cfg.max_tokens) for e in trust_exps]
    replay_prompts = [_item(e, cfg.max_tokens)["prompt"] for e in replay_exps]
    held_texts = {question(e["prompt"]).strip() for e in trust_exps + replay_exps}
    calibrated_on = "reserved calibration tasks"
    if not tasks:  # a class the calibration set has no tasks of: the trust prompts are its calibration
        tasks = [CalTask(cfg.task_class, f"dream-trust-{i}", it["prompt"] if isinstance(it["prompt"], list) else
                         [{"role": "user", "content": question(it["prompt"])}],
                         lambda a, q=it["prompt_text"]: verifier(q, a) or 0.0) for i, it in enumerate(trust)]
        calibrated_on = "trust prompts"

    def charged(member, messages, **options):  # the teacher's practice: charged to the ledger as DREAM's
        return router.ledger.call(member, messages, kind="dream", session="dream", task_class="dream", **options)

    router.metabolism.enter_dream(f"training a {cfg.student_kind} student {s.name} on {cfg.task_class}")
    try:
        replay_before = replay(router, replay_prompts, verifier, cfg.max_tokens)
        before = measure(router.ledger, s, trust, verifier)
        class_before = probe(router.ledger, s, tasks)
        base = s.run_dir if cfg.student_kind == "k1" else s
        with tempfile.TemporaryDirectory(prefix="k1-dream-") as tmp:
            options = dict(cfg.student_options or {})
            if cfg.student_kind == "lora":
                options.setdefault("epochs", cfg.epochs)
                options.setdefault("lr", cfg.lr)
            else:  # from the weights the member holds now (earlier DREAM cycles included), not its run's checkpoint
                options.setdefault("quiet", cfg.quiet)
                options.setdefault("init", {k: v.detach().clone() for k, v in s.model.state_dict().items()})
            out = student_from_store(router, cfg.task_class, Path(tmp) / "student", kind=cfg.student_kind,
                                     name=s.name, teacher=t.name, practice=cfg.practice, shots=cfg.shots,
                                     base=base, seed=cfg.seed, max_tokens=cfg.max_tokens, experiences=train_exps,
                                     exclude=held_texts, generate=charged, verifier=verifier,
                                     system=cfg.teacher_system, samples=cfg.samples, **options)
            ctrl = None
            if cfg.controls:  # before the student's weights are adopted: the control starts from the same ones
                ctrl = controls(router, cfg, out["pairs"], Path(tmp) / "format-only",
                                [it for it in trust if it["answer"]], verifier, name=s.name, base=base,
                                options=options)
            adopt(s, out["member"])
        after = measure(router.ledger, s, trust, verifier)
        class_after = probe(router.ledger, s, tasks)
        # trust from prompts neither trained on nor replayed
        saved = publish_student(router, s, after["grades"], class_after["rows"] if tasks else None, cfg.task_class,
                                cfg.task_class, cfg.weights_dir)
    except BudgetExhausted as e:  # others spent the budget meanwhile: one line; no weights or trust were saved
        raise BudgetExhausted(f"DREAM stopped, nothing saved: {e}") from None
    finally:
        router.metabolism.leave_dream()
    try:
        replay_after = replay(router, replay_prompts, verifier, cfg.max_tokens)
    except BudgetExhausted as e:
        raise BudgetExhausted(f"DREAM saved the student ({saved}) but could not replay its workload: {e}") from None
    return {
        "teacher": t.name, "student": s.name, "method": f"student:{cfg.student_kind}", "task_class": cfg.task_class,
        "distillation": "sequence-level",
        "same_tokenizer": bool(same_tokenizer(t, s)) if same_tokenizer is not None else None,
        "controls": ctrl,
        "experiences": len(exps), "train_prompts": len(train_exps), "trust_prompts": len(trust),
        "replay_prompts": len(replay_prompts), "held_out": len(trust), "train": out["examples"],
        "from_store": out["from_store"], "practice": out["practice"], "verified_only": True,
        "before": _public(before), "after": _public(after), "replay_before": replay_before,
        "replay_after": replay_after,
        "replay_atp_change": replay_after["atp"] / replay_before["atp"] - 1 if replay_before["atp"] else None,
        "calibrated_on": calibrated_on, "class_before": {k: v for k, v in class_before.items() if k != "rows"} if tasks else None,
        "class_after": {k: v for k, v in class_after.items() if k != "rows"} if tasks else None,
        "record": out["member"].get("record"), "trained_on": out["prompts"], "weights": str(saved) if saved else None,
        "seconds": time.perf_counter() - t_start,
    }
