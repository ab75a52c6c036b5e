"""`Router`: one call through the pool — classify the context, pick a member by trust and cost, call it,
charge the budget, judge the answer, record the experience, update the metabolic state.

Every way a call can end is charged to the ATP ledger (`PoolStore.charge`): success, failure, timeout,
unavailable and cancelled, streamed or not. A call that fails also counts as a failure in the member's
trust. Answer quality comes from a verifier passed with the call, a judge member (`[pool] judge`), or
later feedback (`Router.feedback`, `/v1/feedback`).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from k1.errors import BackendError, K1Error
from k1.pool.context import ContextClassifier, ContextReading
from k1.pool.snarc import importance, snarc
from k1.pool.members.base import CallFailed, Generation, Member, Prompt, prompt_text
from k1.pool.metabolic import Metabolism
from k1.pool.pool import Pool
from k1.pool.select import Candidate, Decision, select
from k1.pool.store import PoolStore
from k1.pool.taskclass import TaskClassifier
from k1.pool.weights import apply_dream_weights

log = logging.getLogger(__name__)

# verifier(prompt text, answer text) → success in [0, 1], or None when it cannot tell
Verifier = Callable[[str, str], "float | bool | None"]


class BudgetExhausted(K1Error):
    """The pool has spent its ATP budget."""


class UnknownRequest(BackendError):
    """Feedback for a request id the pool never answered."""


@dataclass
class Routed:
    """A routed answer with everything the router decided and measured along the way."""

    generation: Generation
    request: str
    context: ContextReading
    state: str
    decision: Decision | None  # None when the caller pinned a member
    outcome: float | None = None
    signals: dict = field(default_factory=dict)
    importance: float = 0.0

    @property
    def member(self) -> str:
        return self.generation.member


class Router:
    def __init__(self, pool: Pool, store: PoolStore | None = None, *, clock=time.time):
        self.pool, self.settings = pool, pool.settings
        self.store = store or PoolStore(self.settings.store)
        self.rng = random.Random(self.settings.seed)
        self.reference = self._reference()
        self.contexts = ContextClassifier(self.settings.context, self.reference)
        self.task_classes = TaskClassifier()  # trust is keyed by (member, task class)
        self.metabolism = Metabolism(self.settings.metabolic, log=self.store.log_state, clock=clock)
        self.consolidated = apply_dream_weights(self)  # students keep what DREAM taught them across restarts
        self._memory = [e["prompt"] + "\n" + e["response"]
                        for e in reversed(self.store.experiences(limit=self.settings.snarc.memory, newest_first=True))]
        for session in {e["session"] for e in self.store.experiences(limit=2000, newest_first=True) if e["session"]}:
            self.contexts.seed(session, [e["prompt"] for e in self.store.experiences(session=session)])

    def _reference(self) -> Member | None:
        if self.settings.reference:
            return self.pool[self.settings.reference]
        local = [m for m in self.pool.members.values() if m.supports_score]
        return min(local, key=lambda m: m.estimate_cost(64, 0)) if local else None

    # ---- budget and choice ---------------------------------------------------------------------------
    def budget_left(self) -> float:
        """Share of the budget not yet spent, in [0, 1]."""
        return max(0.0, 1.0 - self.store.spent() / self.settings.budget_atp)

    def candidates(self, context: str, prompt_tokens: int, max_tokens: int) -> list[Candidate]:
        """Trust = calibration prior (w · solved, w · unsolved) + live outcomes for this task class; cost =
        measured mean ATP per call (the ledger's, else calibration's, else the member's own estimate)."""
        trust, measured = self.store.trust(context), self.store.mean_cost()
        cal, w = self.store.calibration_summary(), self.settings.calibration_weight
        out = []
        for name, m in self.pool.members.items():
            s, f = trust.get((name, context), (0.0, 0.0))
            c = cal.get((name, context))
            if c:
                s, f = s + w * c["solved"], f + w * (c["n"] - c["solved"])
            cost = measured.get(name)
            if cost is None and c:
                cost = c["atp"]
            out.append(Candidate(name, s, f, cost if cost is not None else m.estimate_cost(prompt_tokens, max_tokens)))
        return out

    def choose(self, context: str, prompt_tokens: int = 64, max_tokens: int = 64) -> Decision:
        policy = self.metabolism.policy
        return select(self.candidates(context, prompt_tokens, max_tokens), policy.mode or self.settings.selection,
                      self.settings.cost_weight * policy.cost_scale, self.rng)

    def _begin(self, prompt: Prompt, model: str, session: str, context: str | None, max_tokens: int):
        if self.store.spent() >= self.settings.budget_atp:
            raise BudgetExhausted(f"the pool spent {self.store.spent():.1f} of its {self.settings.budget_atp:g} ATP "
                                  "budget; raise [pool] budget_atp or run `k1 pool budget --reset`")
        text = prompt_text(prompt)
        reading = self.contexts.observe(session, text)
        # trust is keyed by the task class: the caller's (e.g. the routing bench), else the classifier's; the
        # context state's signals (novelty, shift, surprise) stay in the reading and the experience
        reading = ContextReading(context or self.task_classes.classify(text), reading.novelty, reading.shift,
                                 reading.surprise)
        state = self.metabolism.before_call(self.budget_left())
        if self.metabolism.policy.unload_idle:
            self.pool.unload_idle(self.settings.idle_unload_s)
        decision = None
        if model == "auto":
            decision = self.choose(reading.label, max(1, len(text.encode()) // 4), max_tokens)
            model = decision.member
        return uuid.uuid4().hex, text, reading, state, decision, self.pool[model]

    def _fail(self, member: Member, e: Exception, request: str, session: str, reading: ContextReading,
              stream: bool) -> None:
        cost = getattr(e, "cost", None)
        path = {"timeout": "timeout", "unavailable": "unavailable"}.get(getattr(e, "reason", ""), "failure")
        self.store.charge(member.name, path, cost.atp if cost else 0.0, cost.flops if cost else 0.0,
                          cost.latency_s if cost else 0.0, request=request, session=session, context=reading.label,
                          stream=stream)
        self.store.record_outcome(member.name, reading.label, 0.0, f"call-{path}", request)
        self.metabolism.after_call(False, None, self.budget_left())

    # ---- the calls --------------------------------------------------------------------------------------
    def generate(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
                 verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, seed: int | None = None) -> Routed:
        request, text, reading, state, decision, member = self._begin(prompt, model, session, context, max_tokens)
        try:
            gen = member.generate(prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)
        except (CallFailed, BackendError) as e:
            self._fail(member, e, request, session, reading, stream=False)
            raise
        return self._finish(gen, request, session, text, prompt, reading, state, decision, verifier, stream=False)

    def stream(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
               verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None) -> "RoutedStream":
        """Choose now (so the caller knows the member before the first token); text deltas come from the
        returned iterator; afterwards `.routed` holds the `Routed` result. Closing it early is charged as
        'cancelled'."""
        request, text, reading, state, decision, member = self._begin(prompt, model, session, context, max_tokens)

        def run() -> Iterator[str]:
            it = member.stream(prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)
            try:
                yield from it
            except GeneratorExit:
                it.close()
                g = member.last_generation
                self.store.charge(member.name, "cancelled", g.cost.atp, g.cost.flops, g.cost.latency_s, request=request,
                                  session=session, context=reading.label, prompt_tokens=g.prompt_tokens,
                                  completion_tokens=g.completion_tokens, stream=True)
                raise
            except (CallFailed, BackendError) as e:
                self._fail(member, e, request, session, reading, stream=True)
                raise
            out.routed = self._finish(member.last_generation, request, session, text, prompt, reading, state,
                                      decision, verifier, stream=True)

        out = RoutedStream(run(), member.name, request, reading, decision)
        return out

    def _finish(self, gen: Generation, request: str, session: str, text: str, prompt: Prompt,
                reading: ContextReading, state: str, decision: Decision | None, verifier: Verifier | None,
                stream: bool) -> Routed:
        c = gen.cost
        self.store.charge(gen.member, "success", c.atp, c.flops, c.latency_s, request=request, session=session,
                          context=reading.label, prompt_tokens=gen.prompt_tokens,
                          completion_tokens=gen.completion_tokens, stream=stream)
        outcome, source = None, None
        if verifier is not None:
            v = verifier(text, gen.text)
            outcome, source = (None if v is None else float(v)), "verifier"
        elif self.settings.judge and self.settings.judge != gen.member:
            outcome, source = self._judge(text, gen.text, request, session), "judge"
        if outcome is not None:
            self.store.record_outcome(gen.member, reading.label, outcome, source, request)
        others = self._cross_check(prompt, gen, request, session, reading) if self.rng.random() < self.settings.cross_check else None
        signals = snarc(text, gen, reference=self.reference, memory=self._memory, reward=outcome, others=others)
        imp = importance(signals, self.settings.snarc)
        self.store.add_experience({
            "ts": time.time(), "request": request, "session": session, "prompt": text, "response": gen.text,
            "member": gen.member, "context": reading.label, "latency_s": c.latency_s, "atp": c.atp,
            "outcome": outcome, **signals, "importance": imp,
            "extra": {"state": state, "context_signals": reading.as_dict(), "finish_reason": gen.finish_reason,
                      "messages": prompt if isinstance(prompt, list) else None,
                      "utilities": decision.utilities if decision else None, "stream": stream},
        })
        self._memory = (self._memory + [text + "\n" + gen.text])[-self.settings.snarc.memory:]
        self.metabolism.after_call(None if outcome is None else outcome >= 0.5, imp, self.budget_left())
        return Routed(gen, request, reading, state, decision, outcome, signals, imp)

    def _judge(self, question: str, answer: str, request: str, session: str) -> float | None:
        judge = self.pool[self.settings.judge]
        ask = (f"Question: {question}\nAnswer: {answer}\nIs the answer correct? Reply with yes or no.")
        try:
            g = judge.generate([{"role": "user", "content": ask}], max_tokens=3)
        except (CallFailed, BackendError) as e:
            log.warning("judge %s failed: %s", judge.name, e)
            return None
        self.store.charge(judge.name, "success", g.cost.atp, g.cost.flops, g.cost.latency_s, request=request,
                          session=session, context="judge", prompt_tokens=g.prompt_tokens,
                          completion_tokens=g.completion_tokens)
        word = g.text.strip().lower()
        return 1.0 if word.startswith("yes") else 0.0 if word.startswith("no") else None

    def _cross_check(self, prompt: Prompt, gen: Generation, request: str, session: str,
                     reading: ContextReading) -> list[str] | None:
        others = [n for n in self.pool.names if n != gen.member]
        if not others:
            return None
        second = self.pool[self.rng.choice(others)]
        try:
            g = second.generate(prompt, max_tokens=max(gen.completion_tokens, 1))
        except (CallFailed, BackendError) as e:
            self._fail(second, e, request, session, reading, stream=False)
            return None
        self.store.charge(second.name, "success", g.cost.atp, g.cost.flops, g.cost.latency_s, request=request,
                          session=session, context=reading.label, prompt_tokens=g.prompt_tokens,
                          completion_tokens=g.completion_tokens)
        return [g.text]

    def feedback(self, request: str, success: float, source: str = "feedback") -> dict:
        """Record an outcome for an earlier answer: trust, the experience's reward and importance."""
        e = self.store.experience(request)
        if e is None:
            raise UnknownRequest(f"no answer with request id {request!r}; give the `k1.request` of a response")
        success = float(success)
        self.store.record_outcome(e["member"], e["context"], success, source, request)
        signals = {k: e[k] for k in ("surprise", "novelty", "arousal", "conflict")} | {"reward": success}
        imp = importance(signals, self.settings.snarc)
        self.store.update_experience(request, outcome=success, reward=success, importance=imp)
        self.metabolism.after_call(success >= 0.5, imp, self.budget_left())
        return {"request": request, "member": e["member"], "context": e["context"], "success": success,
                "importance": imp}

    def close(self) -> None:
        self.store.close()


class RoutedStream:
    """Iterator of text deltas from a routed streaming call; `.routed` is set once it is exhausted."""

    def __init__(self, it: Iterator[str], member: str, request: str, context: ContextReading,
                 decision: Decision | None):
        self._it, self.member, self.request, self.context, self.decision = it, member, request, context, decision
        self.routed: Routed | None = None

    def __iter__(self) -> Iterator[str]:
        return self._it

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        self._it.close()
