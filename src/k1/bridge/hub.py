"""The hub: a WebSocket server that authenticates agents, routes envelopes, logs them and redelivers until acked.

Per connection: the first frame must be `register`; then a reader loop (validate → rate-limit → resolve `to`
→ append to the exchange log → receipt → wake the recipients) and one pump task that sends the recipient's
unacked messages from the log in order. Sending from the log, not from an in-memory queue, is what makes
replay after a reconnect or a hub restart the same code path as live delivery; one stalled peer only
stalls its own pump (the websockets "one queue per recipient" pattern).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_lib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from k1.bridge.auth import AgentBook
from k1.bridge.protocol import (ACK, BROADCAST, CLOSE_POLICY, CLOSE_REPLACED, HUB_NAME, HUB_TYPES, PROTOCOL_VERSION,
                                RECEIPT, REGISTER, WELCOME, Envelope, ProtocolError, encode_text, error, frame_binary,
                                parse_binary, parse_text)
from k1.bridge.store import ExchangeLog

log = logging.getLogger(__name__)


@dataclass
class HubConfig:
    """How the hub listens and what it tolerates. `port=0` picks a free port (tests, bench)."""

    host: str = "127.0.0.1"
    port: int = 8765
    db: Path = Path("bridge.sqlite")
    max_size: int = 1 << 20          # bytes per frame; larger → the connection closes with 1009
    rate: float = 200.0              # messages per second per agent (token bucket); 0 = unlimited
    burst: int = 400                 # bucket size
    ping_interval: float = 10.0      # heartbeats: a peer that misses a pong for ping_timeout is dropped
    ping_timeout: float = 10.0
    close_timeout: float = 2.0       # a peer that does not finish the closing handshake is cut off after this
    register_timeout: float = 5.0
    certfile: Path | None = None     # TLS when both are given
    keyfile: Path | None = None
    durable: bool = False            # SQLite synchronous=FULL (survives power loss, slower)


@dataclass
class _TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.tokens = self.burst

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Session:
    name: str
    ws: ServerConnection
    roles: set[str]
    bucket: _TokenBucket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_sent: int = 0              # highest log seq sent on this connection
    pump: asyncio.Task | None = None


class Hub:
    """Route, log, redeliver. Start with `await hub.start()`; `hub.port` is the bound port."""

    def __init__(self, cfg: HubConfig, book: AgentBook):
        self.cfg, self.book = cfg, book
        self.log = ExchangeLog(cfg.db, durable=cfg.durable)
        # name → roles for routing: those declared at the agent's last registration (persisted, so offline agents
        # keep them across hub restarts); an agent that never registered has the roles the agents file allows it
        self.roles = {n: set(e.roles) for n, e in book.entries.items()} | self.log.agent_roles()
        self.online: dict[str, _Session] = {}
        self.server = None
        self.port = cfg.port

    async def start(self) -> "Hub":
        tls = None
        if self.cfg.certfile and self.cfg.keyfile:
            tls = ssl_lib.SSLContext(ssl_lib.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.cfg.certfile, self.cfg.keyfile)
        self.server = await serve(self._handle, self.cfg.host, self.cfg.port, max_size=self.cfg.max_size,
                                  ping_interval=self.cfg.ping_interval, ping_timeout=self.cfg.ping_timeout,
                                  close_timeout=self.cfg.close_timeout,
                                  compression=None, ssl=tls, max_queue=64)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("bridge hub on %s:%d, log %s", self.cfg.host, self.port, self.cfg.db)
        return self

    async def stop(self) -> dict:
        """Close every connection, let the handlers finish (acks already received get applied), close the
        log; returns the log's final counts."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        counts = self.log.counts()
        self.log.close()
        return counts

    # --- one connection -----------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        s = await self._register(ws)
        if s is None:
            return
        try:
            async for frame in ws:
                await self._on_frame(s, frame)
        except ConnectionClosed:
            pass
        finally:
            if s.pump is not None:
                s.pump.cancel()
                await asyncio.gather(s.pump, return_exceptions=True)  # before the log may close
            if self.online.get(s.name) is s:
                del self.online[s.name]
            log.info("agent %s left (%s)", s.name, ws.close_code)

    async def _register(self, ws: ServerConnection) -> _Session | None:
        try:
            env = parse_text(await asyncio.wait_for(ws.recv(), self.cfg.register_timeout))
            if env.type != REGISTER:
                raise ProtocolError("not_registered", "the first message must be of type `register`")
            d = env.data if isinstance(env.data, dict) else {}
            if d.get("version") != PROTOCOL_VERSION:
                raise ProtocolError("bad_version", f"hub speaks protocol {PROTOCOL_VERSION}, got {d.get('version')!r}")
            name, token, roles = str(d.get("name", "")), str(d.get("token", "")), d.get("roles") or []
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ProtocolError("bad_envelope", "data.roles must be a list of strings")
            if not self.book.check(name, token):
                raise ProtocolError("auth_failed", "unknown agent or wrong token")
            if not self.book.allowed_roles(name, roles):
                raise ProtocolError("auth_failed", f"agent {name} may not take roles {roles}")
        except (ProtocolError, asyncio.TimeoutError) as e:
            code = e.code if isinstance(e, ProtocolError) else "not_registered"
            try:
                await ws.send(encode_text(error(code, str(e) or "no register message in time")))
                await ws.close(CLOSE_POLICY, code)
            except ConnectionClosed:
                pass
            return None
        except ConnectionClosed:
            return None
        old = self.online.get(name)
        if old is not None:  # the agent reconnected before the hub noticed its old connection died
            await old.ws.close(CLOSE_REPLACED, "replaced by a new connection")
        s = _Session(name, ws, set(roles), _TokenBucket(self.cfg.rate, self.cfg.burst))
        self.online[name] = s
        self.roles[name] = set(roles)
        self.log.remember_agent(name, roles)
        pending = self.log.count_pending(name)
        await ws.send(encode_text(Envelope(type=WELCOME, sender=HUB_NAME, to=name, data={
            "version": PROTOCOL_VERSION, "name": name, "roles": sorted(roles), "pending": pending,
            "max_size": self.cfg.max_size, "rate": self.cfg.rate, "capabilities": d.get("capabilities", {})})))
        s.pump = asyncio.create_task(self._pump(s))
        s.wake.set()
        log.info("agent %s joined with roles %s, %d pending", name, roles, pending)
        return s

    async def _on_frame(self, s: _Session, frame: str | bytes) -> None:
        payload = None
        try:
            if isinstance(frame, bytes):
                env, payload = parse_binary(frame)
            else:
                env = parse_text(frame)
        except ProtocolError as e:
            await s.ws.send(encode_text(error(e.code, str(e))))
            return
        try:
            await self._on_envelope(s, env, payload)
        except ProtocolError as e:
            await s.ws.send(encode_text(error(e.code, str(e), reply_to=env.id)))

    async def _on_envelope(self, s: _Session, env: Envelope, payload: bytes | None) -> None:
        if env.type == ACK:
            ids = env.data.get("ids") if isinstance(env.data, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ProtocolError("bad_envelope", "an ack carries data.ids: a list of message ids")
            self.log.ack(s.name, ids)
            return
        if env.type in HUB_TYPES:
            raise ProtocolError("reserved_type", f"type {env.type!r} is sent by the hub only")
        if not s.bucket.take():
            raise ProtocolError("rate_limited", f"over {self.cfg.rate:g} messages/s; resend later")
        env.sender = s.name  # the hub stamps the sender: an agent cannot speak for another
        recipients = self.resolve(env.to, s.name)
        if not recipients:
            raise ProtocolError("unknown_recipient", f"`to` {env.to!r} names no known agent or role")
        stored = self.log.append(env, recipients, payload)
        await s.ws.send(encode_text(Envelope(type=RECEIPT, sender=HUB_NAME, to=s.name, reply_to=env.id,
                                             data={"recipients": recipients, "duplicate": not stored})))
        if stored:
            for r in recipients:
                if r in self.online:
                    self.online[r].wake.set()

    def resolve(self, to: str, sender: str) -> list[str]:
        """`to` → recipient names: an agent name (known to the agents file, online or not), else a role, else
        "*" for every known agent; the sender never receives its own role or broadcast messages."""
        if to in self.book.entries:
            return [to]
        names = self.book.entries.keys() if to == BROADCAST else [n for n, r in self.roles.items() if to in r]
        return sorted(n for n in names if n != sender)

    async def _pump(self, s: _Session) -> None:
        try:
            while True:
                await s.wake.wait()
                s.wake.clear()
                while rows := self.log.pending(s.name, s.last_sent):
                    for seq, envelope, payload in rows:
                        await s.ws.send(envelope if payload is None else frame_binary(envelope.encode(), payload))
                        s.last_sent = seq
        except ConnectionClosed:
            pass


async def serve_forever(cfg: HubConfig, book: AgentBook, ready=None) -> None:
    """Run a hub until cancelled; `ready(hub)` is called once it listens."""
    hub = await Hub(cfg, book).start()
    if ready is not None:
        ready(hub)
    try:
        await asyncio.Future()
    finally:
        await hub.stop()


class BackgroundHub:
    """A hub on its own event loop in a daemon thread: for tests, the bench and notebooks. `with` starts/stops."""

    def __init__(self, cfg: HubConfig, book: AgentBook):
        self.cfg, self.book = cfg, book
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="k1-bridge-hub")
        self.hub: Hub | None = None

    def __enter__(self) -> Hub:
        self.thread.start()
        self.hub = asyncio.run_coroutine_threadsafe(Hub(self.cfg, self.book).start(), self.loop).result(10)
        return self.hub

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
