"""`Router`: one call through the pool — classify the context, pick a member by trust and cost, call it,
charge the budget, judge the answer, record the experience, update the metabolic state.

Every way a call can end is charged to the ATP ledger (`PoolStore.charge`): success, failure, timeout,
unavailable and cancelled, streamed or not. A call that fails also counts as a failure in the member's
trust. Answer quality comes from a verifier passed with the call, a judge member (`[pool] judge`), or
later feedback (`Router.feedback`, `/v1/feedback`, once per request id).

Each request is a `Call` record that goes through the same steps whatever its shape (streamed or not):
- each member has a `Gate`: one call at a time, a bounded queue, a bounded wait (`Busy` past either), so
  requests for different members run at the same time (`Limits.concurrency = "global"`: one gate for all);
- before a member runs, the prompt must fit its context (`PromptTooLong` otherwise, never charged) and the
  call's estimated cost (an upper bound for local members) is reserved against the budget, so concurrent
  calls cannot together spend more than the budget;
- a failed call is charged and recorded; with `model: "auto"` the request moves on to the next candidate
  (at most `Limits.retries` more) and a member that failed `cooldown_after` times in a row — or whose
  circuit breaker is open — is left out of selection for `cooldown_s`;
- the reference member measures surprise only while it is free (a busy one is not waited for).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from k1.errors import BackendError, K1Error
from k1.pool.route.context import ContextClassifier, ContextReading
from k1.pool.route.limits import Limits
from k1.pool.members.base import CallFailed, Generation, Member, Prompt, prompt_text
from k1.pool.route.metabolic import Metabolism
from k1.pool.pool import Pool
from k1.pool.route.select import Candidate, Decision, select
from k1.pool.route.snarc import importance, snarc
from k1.pool.store import PoolStore
from k1.pool.route.taskclass import TaskClassifier
from k1.pool.learn.weights import apply_dream_weights, take_up_new_students

log = logging.getLogger(__name__)

# verifier(prompt text, answer text) → success in [0, 1], or None when it cannot tell
Verifier = Callable[[str, str], "float | bool | None"]


class BudgetExhausted(K1Error):
    """The pool has spent its ATP budget (or what is left cannot pay for this call)."""


class UnknownRequest(BackendError):
    """Feedback for a request id the pool never answered."""


class FeedbackExists(BackendError):
    """A second outcome for a request id: the first one stands."""


class PromptRejected(BackendError):
    """A prompt no member may run (empty); nothing is charged."""


class PromptTooLong(PromptRejected):
    """A prompt longer than the member's context (or `Limits.prompt_tokens`); nothing is charged."""


class Busy(K1Error):
    """A member's queue is full, or the request waited `Limits.wait_s` for it."""


class Cancelled(K1Error):
    """The caller went away; what the member computed is charged as 'cancelled'."""


class Gate:
    """One member's turn: one call at a time, at most `queue` callers waiting, none longer than `wait_s`."""

    def __init__(self, queue: int, wait_s: float):
        self.queue, self.wait_s = queue, wait_s
        self._lock, self._guard = threading.Lock(), threading.Lock()
        self.waiting = 0

    def acquire(self, name: str) -> None:
        with self._guard:
            if self._lock.locked() and self.waiting >= self.queue:
                raise Busy(f"member {name!r} is busy and {self.waiting} requests wait for it; retry later")
            self.waiting += 1
        try:
            ok = self._lock.acquire(timeout=self.wait_s)
        finally:
            with self._guard:
                self.waiting -= 1
        if not ok:
            raise Busy(f"member {name!r} stayed busy for {self.wait_s:g} s; retry later")

    def try_acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()

    @property
    def busy(self) -> bool:
        return self._lock.locked()


