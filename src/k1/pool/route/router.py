"""`Router`: one call through the pool, as a pipeline — classify (outside any lock) → `choice` → `attempts`
→ `aftercare` — with every ATP spend going through the `ledger` (reserve, then charge).

Every way a call can end is charged: success, failure, timeout, unavailable and cancelled, streamed or not.
Answer quality comes from a verifier passed with the call, a judge member, the pool's own background
verification, or later feedback (`feedback`, `/v1/feedback`, once per request id, by the tenant that asked).
No lock is held while a model runs: the router's locks guard a few small fields (the rng, the SNARC memories,
the metabolic state), and each member's `Gate` is its own turn.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from k1.pool.errors import (
    Cancelled,
    FeedbackExists,
    UnknownModel,
    UnknownRequest,
    UnknownTaskClass,
)
from k1.pool.ledger import Ledger
from k1.pool.members.base import Member, Prompt, prompt_text
from k1.pool.pool import Pool
from k1.pool.route import aftercare
from k1.pool.route.attempts import attempts
from k1.pool.route.call import Call, Routed, RoutedStream, Verifier
from k1.pool.route.choice import Choice
from k1.pool.route.context import ContextClassifier, ContextReading
from k1.pool.route.cooldown import Cooldowns
from k1.pool.route.gates import all_free, build_gates, if_free
from k1.pool.route.limits import Limits
from k1.pool.route.metabolic import Metabolism
from k1.pool.route.select import Decision
from k1.pool.route.snarc import importance
from k1.pool.route.taskclass import (
    TASK_CLASSES,
    TaskClassifier,
    learned_examples,
    training_prompts,
)
from k1.pool.store import PoolStore
from k1.pool.tenants import OPERATOR, Tenant

log = logging.getLogger(__name__)
CLASSIFY_CHARS = aftercare.CLASSIFY_CHARS


class Router:
    def __init__(self, pool: Pool, store: PoolStore | None = None, *, clock=time.time, limits: Limits | None = None,
                 verifiers: Callable[[str], Verifier | None] | None = None):
        self.pool, self.settings = pool, pool.settings
        self.store = store or PoolStore(self.settings.store)
        self.ledger = Ledger(self.store, self.settings.budget_atp)
        self.rng, self.lock, self._state = random.Random(self.settings.seed), threading.Lock(), threading.Lock()
        self.verifiers, self.background, self.aftercare = verifiers, aftercare.new_background(), aftercare
        self.set_limits(limits or Limits())
        local = [m for m in pool.members.values() if m.supports_score]
        self.reference_name = self.settings.reference or (
            min(local, key=lambda m: m.estimate_cost(64, 0)).name if local else None)
        self.contexts, self.task_classes = ContextClassifier(self.settings.context), TaskClassifier()
        self.refit_task_classes()  # the classifier learns from the classes trusted callers stated before
        self.metabolism = Metabolism(self.settings.metabolic, log=self.store.log_state, clock=clock)
        self.consolidated: list[str] = []  # members carrying DREAM's weights (applied by `k1.pool.session`)
        self.memories: dict[str, deque] = {}
        for e in reversed(self.store.experiences(limit=2000, newest_first=True)):
            self.memory_of(Tenant(e.get("tenant") or OPERATOR.name)).append(e["prompt"][:CLASSIFY_CHARS] + "\n"
                                                                             + e["response"][:CLASSIFY_CHARS])
            if e["session"]:
                self.contexts.add(e["session"], e["prompt"][:CLASSIFY_CHARS])

    def set_limits(self, limits: Limits) -> None:
        """Queue, retry and cooldown limits (the server passes its own); gates are rebuilt: call when idle."""
        self.limits, self.gates, self.cooldowns = limits, build_gates(self.pool.names, limits), Cooldowns(limits)
        self.choice = Choice(self.pool, self.store, self.cooldowns, self.rng)

    def refit_task_classes(self) -> dict:
        """Refit the task classifier from its built-in prompts, the calibration prompts (always kept) and the
        trusted labelled experiences (`taskclass.learned_examples`); → what it learned."""
        try:
            learned = learned_examples(self.store, self.settings.task_class_examples)
        except Exception as e:  # stored data never stops the pool from starting
            log.warning("task classifier not refit: %s: %s", type(e).__name__, e)
            return {"examples": 0, "classes": self.task_classes.classes}
        self.task_classes = TaskClassifier(training_prompts() + learned, form=self.settings.task_class_form)
        return {"examples": len(learned), "classes": self.task_classes.classes}

    def known_classes(self) -> set[str]:
        """The fixed set a client may name: built-in, configured, calibrated and learnt from trusted labels."""
        cal = {c for _, c in self.store.calibration_summary()}
        return set(TASK_CLASSES) | set(self.settings.task_classes) | cal | set(self.task_classes.classes)

    def reference(self) -> Member | None:
        """The member that measures surprise — None while REST has it unloaded (it is not reloaded for that)."""
        name = self.reference_name
        return None if name is None or name in self.pool.unloaded else self.pool.members[name]

    def memory_of(self, tenant: Tenant) -> deque:
        """The tenant's recent experiences: SNARC's novelty never compares one tenant's prompt with another's."""
        with self.lock:
            return self.memories.setdefault(tenant.name, deque(maxlen=self.settings.snarc.memory))

    def observe(self, tenant: Tenant, success: bool | None, imp: float | None, member_down: bool = False) -> None:
        """The metabolic state learns outcomes and salience from trusted tenants (and a member that is down)."""
        trusted = tenant.trusted or member_down
        with self._state:
            self.metabolism.after_call(success if trusted else None, imp if trusted else None, self.ledger.left())

    # ---- compatibility: what callers read off a router -------------------------------------------------
    def budget_left(self) -> float:
        return self.ledger.left()

    def cooled(self, name: str) -> bool:
        return self.cooldowns.cooled(name, self.pool.members.get(name))

    def candidates(self, task_class: str, prompt_tokens: int, max_tokens: int):
        return self.choice.candidates(task_class, prompt_tokens, max_tokens)

    def choose(self, task_class: str, prompt_tokens: int = 64, max_tokens: int = 64) -> Decision:
        policy = self.metabolism.policy
        return self.choice.choose(task_class, prompt_tokens, max_tokens, policy.mode or self.settings.selection,
                                  self.settings.cost_weight * policy.cost_scale)

    # ---- the calls --------------------------------------------------------------------------------------
    def _begin(self, prompt: Prompt, model: str, session: str, task_class: str | None, stream: bool, kw: dict,
               tenant: Tenant, verifier: Verifier | None) -> Call:
        text = prompt_text(prompt)
        self.ledger.check(tenant)
        if model != "auto" and model not in self.pool.members:
            raise UnknownModel(model, self.pool.names)  # the caller's error, before anything is recorded
        if task_class is not None and not tenant.trusted and task_class not in self.known_classes():
            raise UnknownTaskClass(f"task class {task_class!r} is not one this pool knows; use one of "
                                   f"{', '.join(sorted(self.known_classes()))}, or leave it out")
        sid = session if tenant.name == OPERATOR.name else f"{tenant.name}/{session}"
        head, ref = text[:CLASSIFY_CHARS], self.reference()  # the classifiers' cost never grows with the prompt
        with if_free(self.gates.get(ref.name) if ref is not None else None) as free:
            r = self.contexts.read(sid, head, reference=ref if free else None)
        reading = ContextReading(task_class or self.task_classes.classify(head), r.novelty, r.shift, r.surprise)
        with self._state:
            state = self.metabolism.before_call(self.ledger.left())
            policy = self.metabolism.policy
        if policy.unload_idle:
            with all_free(self.gates) as free:  # a member is never closed mid-call
                if free:
                    self.pool.unload_idle(self.settings.idle_unload_s)
        decision = None if model != "auto" else self.choice.choose(
            reading.label, max(1, len(text.encode("utf-8", "replace")) // 4), kw["max_tokens"],
            policy.mode or self.settings.selection, self.settings.cost_weight * policy.cost_scale)
        return Call(uuid.uuid4().hex, sid, prompt, text, reading, state, decision, None if model == "auto" else model,
                    stream, kw, tenant, verifier, class_source="caller" if task_class else "classifier")

    def generate(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
                 verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, seed: int | None = None, cancelled: Callable[[], bool] | None = None,
                 tenant: Tenant = OPERATOR, task_class: str | None = None) -> Routed:
        """One answer: the stream drained. Once `cancelled()` is true (asked between tokens) the member stops,
        what it computed is charged as 'cancelled' and `Cancelled` is raised."""
        call = self._begin(prompt, model, session, task_class or context, False,
                           dict(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed), tenant, verifier)
        call.drained = True
        it = attempts(self, call)
        try:
            for _ in it:
                if cancelled is not None and cancelled():
                    it.close()
                    raise Cancelled("the client went away; the call was stopped")
        finally:
            it.close()
        return call.routed

    def stream(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
               verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None, streamed: bool = True,
               tenant: Tenant = OPERATOR, task_class: str | None = None) -> RoutedStream:
        """Choose now (the caller knows the member before the first token); deltas come from the returned
        iterator, then `.routed` holds the result. Closing it early is charged as 'cancelled'."""
        call = self._begin(prompt, model, session, task_class or context, streamed,
                           dict(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed), tenant, verifier)
        return RoutedStream(attempts(self, call), call)

    def feedback(self, request: str, success: float, source: str = "feedback", task_class: str | None = None,
                 tenant: Tenant = OPERATOR) -> dict:
        """The outcome of an earlier answer, once per request id, from the tenant that asked (or an admin).
        With `task_class` the experience is relabelled; the classifier learns it only from a trusted tenant."""
        e = self.store.experience(request)
        if e is None or not tenant.owns(e.get("tenant") or OPERATOR.name):
            raise UnknownRequest(f"no answer with request id {request!r}; give the `k1.request` of a response")
        if task_class is not None and not tenant.trusted and task_class not in self.known_classes():
            raise UnknownTaskClass(f"task class {task_class!r} is not one this pool knows; use one of "
                                   f"{', '.join(sorted(self.known_classes()))}")
        success, cls = float(success), task_class or e["context"]
        if not self.store.record_feedback(e["member"], cls, success, source, request):
            raise FeedbackExists(f"request {request!r} already has its outcome; feedback counts once per request")
        signals = {k: e[k] for k in ("surprise", "novelty", "arousal", "conflict")} | {"reward": success}
        imp = importance(signals, self.settings.snarc)
        relabel = {"context": task_class, "extra": json.dumps(e["extra"] | {
            "task_class_source": "feedback", "label_trusted": tenant.trusted})} if task_class else {}
        self.store.update_experience(request, outcome=success, reward=success, importance=imp, **relabel)
        self.observe(tenant, success >= 0.5, imp)
        return {"request": request, "member": e["member"], "task_class": cls, "context": cls, "success": success,
                "importance": imp}

    def close(self) -> None:
        self.background.shutdown(wait=True)
        self.store.close()
