"""`pool_status`: what `k1 pool status` and `/v1/pool` show — trust per (member, task class) with its
calibration prior, budget, state, recent experiences."""

from __future__ import annotations

from k1.common.trust import beta_mean
from k1.pool.route.metabolic import Metabolism
from k1.pool.sleep.scheduler import last_cycle
from k1.pool.store import PoolStore


def trust_table(store, calibration_weight: float = 1.0) -> list[dict]:
    """One row per (member, task class): live successes/failures, the calibration prior, and the posterior
    mean the router starts from (Beta(1 + w·solved + s, 1 + w·unsolved + f))."""
    live, cal = store.trust(), store.calibration_summary()
    rows = []
    for member, task_class in sorted(set(live) | set(cal)):
        s, f = live.get((member, task_class), (0.0, 0.0))
        c = cal.get((member, task_class), {"n": 0, "solved": 0.0, "atp": None})
        ps, pf = calibration_weight * c["solved"], calibration_weight * (c["n"] - c["solved"])
        rows.append({"member": member, "task_class": task_class, "context": task_class,  # the old name, one release
                     "successes": s, "failures": f,
                     "cal_n": c["n"], "cal_solved": c["solved"], "cal_atp": c["atp"],
                     "mean": beta_mean(s + ps, f + pf)})
    return rows


def pool_status(router, recent: int = 10, tenant=None) -> dict:
    """Everything for an admin (or the CLI); another tenant sees no prompts, only its own spend."""
    store, st = router.store, router.settings
    spent = store.spent()
    admin = tenant is None or tenant.admin
    out = {
        "members": [{**m.info(), "loaded": name not in router.pool.unloaded}
                    for name, m in router.pool.members.items()],
        "trust": trust_table(store, st.calibration_weight),
        "calibration_weight": st.calibration_weight,
        "budget": {"limit_atp": st.budget_atp, "spent_atp": spent, "left_share": router.budget_left()},
        "state": router.metabolism.idle_check(),
        "selection": st.selection,
        "calls": store.ledger_totals(),
        "state_log": store.state_log(20),
    }
    if admin:
        sleep = getattr(router, "sleep", None)  # `k1 pool serve`'s (k1.pool.sleep.scheduler)
        out["dream"] = sleep.status() if sleep is not None else {"mode": "off", "last": last_cycle(store)}
        out["recent"] = [{k: e[k] for k in ("id", "member", "task_class", "context", "prompt", "response", "atp",
                                            "outcome", "importance", "tenant")}
                         for e in store.experiences(limit=recent, newest_first=True)]
    else:
        out["budget"]["tenant_spent_atp"] = store.spent(tenant.name)
        out["budget"]["tenant_limit_atp"] = tenant.budget_share * st.budget_atp
    return out


def file_status(cfg, recent: int = 10) -> dict:
    """`pool_status` read from a pool file (`PoolConfig`) and its store alone: no member is loaded, so
    `k1 pool status` prints its tables in about a second instead of loading every model first. The members'
    `uncalibrated` list names those the store has no calibration for."""
    st = cfg.pool
    store = PoolStore(st.store)
    try:
        spent = store.spent()
        calibrated = {m for m, _ in store.calibration_summary()}
        return {
            "members": [{"name": m.name, "kind": m.kind, "roles": list(m.roles), "loaded": False}
                        for m in cfg.members],
            "uncalibrated": [m.name for m in cfg.members if m.name not in calibrated],
            "trust": trust_table(store, st.calibration_weight),
            "calibration_weight": st.calibration_weight,
            "budget": {"limit_atp": st.budget_atp, "spent_atp": spent,
                       "left_share": max(0.0, 1.0 - spent / st.budget_atp)},
            "state": Metabolism(st.metabolic, log=store.log_state).idle_check(),
            "selection": st.selection,
            "calls": store.ledger_totals(),
            "state_log": store.state_log(20),
            "dream": {"mode": st.dream.mode, "last": last_cycle(store)},
            "recent": [{k: e[k] for k in ("id", "member", "task_class", "context", "prompt", "response", "atp",
                                          "outcome", "importance")}
                       for e in store.experiences(limit=recent, newest_first=True)],
        }
    finally:
        store.close()
