"""`Router`: one call through the pool, as a pipeline — `intake` (session, task class read outside any lock,
state, choice) → `attempts` (the one retry/fallback loop) → `aftercare` (hooks) — with every ATP spend going
through the `ledger` (reserve, then charge).

Every way a call can end is charged: success, failure, timeout, unavailable and cancelled, streamed or not.
Answer quality comes from a verifier passed with the call, a judge member, the pool's own background
verification, or later feedback (once per request id, by the tenant that asked). No lock is held while a
model runs: the router's locks guard a few small fields (the rng, the SNARC memories, the metabolic state);
each member's `Gate` is its own turn.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from k1.pool.errors import Cancelled
from k1.pool.ledger import Ledger
from k1.pool.members.base import Member, Prompt
from k1.pool.pool import Pool
from k1.pool.route import aftercare
from k1.pool.route.attempts import attempts
from k1.pool.route.call import Routed, RoutedStream, Verifier
from k1.pool.route.choice import Choice
from k1.pool.route.context import ContextClassifier
from k1.pool.route.cooldown import Cooldowns
from k1.pool.route.gates import build_gates
from k1.pool.route.intake import CLASSIFY_CHARS, begin, known_classes
from k1.pool.route.limits import Limits
from k1.pool.route.metabolic import Metabolism
from k1.pool.route.select import Decision
from k1.pool.route.taskclass import TaskClassifier, learned_examples, training_prompts
from k1.pool.store import PoolStore
from k1.pool.tenants import OPERATOR, Tenant

log = logging.getLogger(__name__)


class Router:
    def __init__(self, pool: Pool, store: PoolStore | None = None, *, clock=time.time, limits: Limits | None = None,
                 verifiers: Callable[[str], Verifier | None] | None = None):
        self.pool, self.settings = pool, pool.settings
        self.store = store or PoolStore(self.settings.store)
        self.ledger = Ledger(self.store, self.settings.budget_atp)
        self.rng, self.lock, self.state_lock = random.Random(self.settings.seed), threading.Lock(), threading.Lock()
        self.verifiers, self.background, self.aftercare = verifiers, aftercare.new_background(), aftercare
        self.verifying = 0  # answers queued for background verification (bounded: aftercare)
        self.set_limits(limits or Limits())
        local = [m for m in pool.members.values() if m.supports_score]
        self.reference_name = self.settings.reference or (
            min(local, key=lambda m: m.estimate_cost(64, 0)).name if local else None)
        self.contexts, self.task_classes = ContextClassifier(self.settings.context), TaskClassifier()
        self.refit_task_classes()  # the classifier learns from the classes trusted callers stated before
        self.metabolism = Metabolism(self.settings.metabolic, log=self.store.log_state, clock=clock,
                                     shared=self.store)  # one state for every replica on the store
        self.consolidated: list[str] = []  # members carrying DREAM's weights (applied by `k1.pool.session`)
        self.students = None  # `learn.weights.StudentPoll` (set by `k1.pool.session`): other replicas' students
        self.memories: dict[str, deque] = {}
        for e in reversed(self.store.experiences(limit=2000, newest_first=True)):  # no model runs on stored data
            self.memory_of(Tenant(e.get("tenant") or OPERATOR.name)).append(
                e["prompt"][:CLASSIFY_CHARS] + "\n" + e["response"][:CLASSIFY_CHARS])
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
        return known_classes(self)

    def reference(self) -> Member | None:
        """The member that measures surprise — None while REST has it unloaded (it is not reloaded for that)."""
        name = self.reference_name
        return None if name is None or name in self.pool.unloaded else self.pool.members[name]

    def memory_of(self, tenant: Tenant) -> deque:
        """The tenant's recent experiences: SNARC's novelty never compares one tenant's prompt with another's."""
        with self.lock:
            return self.memories.setdefault(tenant.name, deque(maxlen=self.settings.snarc.memory))

    def observe(self, tenant: Tenant, success: bool | None, imp: float | None, member_down: bool = False) -> None:
        """The metabolic state learns outcomes and salience from trusted tenants (and from a member that is down)."""
        trusted = tenant.trusted or member_down
        with self.state_lock:
            self.metabolism.after_call(success if trusted else None, imp if trusted else None, self.ledger.left())

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

    def generate(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
                 verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, seed: int | None = None, cancelled: Callable[[], bool] | None = None,
                 tenant: Tenant = OPERATOR, task_class: str | None = None) -> Routed:
        """One answer: the stream drained. Once `cancelled()` is true (asked between tokens) the member stops,
        what it computed is charged as 'cancelled' and `Cancelled` is raised. (`context=`: `task_class`'s old name.)"""
        kw = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop, "seed": seed}
        call = begin(self, prompt, model, session, task_class or context, False, kw, tenant, verifier)
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
        kw = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop, "seed": seed}
        call = begin(self, prompt, model, session, task_class or context, streamed, kw, tenant, verifier)
        return RoutedStream(attempts(self, call), call)

    def feedback(self, request: str, success: float, source: str = "feedback", task_class: str | None = None,
                 tenant: Tenant = OPERATOR) -> dict:
        """The outcome of an earlier answer (`aftercare.feedback`)."""
        return aftercare.feedback(self, request, success, source, task_class, tenant)

    def close(self) -> None:
        self.background.shutdown(wait=True)
        self.store.close()
