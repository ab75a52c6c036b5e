"""Opening a pool: its members, its store and its router, with DREAM's weights applied and the pool's own
verifiers wired in — the one place that knows all of them (the router below knows none of `learn`)."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from k1.pool.learn.verifiers import NoVerifier, class_verifier
from k1.pool.learn.weights import StudentPoll, apply_dream_weights, reapply
from k1.pool.pool import Pool, load_pool
from k1.pool.route.call import Verifier
from k1.pool.route.limits import Limits
from k1.pool.route.router import Router
from k1.pool.store import PoolStore

log = logging.getLogger(__name__)


@cache
def pool_verifier(task_class: str) -> Verifier | None:
    """The verifier the pool judges its own answers of `task_class` with, or None (none for the class, or the
    code class without a sandbox)."""
    try:
        return class_verifier(task_class)
    except NoVerifier:
        return None


def open_router(pool: Pool | str | Path, store: PoolStore | None = None, *, limits: Limits | None = None) -> Router:
    """A router over `pool` (a `Pool` or a pool file) with DREAM's weights applied to its students and, where
    `[pool] self_verify` is on, background verification of its answers; students that another replica on the
    same store publishes are taken up as requests come in (`StudentPoll`)."""
    pool = pool if isinstance(pool, Pool) else load_pool(pool)
    router = Router(pool, store, limits=limits, verifiers=pool_verifier if pool.settings.self_verify else None)
    try:
        router.consolidated = apply_dream_weights(router)  # students keep what DREAM taught them across restarts
    except Exception as e:  # stored data never stops the pool from starting
        log.warning("DREAM weights not applied: %s: %s", type(e).__name__, e)
    pool.on_reload = lambda name, member: reapply(router, name, member)  # REST unloaded it: the same student returns
    router.students = StudentPoll(router)  # and take up those another replica's DREAM publishes, without a restart
    return router
