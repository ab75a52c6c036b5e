"""Cooldowns: a member that failed `cooldown_after` times in a row — or whose circuit breaker is open — is
left out of selection for `cooldown_s` (LiteLLM's router does the same)."""

from __future__ import annotations

import threading
import time

from k1.pool.route.limits import Limits


class Cooldowns:
    def __init__(self, limits: Limits, clock=time.monotonic):
        self.limits, self.clock = limits, clock
        self._lock = threading.Lock()
        self._cool: dict[str, tuple[int, float]] = {}  # member → (failures in a row, cooled until)

    def failed(self, name: str) -> None:
        with self._lock:
            fails = self._cool.get(name, (0, 0.0))[0] + 1
            until = self.clock() + self.limits.cooldown_s if fails >= self.limits.cooldown_after else 0.0
            self._cool[name] = (fails, until)

    def answered(self, name: str) -> None:
        with self._lock:
            self._cool.pop(name, None)

    def cooled(self, name: str, member=None) -> bool:
        breaker = getattr(member, "breaker", None)
        return self._cool.get(name, (0, 0.0))[1] > self.clock() or (breaker is not None and not breaker.allow())
