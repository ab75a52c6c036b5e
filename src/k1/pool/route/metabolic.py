"""Metabolic states — WAKE, FOCUS, REST, DREAM, CRISIS — a state machine driven by budget, salience and time.

Signals after every call: the share of the budget left, salience (the mean importance of the last few
experiences), recent failures, and the time since the previous call. Transitions (thresholds in
`MetabolicSettings`), checked in this order:
- CRISIS  when at least `crisis_failures` of the last `crisis_window` outcomes failed (and budget is left);
          back to WAKE after `recover_successes` successes in a row;
- REST    when the budget left falls below `rest_budget`, or nothing was asked for `rest_after_s`;
- FOCUS   when salience ≥ `focus_at` (back to WAKE below `focus_at` / 2);
- WAKE    otherwise. DREAM is entered and left by consolidation (`k1 pool dream`) only.
Each state changes selection (`policy`): CRISIS takes the most capable member regardless of cost;
FOCUS halves the cost weight; REST and DREAM double it and unload idle local members. Every transition is
written to the store's state log with its reason.

Replicas on one store share the state (`shared`: the store): a transition is published as a version row, and
each replica takes up the newest one before it decides anything, so a pool in CRISIS or REST is in it
whichever replica answers. DREAM is not shared: it belongs to the process consolidating, which may crash.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

STATES = ("WAKE", "FOCUS", "REST", "DREAM", "CRISIS")


class MetabolicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    crisis_window: int = Field(default=5, ge=1)
    crisis_failures: int = Field(default=4, ge=1)
    recover_successes: int = Field(default=2, ge=1)
    rest_budget: float = Field(default=0.1, ge=0, le=1)  # share of the budget left below which the pool rests
    rest_after_s: float = Field(default=600.0, gt=0)
    focus_at: float = Field(default=0.6, ge=0, le=1)
    salience_window: int = Field(default=5, ge=1)


@dataclass(frozen=True)
class Policy:
    """How a state changes selection."""

    mode: str | None  # None: the pool's configured mode
    cost_scale: float  # multiplies the cost weight λ
    unload_idle: bool = False


POLICIES = {
    "WAKE": Policy(None, 1.0),
    "FOCUS": Policy(None, 0.5),
    "REST": Policy(None, 2.0, unload_idle=True),
    "DREAM": Policy(None, 2.0, unload_idle=True),
    "CRISIS": Policy("greedy", 0.0),  # the most trusted member, whatever it costs
}


class Metabolism:
    SHARED = "metabolic_state"  # the version row replicas share

    def __init__(self, settings: MetabolicSettings = MetabolicSettings(), log=None, clock=time.time, shared=None):
        self.settings, self.log, self.clock = settings, log, clock  # log(from, to, reason): the store's state log
        self.shared, self._seen = shared, 0  # shared: publish(name, value) / version(name), the store
        self.state = "WAKE"
        self._adopt()
        self.outcomes: deque[bool] = deque(maxlen=settings.crisis_window)
        self.salience: deque[float] = deque(maxlen=settings.salience_window)
        self.last_call = clock()

    @property
    def policy(self) -> Policy:
        return POLICIES[self.state]

    def _go(self, state: str, reason: str) -> None:
        if state != self.state:
            if self.log is not None:
                self.log(self.state, state, reason)
            if self.shared is not None and "DREAM" not in (state, self.state):
                self._seen = self.shared.publish(self.SHARED, state)
            self.state = state

    def _adopt(self) -> None:
        """Take up a state another replica published since this one last looked (not while in DREAM)."""
        if self.shared is None or self.state == "DREAM":
            return
        v = self.shared.version(self.SHARED)
        if v is not None and v[0] > self._seen:
            self._seen, self.state = v[0], v[1]

    def before_call(self, budget_left: float) -> str:
        """Called when a request arrives: idle time and budget may change the state first."""
        idle = self.clock() - self.last_call
        self.last_call = self.clock()
        self._adopt()
        if self.state == "DREAM":
            return self.state
        if budget_left < self.settings.rest_budget and self.state != "REST":
            self._go("REST", f"budget left {budget_left:.0%} < {self.settings.rest_budget:.0%}")
        elif self.state == "REST" and budget_left >= self.settings.rest_budget:
            self._go("WAKE", f"a request after {idle:.0f} s of rest")
        return self.state

    def after_call(self, success: bool | None, importance: float | None, budget_left: float) -> str:
        """Update with a call's outcome (None: not known yet) and its experience's importance."""
        cfg = self.settings
        self._adopt()
        if success is not None:
            self.outcomes.append(success)
        if importance is not None:
            self.salience.append(importance)
        if self.state == "DREAM":
            return self.state
        fails = sum(1 for o in self.outcomes if not o)
        if self.state == "CRISIS":
            tail = list(self.outcomes)[-cfg.recover_successes:]
            if len(tail) == cfg.recover_successes and all(tail):
                self.outcomes.clear()
                self._go("WAKE", f"{cfg.recover_successes} successes in a row")
            return self.state
        if fails >= cfg.crisis_failures and budget_left > 0:
            self._go("CRISIS", f"{fails} of the last {len(self.outcomes)} calls failed")
        elif budget_left < cfg.rest_budget:
            self._go("REST", f"budget left {budget_left:.0%} < {cfg.rest_budget:.0%}")
        else:
            sal = sum(self.salience) / len(self.salience) if self.salience else 0.0
            if sal >= cfg.focus_at:
                self._go("FOCUS", f"salience {sal:.2f} ≥ {cfg.focus_at}")
            elif self.state == "FOCUS" and sal < cfg.focus_at / 2:
                self._go("WAKE", f"salience {sal:.2f} < {cfg.focus_at / 2:.2f}")
            elif self.state == "REST":
                self._go("WAKE", "budget available again")
        return self.state

    def idle_check(self) -> str:
        """Called by a timer or `k1 pool status`: long idleness means REST."""
        idle = self.clock() - self.last_call
        if self.state in ("WAKE", "FOCUS") and idle >= self.settings.rest_after_s:
            self._go("REST", f"idle for {idle:.0f} s")
        return self.state

    def enter_dream(self, reason: str = "consolidation started") -> None:
        self._go("DREAM", reason)

    def leave_dream(self, reason: str = "consolidation finished") -> None:
        if self.state == "DREAM":
            self._go("WAKE", reason)
