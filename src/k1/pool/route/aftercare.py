"""Aftercare: what happens once a member has answered (or failed), as hooks run in order — the way the engine's
hooks run after a step. `finish` charges the answer, then runs `HOOKS`:
- `verdict`:     the caller's verifier, else the judge member (`[pool] judge`, charged as kind "judge");
- `cross_check`: a share of calls (`[pool] cross_check`) a second member also answers (charged, "cross-check");
- `experience`:  SNARC signals, against the tenant's own recent experiences only, and the experience row;
- `metabolism`:  the metabolic state learns the outcome — only from a trusted tenant (one tenant cannot steer
                 the global state, e.g. force CRISIS with its own failing feedback);
- `self_verify`: where a verifier exists for the task class and nothing judged the answer, the pool judges it
                 itself in the background (kind "verify" in the ledger), so trust moves without user feedback.
`failed` charges a member's failure, counts it against its trust and cools it down; `feedback` is the later
verdict of the tenant that asked (once per request id).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from k1.errors import BackendError
from k1.pool.errors import BudgetExhausted, Busy, FeedbackExists, UnknownRequest
from k1.pool.members.base import CallFailed, Cost, Generation, Member
from k1.pool.route.call import Call, Routed
from k1.pool.route.gates import if_free
from k1.pool.route.intake import CLASSIFY_CHARS, check_class
from k1.pool.route.snarc import importance, snarc
from k1.pool.tenants import OPERATOR, Tenant

log = logging.getLogger(__name__)



@dataclass
class After:
    """What aftercare learns about one answer, hook by hook."""

    gen: Generation
    outcome: float | None = None
    source: str | None = None
    others: list[str] | None = None
    signals: dict | None = None
    importance: float = 0.0


def verdict(rt, call: Call, a: After) -> None:
    if call.verifier is not None:
        v = call.verifier(call.text, a.gen.text)
        a.outcome, a.source = (None if v is None else float(v)), "verifier"
    elif rt.settings.judge and rt.settings.judge != a.gen.member:
        a.outcome, a.source = judge(rt, call, a.gen), "judge"
    if a.outcome is not None:
        rt.store.record_outcome(a.gen.member, call.task_class, a.outcome, a.source, call.request)


def cross_check(rt, call: Call, a: After) -> None:
    with rt.lock:
        check = rt.rng.random() < rt.settings.cross_check
        others = [n for n in rt.pool.names if n != a.gen.member]
        name = rt.rng.choice(others) if check and others else None
    if name is None:
        return
    g = side_call(rt, call, name, "cross-check", call.prompt, max(a.gen.completion_tokens, 1))
    a.others = [g.text] if g is not None else None


def experience(rt, call: Call, a: After) -> None:
    text = call.text[:CLASSIFY_CHARS]
    memory = rt.memory_of(call.tenant)
    reference = rt.reference()
    with if_free(rt.gates.get(reference.name) if reference is not None else None) as free:
        try:
            a.signals = snarc(text, a.gen, reference=reference if free else None, memory=list(memory),
                              reward=a.outcome, others=a.others)
        except BackendError:  # the reference cannot read this much: no surprise rather than no answer
            a.signals = snarc(text, a.gen, reference=None, memory=list(memory), reward=a.outcome, others=a.others)
    a.importance = importance(a.signals, rt.settings.snarc)
    rt.store.add_experience({
        "ts": time.time(), "request": call.request, "session": call.session, "prompt": call.text,
        "response": a.gen.text, "member": a.gen.member, "task_class": call.task_class,
        "latency_s": a.gen.cost.latency_s, "atp": a.gen.cost.atp, "outcome": a.outcome, **a.signals,
        "importance": a.importance, "tenant": call.tenant.name,
        "extra": {"state": call.state, "context_signals": call.reading.as_dict(), "finish_reason": a.gen.finish_reason,
                  "messages": call.prompt if isinstance(call.prompt, list) else None,
                  "utilities": call.decision.utilities if call.decision else None, "stream": call.stream,
                  "tried": call.tried, "task_class_source": call.class_source, "label_trusted": call.tenant.trusted},
    })
    rt.contexts.add(call.session, text)  # only a prompt that was answered joins the history
    rt.cooldowns.answered(a.gen.member)
    with rt.lock:
        memory.append(text + "\n" + a.gen.text[:CLASSIFY_CHARS])


def metabolism(rt, call: Call, a: After) -> None:
    rt.observe(call.tenant, None if a.outcome is None else a.outcome >= 0.5, a.importance)


def self_verify(rt, call: Call, a: After) -> None:
    if a.outcome is not None or rt.verifiers is None:
        return
    check = rt.verifiers(call.task_class)
    if check is None:
        return
    with rt.lock:  # a bounded backlog: a flood of verifiable prompts cannot queue work without end
        if rt.verifying >= MAX_PENDING_VERIFICATIONS:
            return
        rt.verifying += 1
    rt.background.submit(_verify_later, rt, call, a.gen, check)


HOOKS = [verdict, cross_check, experience, metabolism, self_verify]


def finish(rt, call: Call, gen: Generation) -> Routed:
    """Charge the answer, run the hooks, → the routed answer."""
    rt.ledger.charge(call.reservation, gen.member, "success", None, gen, request=call.request, session=call.session,
                     task_class=call.task_class, stream=call.stream)
    if call.quiet:
        return Routed(gen, call.request, call.reading, call.task_class, call.state, call.decision)
    a = After(gen)
    for hook in HOOKS:
        hook(rt, call, a)
    return Routed(gen, call.request, call.reading, call.task_class, call.state, call.decision, a.outcome, a.signals,
                  a.importance)


def failed(rt, call: Call, member: Member, e: Exception) -> None:
    cost = getattr(e, "cost", None)
    if cost is None and member.last_generation is not None:  # a local member that raised mid-answer
        cost = member.last_generation.cost
    reason = getattr(e, "reason", "")
    path = {"timeout": "timeout", "unavailable": "unavailable"}.get(reason, "failure")
    rt.ledger.charge(call.reservation, member.name, path, cost, request=call.request, session=call.session,
                     task_class=call.task_class, stream=call.stream)
    if call.quiet:
        return
    rt.store.record_outcome(member.name, call.task_class, 0.0, f"call-{path}", call.request)
    rt.cooldowns.failed(member.name)
    rt.observe(call.tenant, False, None, member_down=reason == "unavailable")


def side_call(rt, call: Call, name: str, kind: str, prompt, max_tokens: int) -> Generation | None:
    """Another member's call for this request (judge, cross-check): its gate waited for like any request (None
    if busy), charged as `kind` through the ledger; a failure (or no budget left) is logged and gives None."""
    gate = rt.gates[name]
    try:
        gate.acquire(name)
    except Busy:
        return None
    try:
        return rt.ledger.call(rt.pool[name], prompt, kind=kind, request=call.request, session=call.session,
                              task_class=call.task_class, max_tokens=max_tokens)
    except (CallFailed, BackendError) as e:  # the member failed: charged (by the ledger), counted, cooled
        log.warning("%s by %s failed: %s", kind, name, e)
        rt.store.record_outcome(name, call.task_class, 0.0, "call-failure", call.request)
        rt.cooldowns.failed(name)
        return None
    except BudgetExhausted as e:
        log.warning("%s by %s skipped: %s", kind, name, e)
        return None
    finally:
        gate.release()


def judge(rt, call: Call, gen: Generation) -> float | None:
    ask = f"Question: {call.text}\nAnswer: {gen.text}\nIs the answer correct? Reply with yes or no."
    g = side_call(rt, call, rt.settings.judge, "judge", [{"role": "user", "content": ask}], 3)
    if g is None:
        return None
    word = g.text.strip().lower()
    return 1.0 if word.startswith("yes") else 0.0 if word.startswith("no") else None


def _verify_later(rt, call: Call, gen: Generation, check) -> None:
    t0 = time.perf_counter()
    try:
        res = rt.ledger.reserve(0.0, tenant=call.tenant, kind="verify", what="verifying an answer")
        v = check(call.text, gen.text)
        rt.ledger.charge(res, "verifier", "success", Cost(0.0, time.perf_counter() - t0, 0.0),
                         request=call.request, session=call.session, task_class=call.task_class)
        if v is None:
            return
        v = float(v)
        rt.store.record_outcome(gen.member, call.task_class, v, "verify", call.request)
        rt.store.update_experience(call.request, outcome=v, reward=v)
        rt.observe(call.tenant, v >= 0.5, None)
    except Exception as e:  # a verifier's failure never reaches a caller: it only means no verdict
        log.warning("self-verification of %s failed: %s: %s", call.request, type(e).__name__, e)
    finally:
        with rt.lock:
            rt.verifying -= 1


MAX_PENDING_VERIFICATIONS = 64  # answers waiting for the background verifier; more are left unverified


def new_background() -> ThreadPoolExecutor:
    """One worker: background verification never takes more than one thread from the server."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="k1-verify")


