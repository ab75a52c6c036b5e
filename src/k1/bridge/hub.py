"""The hub: a WebSocket server that authenticates agents, routes envelopes, logs them and redelivers until acked.

Per connection: the first frame must be `register`; then a reader loop (validate → rate-limit → resolve `to`
→ append to the exchange log → receipt → wake the recipients) and one pump task that sends the recipient's
unacked messages from the log in order. Sending from the log, not from an in-memory queue, is what makes
replay after a reconnect or a hub restart the same code path as live delivery; one stalled peer only
stalls its own pump (the websockets "one queue per recipient" pattern).

Every resource a client can make the hub hold is bounded (docs/bridge-protocol.md, *Limits*): connections
waiting to register and the frame they may send first; messages and bytes per second per agent; pending
messages and bytes per recipient; and the age of everything in the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl as ssl_lib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from k1.bridge.auth import AgentBook
from k1.bridge.protocol import (ACK, BROADCAST, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_TRY_LATER, DEFAULT_PORT,
                                HUB_NAME, HUB_TYPES, PROTOCOL_VERSION, RECEIPT, REGISTER, WELCOME, Envelope,
                                ProtocolError, check_payload, encode_text, error, frame_binary, parse_binary,
                                parse_text)
from k1.errors import ConfigError
from k1.bridge.store import ExchangeLog

log = logging.getLogger(__name__)


@dataclass
class HubConfig:
    """How the hub listens and what it tolerates. `port=0` picks a free port (tests, bench)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: Path = Path("bridge.sqlite")
    max_size: int = 1 << 20          # bytes per frame; larger → the connection closes with 1009
    rate: float = 200.0              # messages per second per agent (token bucket); 0 = unlimited
    burst: int = 400                 # bucket size
    byte_rate: float = 4 << 20       # bytes per second per agent (a second token bucket); 0 = unlimited
    byte_burst: int = 8 << 20        # its bucket size; at least max_size, so any allowed frame can pass
    max_pending: int = 10_000        # unacked messages held per recipient; beyond: `recipient_full`
    max_pending_bytes: int = 256 << 20  # unacked bytes held per recipient; beyond: `recipient_full`
    retention: float = 7 * 86400.0   # seconds a message stays in the log, acked or not; 0 = forever
    sweep_every: float = 60.0        # how often expired messages are deleted
    max_unauthenticated: int = 64    # connections open but not yet registered; beyond: HTTP 503
    register_max_size: int = 64 << 10  # largest frame before registering (the register message)
    ping_interval: float = 10.0      # heartbeats: a peer that misses a pong for ping_timeout is dropped
    ping_timeout: float = 10.0
    close_timeout: float = 2.0       # a peer that does not finish the closing handshake is cut off after this
    register_timeout: float = 5.0
    certfile: Path | None = None     # TLS when both are given
    keyfile: Path | None = None
    durable: bool = False            # SQLite synchronous=FULL (survives power loss, slower)

    def __post_init__(self):
        if self.byte_rate > 0 and self.byte_burst < self.max_size:
            raise ConfigError(f"byte_burst {self.byte_burst} is below max_size {self.max_size}: "
                              "a frame of the largest allowed size could never pass")
        for name in ("max_pending", "max_pending_bytes", "max_unauthenticated", "register_max_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.retention < 0 or self.sweep_every <= 0:
            raise ConfigError("retention must be >= 0 and sweep_every > 0")

    @property
    def public_without_tls(self) -> bool:
        """Listening beyond this machine in plain text: tokens and messages would cross the network readable."""
        if self.certfile and self.keyfile:
            return False
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True  # a host name: assume it resolves beyond loopback


@dataclass
class _TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.tokens = self.burst

    def take(self, cost: float = 1.0) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


@dataclass
class _Session:
    name: str
    ws: ServerConnection
    roles: set[str]
    bucket: _TokenBucket
    bytes_bucket: _TokenBucket
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
        # recipient → [pending messages, pending bytes], kept in step with the log's unacked deliveries
        self.pending = {r: list(t) for r, t in self.log.pending_totals().items()}
        self.unauthenticated = 0
        self.stats = {"refused_connections": 0, "oversize_first_frames": 0, "refused_bytes": 0, "expired": 0}
        self.server = None
        self.port = cfg.port
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> "Hub":
        tls = None
        if self.cfg.certfile and self.cfg.keyfile:
            tls = ssl_lib.SSLContext(ssl_lib.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.cfg.certfile, self.cfg.keyfile)
        if self.cfg.public_without_tls:
            log.warning("bridge hub on %s without TLS: tokens and messages cross the network in plain text "
                        "(give --certfile and --keyfile)", self.cfg.host)
        # until an agent has registered it may send one small frame; _register raises the limit to max_size
        self.server = await serve(self._handle, self.cfg.host, self.cfg.port,
                                  max_size=min(self.cfg.register_max_size, self.cfg.max_size),
                                  process_request=self._admit,
                                  ping_interval=self.cfg.ping_interval, ping_timeout=self.cfg.ping_timeout,
                                  close_timeout=self.cfg.close_timeout,
                                  compression=None, ssl=tls, max_queue=64)
        self.port = self.server.sockets[0].getsockname()[1]
        self._sweep()
        if self.cfg.retention > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever())
        log.info("bridge hub on %s:%d, log %s", self.cfg.host, self.port, self.cfg.db)
        return self

    async def stop(self) -> dict:
        """Close every connection, let the handlers finish (acks already received get applied), close the
        log; returns the log's final counts."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        counts = self.log.counts()
        self.log.close()
        return counts

    # --- one connection -----------------------------------------------------------------------------------
    def _admit(self, ws: ServerConnection, request):
        """Refuse the HTTP upgrade (503) while too many connections are waiting to register."""
        if self.unauthenticated >= self.cfg.max_unauthenticated:
            self.stats["refused_connections"] += 1
            return ws.respond(503, "too many connections waiting to register; retry later\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        if self.unauthenticated >= self.cfg.max_unauthenticated:  # several upgrades passed _admit at once
            self.stats["refused_connections"] += 1
            await ws.close(CLOSE_TRY_LATER, "too many connections waiting to register")
            return
        self.unauthenticated += 1
        try:
            s = await self._register(ws)
        finally:
            self.unauthenticated -= 1
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
                raise ProtocolError("auth_failed", f"agent {name} may not take roles {roles} (the agents file allows "
                                                  f"{sorted(self.book.entries[name].roles) or 'none'})")
        except (ProtocolError, asyncio.TimeoutError) as e:
            code = e.code if isinstance(e, ProtocolError) else "not_registered"
            try:
                await ws.send(encode_text(error(code, str(e) or "no register message in time")))
                await ws.close(CLOSE_POLICY, code)
            except ConnectionClosed:
                pass
            return None
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == 1009:
                self.stats["oversize_first_frames"] += 1
            return None
        _frame_limit(ws, self.cfg.max_size)  # authenticated: the full frame size applies
        old = self.online.get(name)
        if old is not None:  # the agent reconnected before the hub noticed its old connection died
            await old.ws.close(CLOSE_REPLACED, "replaced by a new connection")
        s = _Session(name, ws, set(roles), _TokenBucket(self.cfg.rate, self.cfg.burst),
                     _TokenBucket(self.cfg.byte_rate, self.cfg.byte_burst))
        self.online[name] = s
        self.roles[name] = set(roles)
        self.log.remember_agent(name, roles)
        pending = self.log.count_pending(name)
        await ws.send(encode_text(Envelope(type=WELCOME, sender=HUB_NAME, to=name, data={
            "version": PROTOCOL_VERSION, "name": name, "roles": sorted(roles), "pending": pending,
            "max_size": self.cfg.max_size, "rate": self.cfg.rate, "byte_rate": self.cfg.byte_rate,
            "max_pending": self.cfg.max_pending, "max_pending_bytes": self.cfg.max_pending_bytes,
            "retention": self.cfg.retention, "capabilities": d.get("capabilities", {})})))
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
            await self._on_envelope(s, env, payload, len(frame))
        except ProtocolError as e:
            if e.code in ("rate_limited", "recipient_full", "bad_payload"):
                self.stats["refused_bytes"] += len(frame)
            await s.ws.send(encode_text(error(e.code, str(e), reply_to=env.id)))

    async def _on_envelope(self, s: _Session, env: Envelope, payload: bytes | None, nbytes: int = 0) -> None:
        if env.type == ACK:  # acks are not counted as messages, but their bytes are
            if not s.bytes_bucket.take(nbytes):
                raise ProtocolError("rate_limited", f"over {self.cfg.byte_rate:g} bytes/s; resend later")
            d = env.data if isinstance(env.data, dict) else {}
            ids, sender = d.get("ids"), d.get("from")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not 0 < len(ids) <= 1000:
                raise ProtocolError("bad_envelope", "an ack carries data.ids: a list of 1 to 1000 message ids")
            if sender is not None and not isinstance(sender, str):
                raise ProtocolError("bad_envelope", "an ack's data.from is the sender's name (a string)")
            for r, size in ((s.name, size) for size in self.log.ack(s.name, ids, sender)):
                self._count(r, -1, -size)
            return
        if env.type in HUB_TYPES:
            raise ProtocolError("reserved_type", f"type {env.type!r} is sent by the hub only")
        if not s.bucket.take():
            raise ProtocolError("rate_limited", f"over {self.cfg.rate:g} messages/s; resend later")
        if not s.bytes_bucket.take(nbytes):
            raise ProtocolError("rate_limited", f"over {self.cfg.byte_rate:g} bytes/s; resend later")
        if payload is not None:
            check_payload(payload)
        env.sender = s.name  # the hub stamps the sender: an agent cannot speak for another
        recipients = self.resolve(env.to, s.name)
        if not recipients:
            raise ProtocolError("unknown_recipient", f"`to` {env.to!r} names no known agent or role")
        stored = False
        if not self.log.has(s.name, env.id):  # a resend of a stored message is receipted, never refused
            size = len(self.log.encode(env).encode()) + (len(payload) if payload is not None else 0)
            full = [r for r in recipients if self._over(r, size)]
            if full:
                raise ProtocolError("recipient_full", f"{', '.join(full)} already hold(s) the limit of "
                                    f"{self.cfg.max_pending} messages or {self.cfg.max_pending_bytes} bytes "
                                    "not yet acked; resend later")
            stored = self.log.append(env, recipients, payload)
            if stored:
                for r in recipients:
                    self._count(r, 1, size)
        await s.ws.send(encode_text(Envelope(type=RECEIPT, sender=HUB_NAME, to=s.name, reply_to=env.id,
                                             data={"recipients": recipients, "duplicate": not stored})))
        if stored:
            for r in recipients:
                if r in self.online:
                    self.online[r].wake.set()

    # --- budgets ------------------------------------------------------------------------------------------
    def _over(self, recipient: str, size: int) -> bool:
        n, b = self.pending.get(recipient, (0, 0))
        return n + 1 > self.cfg.max_pending or b + size > self.cfg.max_pending_bytes

    def _count(self, recipient: str, n: int, size: int) -> None:
        p = self.pending.setdefault(recipient, [0, 0])
        p[0], p[1] = max(0, p[0] + n), max(0, p[1] + size)

    def _sweep(self) -> int:
        """Delete what is older than the retention; returns how many pending deliveries that dropped."""
        if self.cfg.retention <= 0:
            return 0
        dropped = self.log.expire(time.time() - self.cfg.retention)
        for r, size in dropped:
            self._count(r, -1, -size)
        if dropped:
            self.stats["expired"] += len(dropped)
            log.info("expired %d pending deliveries older than %gs", len(dropped), self.cfg.retention)
        return len(dropped)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sweep_every)
            self._sweep()

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


def _frame_limit(ws: ServerConnection, size: int) -> None:
    """Raise a connection's frame limit after the handshake (websockets ≥ 15 names it max_message_size)."""
    if hasattr(ws.protocol, "max_message_size"):
        ws.protocol.max_message_size = size
    else:
        ws.protocol.max_size = size


async def serve_forever(cfg: HubConfig, book: AgentBook, ready=None) -> None:
    """Run a hub until cancelled; `ready(hub)` is called once it listens."""
    hub = await Hub(cfg, book).start()
    if ready is not None:
        ready(hub)
    try:
        await asyncio.Future()
    finally:
        counts = await hub.stop()
        log.info("hub stopped: %s, %s", counts, hub.stats)


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
