"""`Gate`: one member's turn — one call at a time, a bounded queue, a bounded wait (`Busy` past either).

Requests for different members run at the same time (`Limits.concurrency = "global"`: one gate for all)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from k1.pool.errors import Busy
from k1.pool.route.limits import Limits


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


def build_gates(names: list[str], limits: Limits) -> dict[str, Gate]:
    if limits.concurrency == "global":
        one = Gate(limits.queue, limits.wait_s)
        return {name: one for name in names}
    return {name: Gate(limits.queue, limits.wait_s) for name in names}


@contextmanager
def if_free(gate: Gate | None) -> Iterator[bool]:
    """→ whether the gate was free and is now held until the block ends (a busy one is not waited for)."""
    got = gate is not None and gate.try_acquire()
    try:
        yield got
    finally:
        if got:
            gate.release()


@contextmanager
def all_free(gates: dict[str, Gate]) -> Iterator[bool]:
    """→ whether every gate was free (then all are held until the block ends): no call runs meanwhile."""
    held = []
    try:
        for g in {id(g): g for g in gates.values()}.values():
            if not g.try_acquire():
                break
            held.append(g)
        else:
            yield True
            return
        yield False
    finally:
        for g in held:
            g.release()
