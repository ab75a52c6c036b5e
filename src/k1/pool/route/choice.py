"""`Choice`: task class + trust + calibration + cost → the members a call may try, in order.

Trust per (member, task class) is the calibration prior (w · solved, w · unsolved) plus live outcomes; cost is
the measured mean ATP per call (the ledger's, else calibration's, else the member's own estimate). Two rules
keep `auto` from handing a user to a member that has not earned it:
- a student (role "student") is a candidate for a class only once its calibration for that class reaches
  `[pool] student_pass` (a student nobody measured, or one that failed, never answers `auto`);
- when no evidence tells the candidates apart (the same successes and failures for this class, and some),
  the member with the better prior takes the call — the higher calibration success over all classes, then the
  larger expected cost (the bigger model) — not the cheapest.
Members cooling down are left out unless every member is.
"""

from __future__ import annotations

import random
import threading

from k1.common.trust import beta_mean
from k1.pool.route.cooldown import Cooldowns
from k1.pool.route.select import Candidate, Decision, select


class Choice:
    def __init__(self, pool, store, cooldowns: Cooldowns, rng: random.Random):
        self.pool, self.store = pool, store
        self.cooldowns, self.rng = cooldowns, rng
        self._rng_lock = threading.Lock()

    @property
    def settings(self):
        return self.pool.settings

    def admitted(self, name: str, task_class: str, cal: dict) -> bool:
        """A student answers `auto` for a class only once it passed that class's calibration."""
        if "student" not in self.pool.members[name].roles:
            return True
        c = cal.get((name, task_class))
        return bool(c and c["n"] and c["solved"] / c["n"] >= self.settings.student_pass)

    def candidates(self, task_class: str, prompt_tokens: int, max_tokens: int) -> list[Candidate]:
        trust, measured = self.store.trust(task_class), self.store.mean_cost()
        cal, w = self.store.calibration_summary(), self.settings.calibration_weight
        out = []
        for name, m in self.pool.members.items():
            if not self.admitted(name, task_class, cal):
                continue
            s, f = trust.get((name, task_class), (0.0, 0.0))
            c = cal.get((name, task_class))
            if c:
                s, f = s + w * c["solved"], f + w * (c["n"] - c["solved"])
            cost = measured.get(name)
            if cost is None and c:
                cost = c["atp"]
            out.append(Candidate(name, s, f, cost if cost is not None else m.estimate_cost(prompt_tokens, max_tokens)))
        if not out:  # only students, none admitted: the pool still answers
            return self.candidates_unfiltered(task_class, prompt_tokens, max_tokens)
        warm = [c for c in out if not self.cooldowns.cooled(c.name, self.pool.members.get(c.name))]
        return warm or out  # every member cooling down: choose among them all rather than refuse

    def candidates_unfiltered(self, task_class, prompt_tokens, max_tokens) -> list[Candidate]:
        m = {n: m.estimate_cost(prompt_tokens, max_tokens) for n, m in self.pool.members.items()}
        return [Candidate(n, 0.0, 0.0, c) for n, c in m.items()]

    def prior(self, name: str, cal: dict) -> float:
        """A member's calibration success over every class (its prior when a class's evidence ties)."""
        solved = sum(c["solved"] for (m, _), c in cal.items() if m == name)
        n = sum(c["n"] for (m, _), c in cal.items() if m == name)
        return beta_mean(solved, n - solved)

    def choose(self, task_class: str, prompt_tokens: int, max_tokens: int, mode: str, cost_weight: float) -> Decision:
        cands = self.candidates(task_class, prompt_tokens, max_tokens)
        evidence = {(c.successes, c.failures) for c in cands}
        if len(cands) > 1 and len(evidence) == 1 and cands[0].n > 0:  # a tie: the strongest, not the cheapest
            cal = self.store.calibration_summary()
            score = {c.name: (self.prior(c.name, cal), c.cost) for c in cands}
            best = max(score, key=score.get)
            return Decision(best, "prior", {n: s[0] for n, s in score.items()})
        with self._rng_lock:
            return select(cands, mode, cost_weight, self.rng)

    def order(self, decision: Decision, retries: int) -> list[str]:
        """The chosen member, then the next best by utility (at most `retries` more), none cooling down."""
        u = decision.utilities
        rest = sorted((n for n in u if n != decision.member
                       and not self.cooldowns.cooled(n, self.pool.members.get(n))), key=lambda n: -u[n])
        return [decision.member] + rest[:retries]
