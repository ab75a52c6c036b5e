"""Intake: what a request is before any member runs — the tenant's own session, the task class (read from a
bounded head of the prompt, outside any lock), the context signals, the metabolic state, and the choice.

Refused here, before anything is recorded or charged: an exhausted budget (or tenant share), an unknown
model, and a task class an untrusted tenant names that is not in the pool's fixed set."""

from __future__ import annotations

import uuid

from k1.pool.errors import UnknownModel, UnknownTaskClass
from k1.pool.members.base import Prompt, prompt_text
from k1.pool.route.call import Call, Verifier
from k1.pool.route.context import ContextReading
from k1.pool.route.gates import all_free, if_free
from k1.pool.route.taskclass import TASK_CLASSES
from k1.pool.tenants import OPERATOR, Tenant

CLASSIFY_CHARS = 4096  # what the classifiers and SNARC read of a prompt: their cost never grows with the prompt


def known_classes(rt) -> set[str]:
    """The fixed set a client may name: built-in, configured, calibrated and learnt from trusted labels."""
    cal = {c for _, c in rt.store.calibration_summary()}
    return set(TASK_CLASSES) | set(rt.settings.task_classes) | cal | set(rt.task_classes.classes)


def check_class(rt, task_class: str | None, tenant: Tenant) -> None:
    if task_class is not None and not tenant.trusted and task_class not in known_classes(rt):
        raise UnknownTaskClass(f"task class {task_class!r} is not one this pool knows; use one of "
                               f"{', '.join(sorted(known_classes(rt)))}, or leave it out")


def session_of(tenant: Tenant, session: str) -> str:
    """Tenants never share a session: the operator's ids stay as they were, a tenant's get its name."""
    return session if tenant.name == OPERATOR.name else f"{tenant.name}/{session}"


def begin(rt, prompt: Prompt, model: str, session: str, task_class: str | None, stream: bool, kw: dict,
          tenant: Tenant, verifier: Verifier | None) -> Call:
    text = prompt_text(prompt)
    if rt.students is not None:
        rt.students.look()  # a student another replica's DREAM published (at most every few seconds; no lock)
    rt.ledger.check(tenant)
    if model != "auto" and model not in rt.pool.members:
        raise UnknownModel(model, rt.pool.names)
    check_class(rt, task_class, tenant)
    sid, head, ref = session_of(tenant, session), text[:CLASSIFY_CHARS], rt.reference()
    if tenant.probe:  # a probe leaves no context history: the reading a replay gets
        r = ContextReading("probe", 0.0, 0.0, None)
    else:
        with if_free(rt.gates.get(ref.name) if ref is not None else None) as free:  # a busy reference is not waited for
            r = rt.contexts.read(sid, head, reference=ref if free else None)
    cls = task_class or rt.task_classes.classify(head)
    with rt.state_lock:
        state = rt.metabolism.before_call(rt.ledger.left())
        policy = rt.metabolism.policy
    if policy.unload_idle:
        with all_free(rt.gates) as free:  # REST: a member is never closed mid-call
            if free:
                rt.pool.unload_idle(rt.settings.idle_unload_s)
    decision = None if model != "auto" else rt.choice.choose(
        cls, max(1, len(text.encode("utf-8", "replace")) // 4), kw["max_tokens"],
        policy.mode or rt.settings.selection, rt.settings.cost_weight * policy.cost_scale)
    return Call(uuid.uuid4().hex, sid, prompt, text, r, cls, state, decision, None if model == "auto" else model,
                stream, kw, tenant, verifier, class_source="caller" if task_class else "classifier",
                quiet=tenant.probe)


def replay_call(rt, prompt: Prompt, max_tokens: int, kind: str = "dream") -> Call:
    """A quiet call (DREAM's replay): the task class and the greedy choice as a request would get them, charged
    as `kind`; it leaves no outcome, experience, context history or state change behind."""
    text = prompt_text(prompt)
    label = rt.task_classes.classify(text[:CLASSIFY_CHARS])
    decision = rt.choice.choose(label, max(1, len(text.encode("utf-8", "replace")) // 4), max_tokens, "greedy",
                                rt.settings.cost_weight)
    kw = {"max_tokens": max_tokens, "temperature": 0.0, "stop": None, "seed": None}
    return Call(uuid.uuid4().hex, f"{kind}-replay", prompt, text, ContextReading("replay", 0.0, 0.0, None),
                label, rt.metabolism.state, decision, None, False, kw, kind=kind, quiet=True, drained=True)
