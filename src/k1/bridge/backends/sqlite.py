"""The embedded backend: the exchange log (`k1.bridge.store.ExchangeLog`, one SQLite file) behind one worker
thread, with the budgets the hub holds senders and recipients to.

Every SQL call and every budget check runs on that one thread, in the order the event loop submitted them,
so a check and the append it allows are one step (two connections cannot both take the last slot), and a
locked or slow file stalls delivery, never the event loop (heartbeats, other connections' errors, rate
limits keep going).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from k1.bridge.protocol import Envelope, ProtocolError, frame_binary
from k1.bridge.store import ExchangeLog

log = logging.getLogger(__name__)


class SqliteBackend:
    """Messages in one SQLite file; budgets per (sender, recipient) for what is unacked and per sender for what
    the log holds within the retention window."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k1-bridge-sqlite")
        self.log: ExchangeLog | None = None
        self.declared: dict[str, set[str]] = {}
        # (sender, recipient) → [pending messages, pending bytes]; sender → bytes in the log. Touched only on
        # the worker thread.
        self._pending: dict[tuple[str, str], list[int]] = {}
        self._sent: dict[str, int] = {}
        self._events: dict[str, set[asyncio.Event]] = {}
        self.stats = {"expired": 0}
        self._sweeper: asyncio.Task | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        def opened():
            self.log = ExchangeLog(Path(self.cfg.db), durable=self.cfg.durable)
            self._pending = {k: list(v) for k, v in self.log.pending_totals().items()}
            self._sent = self.log.sender_totals()
            return self.log.agent_roles()

        self.declared = await self._run(opened)
        await self.sweep()
        if self.cfg.retention > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> dict:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        counts = await self.counts()
        await self._run(self.log.close)
        self._pool.shutdown(wait=True)
        return counts

    # --- agents and messages ------------------------------------------------------------------------------
    async def remember_agent(self, name: str, roles: list[str]) -> None:
        self.declared[name] = set(roles)
        await self._run(self.log.remember_agent, name, roles)

    async def store(self, env: Envelope, recipients: list[str], payload: bytes | None) -> bool:
        return await self._run(self._store, env, recipients, payload)

    def _store(self, env: Envelope, recipients: list[str], payload: bytes | None) -> bool:
        if self.log.has(env.sender, env.id):  # a resend of a stored message is receipted, never refused
            return False
        size = len(self.log.encode(env).encode()) + (len(payload) if payload is not None else 0)
        cfg = self.cfg
        if self._sent.get(env.sender, 0) + size > cfg.max_sender_bytes:
            raise ProtocolError("sender_full", f"{env.sender} already has {self._sent.get(env.sender, 0)} bytes in the "
                                f"log (limit {cfg.max_sender_bytes} within the retention of {cfg.retention:g}s, "
                                "acked or not); resend after older messages expire")
        full = [r for r in recipients if self._over((env.sender, r), size)]
        if full:
            raise ProtocolError("recipient_full", f"{', '.join(full)} already hold(s) the limit of {cfg.max_pending} "
                                f"messages or {cfg.max_pending_bytes} bytes from {env.sender} not yet acked; "
                                "resend later")
        stored = self.log.append(env, recipients, payload)
        if stored:
            self._sent[env.sender] = self._sent.get(env.sender, 0) + size
            for r in recipients:
                self._count((env.sender, r), 1, size)
        return stored

    def _over(self, key: tuple[str, str], size: int) -> bool:
        n, b = self._pending.get(key, (0, 0))
        return n + 1 > self.cfg.max_pending or b + size > self.cfg.max_pending_bytes

    def _count(self, key: tuple[str, str], n: int, size: int) -> None:
        p = self._pending.setdefault(key, [0, 0])
        p[0], p[1] = max(0, p[0] + n), max(0, p[1] + size)

    def wake(self, recipients: list[str]) -> None:
        for r in recipients:
            for ev in self._events.get(r, ()):
                ev.set()

    def open(self, name: str) -> _Delivery:
        return _Delivery(self, name)

    async def pending(self, name: str) -> int:
        return await self._run(self.log.count_pending, name)

    async def counts(self) -> dict:
        return await self._run(self.log.counts)

    # --- retention ----------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Delete what is older than the retention; returns how many pending deliveries that dropped."""
        if self.cfg.retention <= 0:
            return 0
        return await self._run(self._sweep)

    def _sweep(self) -> int:
        dropped, freed = self.log.expire(time.time() - self.cfg.retention)
        for s, r, size in dropped:
            self._count((s, r), -1, -size)
        for s, b in freed.items():
            self._sent[s] = max(0, self._sent.get(s, 0) - b)
        if dropped:
            self.stats["expired"] += len(dropped)
            log.info("expired %d pending deliveries older than %gs", len(dropped), self.cfg.retention)
        return len(dropped)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sweep_every)
            await self.sweep()


class _Delivery:
    """One connection's view: sends from the log, not from a queue, so replay after a reconnect or a restart is
    the same code path as live delivery."""

    def __init__(self, backend: SqliteBackend, name: str):
        self.b, self.name = backend, name
        self.wake = asyncio.Event()
        self.wake.set()

    async def run(self, send) -> None:
        self.b._events.setdefault(self.name, set()).add(self.wake)
        last = 0  # highest log seq sent on this connection
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while rows := await self.b._run(self.b.log.pending, self.name, last):
                    for seq, envelope, payload in rows:
                        await send(envelope if payload is None else frame_binary(envelope.encode(), payload))
                        last = seq
        finally:
            self.b._events.get(self.name, set()).discard(self.wake)

    async def ack(self, ids: list[str], sender: str | None) -> None:
        await self.b._run(self._ack, ids, sender)

    def _ack(self, ids, sender) -> None:
        for s, size in self.b.log.ack(self.name, ids, sender):
            self.b._count((s, self.name), -1, -size)

    async def close(self) -> None:
        pass