def feedback(rt, request: str, success: float, source: str, task_class: str | None, tenant: Tenant) -> dict:
    """The outcome of an earlier answer, once per request id, from the tenant that asked (or an admin): trust,
    the experience's reward and importance. With `task_class` the experience is relabelled; the classifier
    learns the label only from a trusted tenant."""
    e = rt.store.experience(request)
    if e is None or not tenant.owns(e.get("tenant") or OPERATOR.name):  # another's id reads as unknown
        raise UnknownRequest(f"no answer with request id {request!r}; give the `k1.request` of a response")
    check_class(rt, task_class, tenant)
    success, cls = float(success), task_class or e["task_class"]
    if not rt.store.record_feedback(e["member"], cls, success, source, request):
        raise FeedbackExists(f"request {request!r} already has its outcome; feedback counts once per request")
    signals = {k: e[k] for k in ("surprise", "novelty", "arousal", "conflict")} | {"reward": success}
    imp = importance(signals, rt.settings.snarc)
    relabel = {"task_class": task_class, "extra": json.dumps(e["extra"] | {
        "task_class_source": "feedback", "label_trusted": tenant.trusted})} if task_class else {}
    rt.store.update_experience(request, outcome=success, reward=success, importance=imp, **relabel)
    rt.observe(tenant, success >= 0.5, imp)
    return {"request": request, "member": e["member"], "task_class": cls, "success": success, "importance": imp,
            "context": cls}  # "context": the old name, for one release
