"""`Ledger`: the one way ATP is spent — `reserve(estimate)` before a member runs, `charge(actual)` after.

Every call kind goes through it: requests, judges, cross-checks, background verification, DREAM's teacher calls
and replays ("dream"), DREAM's measurement of its student ("dream-measure") and calibration; the store's `kind`
column says which. Not charged: training steps and the teacher-forced forward passes of distillation (not
member calls), and the reference member's scoring for the surprise signal (a request's overhead).

A reservation is checked against the budget (and the tenant's share of it) together with every other
reservation still open, so concurrent calls cannot together spend more than the budget. A remote member's charge is clamped to what was reserved: one that
reports more tokens than the call could have used (2^40 − 1, or a 4 MiB reply to `max_tokens=5`) is charged
the reservation, never more. A local member's cost is compute this process measured itself, charged as is.

The budget's holds live in the store (`PoolStore.reserve`): atomic there, so replicas sharing a database
cannot together pass the budget, and a charge releases its hold in the same write. A tenant's share of the
budget is checked here, in this process: replicas each hold their own count of a tenant's running calls, so
N replicas may together pass a tenant's share by up to N − 1 calls' estimates (never the pool's budget).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from k1.pool.errors import BudgetExhausted
from k1.pool.members.base import Cost, Generation, Member, Prompt, Score
from k1.pool.tenants import OPERATOR, Tenant

log = logging.getLogger(__name__)


@dataclass
class Reservation:
    amount: float
    tenant: Tenant
    kind: str
    clamp: bool = True  # a remote member's charge is capped at the reservation; local compute is measured here
    open: bool = True
    id: int | None = None  # the store's hold on the budget (seen by every replica on the store)


class Ledger:
    def __init__(self, store, budget_atp: float):
        self.store, self.budget_atp = store, budget_atp
        self._lock = threading.Lock()
        self._by_tenant: dict[str, float] = {}  # ATP held by this process's running calls, per tenant

    @property
    def reserved(self) -> float:
        """ATP held now by running calls, on every replica sharing the store."""
        return self.store.reserved()

    def left(self) -> float:
        """Share of the budget not yet spent, in [0, 1]."""
        return max(0.0, 1.0 - self.store.spent() / self.budget_atp)

    def check(self, tenant: Tenant = OPERATOR) -> None:
        """Refuse a request up front when nothing is left (of the budget, or of the tenant's share)."""
        spent, held = self.store.spent(), self.store.reserved()
        if spent + held >= self.budget_atp:
            raise BudgetExhausted(f"the pool spent {spent:.1f} of its {self.budget_atp:g} ATP budget"
                                  f"{f' ({held:.1f} more is reserved by calls running now)' if held else ''}; "
                                  "raise [pool] budget_atp or run `k1 pool budget --reset`")
        if tenant.budget_share < 1.0:
            mine, cap = self.store.spent(tenant.name), tenant.budget_share * self.budget_atp
            if mine + self._by_tenant.get(tenant.name, 0.0) >= cap:
                raise BudgetExhausted(f"this key spent {mine:.1f} of its {cap:g} ATP share of the budget; ask the "
                                      "operator for a larger budget_share")

    def afford(self, estimate: float, what: str, tenant: Tenant = OPERATOR) -> None:
        """Refuse up front a job of many calls (DREAM) that the budget cannot pay in full, before it buys anything
        it would then throw away. A check, not a hold: each of the job's calls still reserves its own."""
        self.check(tenant)
        left = self.budget_atp - self.store.spent() - self.store.reserved()
        if estimate > left:
            raise BudgetExhausted(f"{what} may cost up to {estimate:.3g} ATP; the pool has {max(0.0, left):.3g} of "
                                  f"its {self.budget_atp:g} ATP budget left; raise [pool] budget_atp, run "
                                  "`k1 pool budget --reset`, or ask for less")

    def reserve(self, estimate: float, *, tenant: Tenant = OPERATOR, kind: str = "request",
                what: str = "this call", clamp: bool = True, request: str | None = None,
                member: str | None = None) -> Reservation:
        """Hold `estimate` ATP for one member call, or raise `BudgetExhausted`."""
        estimate = max(0.0, float(estimate))
        with self._lock:
            if tenant.budget_share < 1.0:
                mine, cap = self.store.spent(tenant.name), tenant.budget_share * self.budget_atp
                if mine + self._by_tenant.get(tenant.name, 0.0) + estimate > cap:
                    raise BudgetExhausted(f"{what} may cost up to {estimate:.3g} ATP; this key has "
                                          f"{max(0.0, cap - mine):.3g} of its {cap:g} ATP share left")
            rid = self.store.reserve(estimate, self.budget_atp, request=request, member=member)
            if rid is None:
                left = self.budget_atp - self.store.spent() - self.store.reserved()
                raise BudgetExhausted(f"{what} may cost up to {estimate:.3g} ATP; the pool has "
                                      f"{max(0.0, left):.3g} of its {self.budget_atp:g} ATP budget left; ask for "
                                      "fewer tokens, raise [pool] budget_atp or run `k1 pool budget --reset`")
            self._by_tenant[tenant.name] = self._by_tenant.get(tenant.name, 0.0) + estimate
        return Reservation(estimate, tenant, kind, clamp, id=rid)

    def release(self, res: Reservation | None, *, in_store: bool = True) -> None:
        """Give a hold back (`in_store=False`: its charge already removed it from the store)."""
        if res is None or not res.open:
            return
        with self._lock:
            res.open = False
            left = self._by_tenant.get(res.tenant.name, 0.0) - res.amount
            if left > 1e-12:
                self._by_tenant[res.tenant.name] = left
            else:
                self._by_tenant.pop(res.tenant.name, None)
        if in_store and res.id is not None:
            try:
                self.store.release(res.id)
            except Exception as e:  # the store unreachable: the hold expires on its own (`PoolStore.reserve`)
                log.warning("budget hold %s not released: %s: %s", res.id, type(e).__name__, e)

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
                              session=session, task_class=task_class, prompt_tokens=gen.prompt_tokens if gen else 0,
                              completion_tokens=gen.completion_tokens if gen else 0, stream=stream,
                              tenant=res.tenant.name, kind=res.kind, reservation=res.id if res.open else None)
        except BaseException:
            self.release(res)
            raise
        self.release(res, in_store=False)  # the charge deleted the store's hold in its own write
        return atp

    def call(self, member: Member, prompt: Prompt, *, kind: str, tenant: Tenant = OPERATOR,
             request: str | None = None, session: str | None = None, task_class: str | None = None,
             **generate) -> Generation:
        """One whole member call outside a request (a judge, a cross-check, DREAM's teacher, calibration):
        reserve its estimate, run it, charge what it cost — a failure too, with what it reported spending."""
        n = member.prompt_tokens(prompt)
        res = self.reserve(member.estimate_cost(n, generate.get("max_tokens", 64)), tenant=tenant, kind=kind,
                           what=f"{kind} by {member.name!r}", clamp=not member.is_local, request=request,
                           member=member.name)
        where = {"request": request, "session": session, "task_class": task_class}
        member.last_generation = None
        try:
            g = member.generate(prompt, **generate)
        except BaseException as e:
            self.charge(res, member.name, "failure", getattr(e, "cost", None), member.last_generation, **where)
            raise
        self.charge(res, member.name, "success", None, g, **where)
        return g

    def score(self, member: Member, prompt: Prompt, continuation: str, *, kind: str, tenant: Tenant = OPERATOR,
              request: str | None = None, session: str | None = None, task_class: str | None = None) -> Score:
        """One scoring pass (bits per byte of `continuation` after `prompt`): reserved and charged as `call` is;
        a pass that fails reported no cost and gives its hold back."""
        n = member.prompt_tokens(prompt)
        res = self.reserve(member.estimate_cost(n, len(continuation.encode("utf-8", "replace")) + 1), tenant=tenant,
                           kind=kind, what=f"{kind} by {member.name!r}", clamp=not member.is_local, request=request,
                           member=member.name)
        try:
            sc = member.score(prompt, continuation)
        except BaseException:
            self.release(res)
            raise
        self.charge(res, member.name, "success", sc.cost, request=request, session=session, task_class=task_class)
        return sc
