"""The records a request leaves on its way through the pool: `Call` (what it asked, what was decided, what it
tried), `Routed` (the answer with everything measured) and `RoutedStream` (the same, streamed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from k1.pool.members.base import Generation, Prompt
from k1.pool.route.context import ContextReading
from k1.pool.route.select import Decision
from k1.pool.tenants import OPERATOR, Tenant

# verifier(prompt text, answer text) → success in [0, 1], or None when it cannot tell
Verifier = Callable[[str, str], "float | bool | None"]


@dataclass
class Call:
    request: str
    session: str  # the tenant's own session id (tenants never share one)
    prompt: Prompt
    text: str
    reading: ContextReading  # the context signals and the context classifier's label (novel, stable, ...)
    task_class: str  # what the prompt asks (stated by the caller, or the task classifier's guess)
    state: str
    decision: Decision | None  # None when the caller pinned a member
    pinned: str | None
    stream: bool
    kw: dict
    tenant: Tenant = OPERATOR
    verifier: Verifier | None = None
    tried: list[str] = field(default_factory=list)
    reservation: object = None  # the open `Reservation` of the member call running now
    class_source: str = "classifier"  # "caller" when the caller stated the task class
    drained: bool = False  # a non-streamed call: nothing reached the client yet, so a failure may move on
    kind: str = "request"  # what the ledger calls its spend
    quiet: bool = False  # a replay (DREAM's): charged, but it records no outcome, experience or state
    member: str | None = None  # the member running (or last run)
    routed: Routed | None = None


@dataclass
class Routed:
    """A routed answer with everything the pool decided and measured along the way."""

    generation: Generation
    request: str
    context: ContextReading  # the context signals and the context classifier's label (novel, stable, ...)
    task_class: str
    state: str
    decision: Decision | None
    outcome: float | None = None
    signals: dict = field(default_factory=dict)
    importance: float = 0.0

    @property
    def member(self) -> str:
        return self.generation.member


class RoutedStream:
    """Iterator of text deltas from a routed streaming call; `.routed` is set once it is exhausted."""

    def __init__(self, it: Iterator[str], call: Call):
        self._it, self._call = it, call
        self.request, self.context, self.decision = call.request, call.reading, call.decision
        self.task_class = call.task_class

    @property
    def member(self) -> str:
        return self._call.member or self._call.pinned or self._call.decision.member

    @property
    def routed(self) -> Routed | None:
        return self._call.routed

    def __iter__(self) -> Iterator[str]:
        return self._it

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        self._it.close()
