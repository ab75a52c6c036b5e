"""`pool_status`: what `k1 pool status` and `/v1/pool` show — trust table, budget, state, recent experiences."""

from __future__ import annotations


def trust_table(store) -> list[dict]:
    rows = []
    for (member, context), (s, f) in sorted(store.trust().items()):
        rows.append({"member": member, "context": context, "successes": s, "failures": f,
                     "mean": (1 + s) / (2 + s + f)})
    return rows


def pool_status(router, recent: int = 10) -> dict:
    store, st = router.store, router.settings
    spent = store.spent()
    return {
        "members": [{**m.info(), "loaded": name not in router.pool.unloaded}
                    for name, m in router.pool.members.items()],
        "trust": trust_table(store),
        "budget": {"limit_atp": st.budget_atp, "spent_atp": spent, "left_share": router.budget_left()},
        "state": router.metabolism.idle_check(),
        "selection": st.selection,
        "calls": store.ledger_totals(),
        "state_log": store.state_log(20),
        "recent": [{k: e[k] for k in ("id", "member", "context", "prompt", "response", "atp", "outcome", "importance")}
                   for e in store.experiences(limit=recent, newest_first=True)],
    }