@dataclass
class Call:
    """One request on its way through the pool: what it asked, what was decided, what it tried."""

    request: str
    session: str
    prompt: Prompt
    text: str
    reading: ContextReading
    state: str
    decision: Decision | None  # None when the caller pinned a member
    pinned: str | None
    stream: bool
    kw: dict
    tried: list[str] = field(default_factory=list)
    reserved: float = 0.0
    reservation: int | None = None  # the store's hold on the budget (shared by every replica on the store)
    class_source: str = "classifier"  # "caller" when the caller stated the task class (learned from: taskclass.py)


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
    def __init__(self, pool: Pool, store: PoolStore | None = None, *, clock=time.time, limits: Limits | None = None):
        self.pool, self.settings = pool, pool.settings
        self.store = store or PoolStore(self.settings.store)
        self.rng = random.Random(self.settings.seed)
        self._book = threading.RLock()  # the router's own state: contexts, metabolism, rng, memory
        self._cool: dict[str, tuple[int, float]] = {}  # member → (failures in a row, cooled until)
        self.set_limits(limits or Limits())
        self.reference = self._reference()
        self.contexts = ContextClassifier(self.settings.context, self.reference)
        self.task_classes = TaskClassifier()  # trust is keyed by (member, task class)
        self.refit_task_classes()  # …and the classifier learns from the classes stated in earlier experiences
        self.metabolism = Metabolism(self.settings.metabolic, log=self.store.log_state, clock=clock,
                                     shared=self.store)  # one state for every replica on the store
        try:
            self.consolidated = apply_dream_weights(self)  # students keep what DREAM taught them across restarts
        except Exception as e:  # stored data never stops the pool from starting
            log.warning("DREAM weights not applied: %s: %s", type(e).__name__, e)
            self.consolidated = []
        self.student_poll_s = 5.0  # how often a request looks for a student that another replica's DREAM published
        self._students_looked = time.monotonic()
        self._memory = [e["prompt"] + "\n" + e["response"]
                        for e in reversed(self.store.experiences(limit=self.settings.snarc.memory, newest_first=True))]
        for session in {e["session"] for e in self.store.experiences(limit=2000, newest_first=True) if e["session"]}:
            self.contexts.seed(session, [e["prompt"] for e in self.store.experiences(session=session)])

    def refit_task_classes(self) -> dict:
        """Refit the task classifier from its built-in prompts plus the store's labelled prompts (the newest
        `task_class_examples` experiences with a stated class, and the calibration prompts); → what it learned."""
        from k1.pool.route.taskclass import learned_examples, training_prompts

        try:
            learned = learned_examples(self.store, self.settings.task_class_examples)
        except Exception as e:  # stored data never stops the pool from starting
            log.warning("task classifier not refit: %s: %s", type(e).__name__, e)
            return {"examples": 0, "classes": self.task_classes.classes}
        clf = TaskClassifier(training_prompts() + learned, form=self.settings.task_class_form)
        with self._book:
            self.task_classes = clf
        return {"examples": len(learned), "classes": clf.classes}

    def set_limits(self, limits: Limits) -> None:
        """Queue, retry and cooldown limits (the server passes its own); gates are rebuilt: call when idle."""
        self.limits = limits
        if limits.concurrency == "global":
            one = Gate(limits.queue, limits.wait_s)
            self.gates = {name: one for name in self.pool.names}
        else:
            self.gates = {name: Gate(limits.queue, limits.wait_s) for name in self.pool.names}

    def _reference(self) -> Member | None:
        if self.settings.reference:
            return self.pool[self.settings.reference]
        local = [m for m in self.pool.members.values() if m.supports_score]
        return min(local, key=lambda m: m.estimate_cost(64, 0)) if local else None

    # ---- budget and choice ---------------------------------------------------------------------------
    def budget_left(self) -> float:
        """Share of the budget not yet spent, in [0, 1]."""
        return max(0.0, 1.0 - self.store.spent() / self.settings.budget_atp)

    def cooled(self, name: str) -> bool:
        """Left out of selection: failed `cooldown_after` times in a row lately, or its circuit breaker is open."""
        breaker = getattr(self.pool.members.get(name), "breaker", None)
        return self._cool.get(name, (0, 0.0))[1] > time.monotonic() or (breaker is not None and not breaker.allow())

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
        warm = [c for c in out if not self.cooled(c.name)]
        return warm or out  # every member cooling down: choose among them all rather than refuse

    def choose(self, context: str, prompt_tokens: int = 64, max_tokens: int = 64) -> Decision:
        policy = self.metabolism.policy
        return select(self.candidates(context, prompt_tokens, max_tokens), policy.mode or self.settings.selection,
                      self.settings.cost_weight * policy.cost_scale, self.rng)

    def _look_for_students(self) -> None:
        """Take up a student published by another replica's DREAM (at most every `student_poll_s`; no lock held)."""
        now = time.monotonic()
        if now - self._students_looked < self.student_poll_s:
            return
        self._students_looked = now
        try:
            self.consolidated += [n for n in take_up_new_students(self) if n not in self.consolidated]
        except Exception as e:  # a missing or unreadable file never fails a request
            log.warning("published student not taken up: %s: %s", type(e).__name__, e)

    def _begin(self, prompt: Prompt, model: str, session: str, context: str | None, stream: bool, kw: dict) -> Call:
        text = prompt_text(prompt)
        self._look_for_students()
        with self._book:
            spent, held = self.store.spent(), self.store.reserved()  # held: by running calls on every replica
            if spent + held >= self.settings.budget_atp:
                raise BudgetExhausted(f"the pool spent {spent:.1f} of its {self.settings.budget_atp:g} ATP budget"
                                      f"{f' ({held:.1f} more is reserved by calls running now)' if held else ''}; "
                                      "raise [pool] budget_atp or run `k1 pool budget --reset`")
            if model != "auto":
                self.pool[model]  # an unknown member is the caller's error, before anything is recorded
            with self._borrow_reference() as ref:
                reading = self.contexts.read(session, text, score=ref)
            # trust is keyed by the task class: the caller's (e.g. the routing bench), else the classifier's; the
            # context state's signals (novelty, shift, surprise) stay in the reading and the experience
            reading = ContextReading(context or self.task_classes.classify(text), reading.novelty, reading.shift,
                                     reading.surprise)
            state = self.metabolism.before_call(self.budget_left())
            if self.metabolism.policy.unload_idle:
                self._unload_idle()
            decision = None
            if model == "auto":
                decision = self.choose(reading.label, max(1, len(text.encode("utf-8", "replace")) // 4),
                                       kw["max_tokens"])
        return Call(uuid.uuid4().hex, session, prompt, text, reading, state, decision,
                    None if model == "auto" else model, stream, kw, class_source="caller" if context else "classifier")

    @contextmanager
    def _borrow_reference(self) -> Iterator[bool]:
        """→ whether the reference member may score now (it exists and is free; a busy one is not waited for)."""
        gate = self.gates.get(self.reference.name) if self.reference is not None else None
        got = gate is not None and gate.try_acquire()
        try:
            yield got
        finally:
            if got:
                gate.release()

    def _unload_idle(self) -> None:
        """REST: close idle local members — only while no call runs (a member is never closed mid-call)."""
        gates = list({id(g): g for g in self.gates.values()}.values())
        held = []
        try:
            for g in gates:
                if not g.try_acquire():
                    return
                held.append(g)
            self.pool.unload_idle(self.settings.idle_unload_s)
        finally:
            for g in held:
                g.release()

    def _order(self, call: Call) -> list[str]:
        """The members this call may try, in order: the pinned one, or the choice then the next best."""
        if call.pinned:
            return [call.pinned]
        u = call.decision.utilities
        rest = sorted((n for n in u if n != call.decision.member and not self.cooled(n)), key=lambda n: -u[n])
        return [call.decision.member] + rest[:self.limits.retries]

    @contextmanager
    def _turn(self, call: Call, name: str) -> Iterator[Member]:
        """The member's gate, held while it runs; the prompt checked against its context; the cost reserved."""
        gate = self.gates[name]
        gate.acquire(name)
        try:
            with self._book:
                member = self.pool[name]
            call.tried.append(name)
            n = member.prompt_tokens(call.prompt)
            if n == 0:
                raise PromptRejected(f"member {name!r}: the prompt is empty; give at least one character")
            room = min(self.limits.prompt_tokens, member.max_positions - 1 if member.max_positions else 1 << 62)
            if n > room:
                raise PromptTooLong(f"the prompt is {n} tokens; member {name!r} takes at most {room}"
                                    + (f" (its context is {member.max_positions} positions)" if member.max_positions
                                       else "") + "; shorten it")
            self._reserve(call, member, n)
            yield member
        finally:
            gate.release()

    def _reserve(self, call: Call, member: Member, prompt_tokens: int) -> None:
        """Hold the call's estimated cost in the store: atomic there, so replicas sharing a store cannot
        together pass the budget."""
        est = member.estimate_cost(prompt_tokens, call.kw["max_tokens"])
        rid = self.store.reserve(est, self.settings.budget_atp, request=call.request, member=member.name)
        if rid is None:
            left = self.settings.budget_atp - self.store.spent() - self.store.reserved()
            raise BudgetExhausted(f"member {member.name!r} may cost up to {est:.3g} ATP; the pool has "
                                  f"{max(0.0, left):.3g} of its {self.settings.budget_atp:g} ATP budget left; ask "
                                  "for fewer tokens, raise [pool] budget_atp or run `k1 pool budget --reset`")
        call.reserved, call.reservation = est, rid

    def _unreserve(self, call: Call) -> None:
        if call.reservation is not None:
            self.store.release(call.reservation)
        call.reserved, call.reservation = 0.0, None

    def _charge(self, call: Call, name: str, path: str, gen: Generation | None, cost=None) -> None:
        """One ledger row for one member call of this request, releasing its reservation in the same write."""
        c = gen.cost if gen is not None else cost
        try:
            self.store.charge(name, path, c.atp if c else 0.0, c.flops if c else 0.0, c.latency_s if c else 0.0,
                              request=call.request, session=call.session, context=call.reading.label,
                              prompt_tokens=gen.prompt_tokens if gen else 0,
                              completion_tokens=gen.completion_tokens if gen else 0, stream=call.stream,
                              reservation=call.reservation)
            call.reservation = None
        finally:
            self._unreserve(call)

    def _fail(self, call: Call, member: Member, e: Exception) -> None:
        cost = getattr(e, "cost", None)
        if cost is None and member.last_generation is not None:  # a local member that raised mid-answer
            cost = member.last_generation.cost
        path = {"timeout": "timeout", "unavailable": "unavailable"}.get(getattr(e, "reason", ""), "failure")
        self._charge(call, member.name, path, None, cost)
        self.store.record_outcome(member.name, call.reading.label, 0.0, f"call-{path}", call.request)
        with self._book:
            fails = self._cool.get(member.name, (0, 0.0))[0] + 1
            until = time.monotonic() + self.limits.cooldown_s if fails >= self.limits.cooldown_after else 0.0
            self._cool[member.name] = (fails, until)
            self.metabolism.after_call(False, None, self.budget_left())

    def _cancel(self, call: Call, member: Member) -> None:
        self._charge(call, member.name, "cancelled", member.last_generation)

    @staticmethod
    def _error(errors: list[Exception]) -> Exception:
        """What a request that no member answered tells its caller: a member's failure first."""
        failed = [e for e in errors if isinstance(e, CallFailed)]
        return (failed or errors)[0]

    # ---- the calls --------------------------------------------------------------------------------------
    def generate(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
                 verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, seed: int | None = None,
                 cancelled: Callable[[], bool] | None = None) -> Routed:
        """One answer. `cancelled()` is asked between tokens: once true, the member stops, what it computed is
        charged as 'cancelled' and `Cancelled` is raised."""
        kw = dict(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)
        call = self._begin(prompt, model, session, context, False, kw)
        errors: list[Exception] = []
        try:
            for name in self._order(call):
                member = None
                try:
                    with self._turn(call, name) as member:
                        member.last_generation = None
                        it = member.stream(prompt, **kw)
                        try:
                            for _ in it:
                                if cancelled is not None and cancelled():
                                    it.close()
                                    self._cancel(call, member)
                                    raise Cancelled("the client went away; the call was stopped")
                        finally:
                            it.close()
                        gen = member.last_generation
                except (PromptRejected, BudgetExhausted, Busy, CallFailed, BackendError) as e:
                    self._attempt_failed(call, name, member, e, errors)
                    continue
                return self._finish(call, gen, verifier)
            raise self._error(errors)
        finally:
            self._unreserve(call)

    def _attempt_failed(self, call: Call, name: str, member, e: Exception, errors: list[Exception],
                        sent: bool = False) -> None:
        """One candidate's attempt ended in `e`. A member's failure is charged and counted against it; then the
        request routes on (`e` kept for the final error) unless it was pinned or text already reached the client."""
        failed = not isinstance(e, (PromptRejected, BudgetExhausted, Busy))  # refused before the member ran
        if failed:
            self._fail(call, member or self.pool[name], e)
        if call.pinned or (failed and sent):
            raise e
        errors.append(e)

    def stream(self, prompt: Prompt, *, model: str = "auto", session: str = "default", context: str | None = None,
               verifier: Verifier | None = None, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None, streamed: bool = True) -> "RoutedStream":
        """Choose now (so the caller knows the member before the first token); text deltas come from the
        returned iterator; afterwards `.routed` holds the `Routed` result. Closing it early is charged as
        'cancelled'. A member that fails before its first delta is retried like `generate` does."""
        kw = dict(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)
        call = self._begin(prompt, model, session, context, streamed, kw)

        def run() -> Iterator[str]:
            errors: list[Exception] = []
            try:
                for name in self._order(call):
                    member, sent = None, False
                    try:
                        with self._turn(call, name) as member:
                            out.member = name
                            member.last_generation = None
                            it = member.stream(prompt, **kw)
                            try:
                                for delta in it:
                                    sent = True
                                    yield delta
                            except GeneratorExit:
                                it.close()
                                self._cancel(call, member)
                                raise
                            finally:
                                it.close()
                            gen = member.last_generation
                    except (PromptRejected, BudgetExhausted, Busy, CallFailed, BackendError) as e:
                        self._attempt_failed(call, name, member, e, errors, sent)
                        continue
                    out.routed = self._finish(call, gen, verifier)
                    return
                raise self._error(errors)
            finally:
                self._unreserve(call)

        first = call.pinned or call.decision.member
        out = RoutedStream(run(), first, call.request, call.reading, call.decision)
        return out

    def _finish(self, call: Call, gen: Generation, verifier: Verifier | None) -> Routed:
        self._charge(call, gen.member, "success", gen)
        text, prompt, reading = call.text, call.prompt, call.reading
        outcome, source = None, None
        if verifier is not None:
            v = verifier(text, gen.text)
            outcome, source = (None if v is None else float(v)), "verifier"
        elif self.settings.judge and self.settings.judge != gen.member:
            outcome, source = self._judge(text, gen.text, call.request, call.session), "judge"
        if outcome is not None:
            self.store.record_outcome(gen.member, reading.label, outcome, source, call.request)
        with self._book:
            check = self.rng.random() < self.settings.cross_check
            memory = list(self._memory)
        others = self._cross_check(prompt, gen, call) if check else None
        with self._borrow_reference() as ref:
            try:
                signals = snarc(text, gen, reference=self.reference if ref else None, memory=memory, reward=outcome,
                                others=others)
            except BackendError:  # the reference cannot read this much: no surprise rather than no answer
                signals = snarc(text, gen, reference=None, memory=memory, reward=outcome, others=others)
        imp = importance(signals, self.settings.snarc)
        self.store.add_experience({
            "ts": time.time(), "request": call.request, "session": call.session, "prompt": text,
            "response": gen.text, "member": gen.member, "context": reading.label, "latency_s": gen.cost.latency_s,
            "atp": gen.cost.atp, "outcome": outcome, **signals, "importance": imp,
            "extra": {"state": call.state, "context_signals": reading.as_dict(), "finish_reason": gen.finish_reason,
                      "messages": prompt if isinstance(prompt, list) else None,
                      "utilities": call.decision.utilities if call.decision else None, "stream": call.stream,
                      "tried": call.tried, "task_class_source": call.class_source},
        })
        with self._book:
            self.contexts.add(call.session, text)  # only a prompt that was answered joins the history
            self._cool.pop(gen.member, None)
            self._memory = (self._memory + [text + "\n" + gen.text])[-self.settings.snarc.memory:]
            self.metabolism.after_call(None if outcome is None else outcome >= 0.5, imp, self.budget_left())
        return Routed(gen, call.request, reading, call.state, call.decision, outcome, signals, imp)

    def _borrowed(self, name: str) -> Member | None:
        """Another member for a side call (judge, cross-check): waited for like any request; None if busy."""
        try:
            self.gates[name].acquire(name)
        except Busy:
            return None
        return self.pool[name]

    def _judge(self, question: str, answer: str, request: str, session: str) -> float | None:
        judge = self._borrowed(self.settings.judge)
        if judge is None:
            return None
        ask = (f"Question: {question}\nAnswer: {answer}\nIs the answer correct? Reply with yes or no.")
        try:
            g = judge.generate([{"role": "user", "content": ask}], max_tokens=3)
        except (CallFailed, BackendError) as e:
            log.warning("judge %s failed: %s", judge.name, e)
            return None
        finally:
            self.gates[judge.name].release()
        self.store.charge(judge.name, "success", g.cost.atp, g.cost.flops, g.cost.latency_s, request=request,
                          session=session, context="judge", prompt_tokens=g.prompt_tokens,
                          completion_tokens=g.completion_tokens)
        word = g.text.strip().lower()
        return 1.0 if word.startswith("yes") else 0.0 if word.startswith("no") else None

    def _cross_check(self, prompt: Prompt, gen: Generation, call: Call) -> list[str] | None:
        others = [n for n in self.pool.names if n != gen.member]
        if not others:
            return None
        with self._book:
            name = self.rng.choice(others)
        second = self._borrowed(name)
        if second is None:
            return None
        try:
            g = second.generate(prompt, max_tokens=max(gen.completion_tokens, 1))
        except (CallFailed, BackendError) as e:
            self._fail(call, second, e)
            return None
        finally:
            self.gates[name].release()
        self.store.charge(second.name, "success", g.cost.atp, g.cost.flops, g.cost.latency_s, request=call.request,
                          session=call.session, context=call.reading.label, prompt_tokens=g.prompt_tokens,
                          completion_tokens=g.completion_tokens)
        return [g.text]

    def feedback(self, request: str, success: float, source: str = "feedback", task_class: str | None = None) -> dict:
        """Record the outcome of an earlier answer, once per request id: trust, the experience's reward and
        importance. A second verdict for the same id raises `FeedbackExists` and changes nothing. With
        `task_class`, the user states what the prompt asked: the outcome counts for that class, and the
        experience is relabelled (the task classifier learns from it at its next refit)."""
        e = self.store.experience(request)
        if e is None:
            raise UnknownRequest(f"no answer with request id {request!r}; give the `k1.request` of a response")
        success = float(success)
        cls = task_class or e["context"]
        if not self.store.record_feedback(e["member"], cls, success, source, request):
            raise FeedbackExists(f"request {request!r} already has its outcome; feedback counts once per request")
        signals = {k: e[k] for k in ("surprise", "novelty", "arousal", "conflict")} | {"reward": success}
        imp = importance(signals, self.settings.snarc)
        relabel = {}
        if task_class:
            relabel = {"context": task_class, "extra": json.dumps(e["extra"] | {"task_class_source": "feedback"})}
        self.store.update_experience(request, outcome=success, reward=success, importance=imp, **relabel)
        with self._book:
            self.metabolism.after_call(success >= 0.5, imp, self.budget_left())
        return {"request": request, "member": e["member"], "context": cls, "success": success,
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
