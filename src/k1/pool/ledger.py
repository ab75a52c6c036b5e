"""`Ledger`: the one way ATP is spent — `reserve(estimate)` before a member runs, `charge(actual)` after.

Every call kind goes through it: requests, judges, cross-checks, background verification, DREAM's teacher and
student calls, calibration (the store's `kind` column says which). A reservation is checked against the
budget (and the tenant's share of it) together with every other reservation still open, so concurrent calls
cannot together spend more than the budget. A remote member's charge is clamped to what was reserved: one that
reports more tokens than the call could have used (2^40 − 1, or a 4 MiB reply to `max_tokens=5`) is charged
the reservation, never more. A local member's cost is compute this process measured itself, charged as is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from k1.pool.errors import BudgetExhausted
from k1.pool.members.base import Cost, Generation, Member, Prompt
from k1.pool.tenants import OPERATOR, Tenant


@dataclass
class Reservation:
    amount: float
    tenant: Tenant
    kind: str
    clamp: bool = True  # a remote member's charge is capped at the reservation; local compute is measured here
    open: bool = True


class Ledger:
    def __init__(self, store, budget_atp: float):
        self.store, self.budget_atp = store, budget_atp
        self._lock = threading.Lock()
        self._reserved = 0.0
        self._by_tenant: dict[str, float] = {}

    @property
    def reserved(self) -> float:
        return self._reserved

    def left(self) -> float:
        """Share of the budget not yet spent, in [0, 1]."""
        return max(0.0, 1.0 - self.store.spent() / self.budget_atp)

    def check(self, tenant: Tenant = OPERATOR) -> None:
        """Refuse a request up front when nothing is left (of the budget, or of the tenant's share)."""
        spent = self.store.spent()
        if spent + self._reserved >= self.budget_atp:
            raise BudgetExhausted(f"the pool spent {spent:.1f} of its {self.budget_atp:g} ATP budget"
                                  f"{f' ({self._reserved:.1f} more is reserved by calls running now)' if self._reserved else ''}; "
                                  "raise [pool] budget_atp or run `k1 pool budget --reset`")
        if tenant.budget_share < 1.0:
            mine, cap = self.store.spent(tenant.name), tenant.budget_share * self.budget_atp
            if mine + self._by_tenant.get(tenant.name, 0.0) >= cap:
                raise BudgetExhausted(f"this key spent {mine:.1f} of its {cap:g} ATP share of the budget; ask the "
                                      "operator for a larger budget_share")

    def reserve(self, estimate: float, *, tenant: Tenant = OPERATOR, kind: str = "request",
                what: str = "this call", clamp: bool = True) -> Reservation:
        """Hold `estimate` ATP for one member call, or raise `BudgetExhausted`."""
        estimate = max(0.0, float(estimate))
        with self._lock:
            spent = self.store.spent()
            if spent + self._reserved + estimate > self.budget_atp:
                raise BudgetExhausted(f"{what} may cost up to {estimate:.3g} ATP; the pool has "
                                      f"{max(0.0, self.budget_atp - spent - self._reserved):.3g} of its "
                                      f"{self.budget_atp:g} ATP budget left; ask for fewer tokens, raise "
                                      "[pool] budget_atp or run `k1 pool budget --reset`")
            if tenant.budget_share < 1.0:
                mine, cap = self.store.spent(tenant.name), tenant.budget_share * self.budget_atp
                if mine + self._by_tenant.get(tenant.name, 0.0) + estimate > cap:
                    raise BudgetExhausted(f"{what} may cost up to {estimate:.3g} ATP; this key has "
                                          f"{max(0.0, cap - mine):.3g} of its {cap:g} ATP share left")
            self._reserved += estimate
            self._by_tenant[tenant.name] = self._by_tenant.get(tenant.name, 0.0) + estimate
        return Reservation(estimate, tenant, kind, clamp)

    def release(self, res: Reservation | None) -> None:
        if res is None or not res.open:
            return
        with self._lock:
            res.open = False
            self._reserved = max(0.0, self._reserved - res.amount)
            left = self._by_tenant.get(res.tenant.name, 0.0) - res.amount
            if left > 1e-12:
                self._by_tenant[res.tenant.name] = left
            else:
                self._by_tenant.pop(res.tenant.name, None)

    def charge(self, res: Reservation, member: str, path: str, cost: Cost | None, gen: Generation | None = None, *,
               request: str | None = None, session: str | None = None, task_class: str | None = None,
               stream: bool = False) -> float:
        """Write what the call cost (at most the reservation) and release the reservation; → ATP charged."""
        c = gen.cost if gen is not None else cost
        atp = max(0.0, c.atp) if c is not None else 0.0
        if res.clamp:
            atp = min(atp, res.amount)
        try:
            self.store.charge(member, path, atp, c.flops if c else 0.0, c.latency_s if c else 0.0, request=request,
                              session=session, context=task_class, prompt_tokens=gen.prompt_tokens if gen else 0,
                              completion_tokens=gen.completion_tokens if gen else 0, stream=stream,
                              tenant=res.tenant.name, kind=res.kind)
        finally:
            self.release(res)
        return atp

    def call(self, member: Member, prompt: Prompt, *, kind: str, tenant: Tenant = OPERATOR,
             request: str | None = None, session: str | None = None, task_class: str | None = None,
             **generate) -> Generation:
        """One whole member call outside a request (a judge, a cross-check, DREAM's teacher, calibration):
        reserve its estimate, run it, charge what it cost — a failure too, with what it reported spending."""
        n = member.prompt_tokens(prompt)
        res = self.reserve(member.estimate_cost(n, generate.get("max_tokens", 64)), tenant=tenant, kind=kind,
                           what=f"{kind} by {member.name!r}", clamp=not member.is_local)
        where = {"request": request, "session": session, "task_class": task_class}
        member.last_generation = None
        try:
            g = member.generate(prompt, **generate)
        except BaseException as e:
            self.charge(res, member.name, "failure", getattr(e, "cost", None), member.last_generation, **where)
            raise
        self.charge(res, member.name, "success", None, g, **where)
        return g
