"""The hub: a WebSocket server that authenticates agents, routes envelopes, logs them and redelivers until acked.

Per connection: the first frame must be `register`; then a reader loop (validate → rate-limit → resolve `to`
→ hand to the backend → receipt → wake the recipients) and one pump task that sends the recipient's
unacked messages from the backend in order. Where messages live is the backend's business
(`k1.bridge.backends`: one SQLite file by default, or NATS JetStream with `backend="nats://HOST:PORT"`);
tokens, roles, rate limits and addressing stay here. One stalled peer only stalls its own pump.

Every resource a client can make the hub hold is bounded (docs/bridge-protocol.md, *Limits*): connections
waiting to register (in all and per address) and the frame they may send first; messages and bytes per
second per agent; pending messages and bytes per (sender, recipient); bytes per sender in the log; and the
age of everything in the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
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
                                ProtocolError, check_payload, encode_text, error, parse_binary,
                                parse_text)
from k1.bridge.backends.sqlite import SqliteBackend
from k1.errors import ConfigError

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
    max_pending: int = 10_000        # unacked messages held per (sender, recipient); beyond: `recipient_full`
    max_pending_bytes: int = 256 << 20  # unacked bytes held per (sender, recipient); beyond: `recipient_full`
    max_sender_bytes: int = 1 << 30  # bytes one sender may have in the log, acked or not; beyond: `sender_full`
    retention: float = 7 * 86400.0   # seconds a message stays in the log, acked or not; 0 = forever
    sweep_every: float = 60.0        # how often expired messages are deleted
    max_unauthenticated: int = 64    # connections open but not yet registered; beyond: HTTP 503
    max_unauthenticated_per_address: int = 8  # the same, from one client address
    register_max_size: int = 64 << 10  # largest frame before registering (the register message)
    ping_interval: float = 10.0      # heartbeats: a peer that misses a pong for ping_timeout is dropped
    ping_timeout: float = 10.0
    close_timeout: float = 2.0       # a peer that does not finish the closing handshake is cut off after this
    register_timeout: float = 2.0
    certfile: Path | None = None     # TLS when both are given
    keyfile: Path | None = None
    durable: bool = False            # SQLite synchronous=FULL (survives power loss, slower)
    # Where messages live: "sqlite" (the file `db`, one hub process) or "nats://HOST:PORT" (a JetStream stream
    # that several hub processes share; k1.bridge.backends.jetstream). The fields below apply to JetStream only.
    backend: str = "sqlite"
    stream: str = "K1_BRIDGE"        # the stream's name (also the prefix of its subjects, dead letters, roles)
    ack_wait: float = 30.0           # seconds a delivered message may stay unacked before the server redelivers it
    max_deliver: int = 10            # deliveries without an ack before a message is dead-lettered
    redeliver_backoff: tuple[float, ...] = ()  # delays of successive redeliveries (replaces ack_wait when given)
    max_ack_pending: int = 1000      # messages delivered and not yet acked, per recipient
    dedupe_window: float = 600.0     # seconds in which a resent (sender, id) is dropped (at most the retention)
    stream_max_bytes: int = 1 << 30  # the stream's size; beyond: `recipient_full`
    replicas: int = 1                # copies of the stream in a NATS cluster
    pull_batch: int = 64             # messages a hub asks for at once, per connected recipient
    pull_wait: float = 5.0           # seconds a pull request waits at the server for messages

    def __post_init__(self):
        if self.byte_rate > 0 and self.byte_burst < self.max_size:
            raise ConfigError(f"byte_burst {self.byte_burst} is below max_size {self.max_size}: "
                              "a frame of the largest allowed size could never pass")
        for name in ("max_pending", "max_pending_bytes", "max_sender_bytes", "max_unauthenticated",
                     "max_unauthenticated_per_address", "register_max_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.retention < 0 or self.sweep_every <= 0:
            raise ConfigError("retention must be >= 0 and sweep_every > 0")
        if self.backend != "sqlite" and not self.backend.startswith(("nats://", "tls://")):
            raise ConfigError(f"backend {self.backend!r}: give sqlite or nats://HOST:PORT")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.stream):
            raise ConfigError(f"stream {self.stream!r}: letters, digits, _ and - only (at most 64)")
        if self.redeliver_backoff and self.max_deliver <= len(self.redeliver_backoff):
            raise ConfigError("max_deliver must exceed the number of redeliver_backoff delays")
        if self.ack_wait <= 0 or self.max_deliver < 1 or self.pull_batch < 1 or self.pull_wait <= 0:
            raise ConfigError("ack_wait and pull_wait must be > 0, max_deliver and pull_batch at least 1")

    @property
    def jetstream(self) -> bool:
        return self.backend != "sqlite"

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
    delivery: object = None         # the backend's Delivery for this connection
    pump: asyncio.Task | None = None


class Hub:
    """Route, log, redeliver. Start with `await hub.start()`; `hub.port` is the bound port."""

    def __init__(self, cfg: HubConfig, book: AgentBook):
        self.cfg, self.book = cfg, book
        if cfg.jetstream:
            from k1.bridge.backends.jetstream import JetStreamBackend  # nats-py: the `bridge` extra

            self.backend = JetStreamBackend(cfg)
        else:
            self.backend = SqliteBackend(cfg)
        self.online: dict[str, _Session] = {}
        self.unauthenticated = 0
        self.waiting_from: dict[str, int] = {}  # client address → connections from it not yet registered
        self.stats = {"refused_connections": 0, "oversize_first_frames": 0, "refused_bytes": 0}
        self.server = None
        self.port = cfg.port

    async def start(self) -> "Hub":
        tls = None
        if self.cfg.certfile and self.cfg.keyfile:
            tls = ssl_lib.SSLContext(ssl_lib.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.cfg.certfile, self.cfg.keyfile)
        if self.cfg.public_without_tls:
            log.warning("bridge hub on %s without TLS: tokens and messages cross the network in plain text "
                        "(give --certfile and --keyfile)", self.cfg.host)
        await self.backend.start()
        # until an agent has registered it may send one small frame; _register raises the limit to max_size
        self.server = await serve(self._handle, self.cfg.host, self.cfg.port,
                                  max_size=min(self.cfg.register_max_size, self.cfg.max_size),
                                  process_request=self._admit,
                                  ping_interval=self.cfg.ping_interval, ping_timeout=self.cfg.ping_timeout,
                                  close_timeout=self.cfg.close_timeout,
                                  compression=None, ssl=tls, max_queue=64)
        self.port = self.server.sockets[0].getsockname()[1]
        self.loop = asyncio.get_running_loop()
        log.info("bridge hub on %s:%d, store %s", self.cfg.host, self.port,
                 f"{self.cfg.backend} stream {self.cfg.stream}" if self.cfg.jetstream else self.cfg.db)
        return self

    async def stop(self) -> dict:
        """Close every connection, let the handlers finish (acks already received get applied), close the
        backend; returns its final counts."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        return await self.backend.stop()

    async def counts(self) -> dict:
        """{"messages", "pending_deliveries"} as the backend holds them now."""
        return await self.backend.counts()

    @property
    def roles(self) -> dict[str, set[str]]:
        """name → the roles that route to it now: those it declared at its last registration (else those its
        agents-file entry allows), only while the agents file still lists the agent and allows the role."""
        out = {}
        for name, entry in self.book.entries.items():
            declared = self.backend.declared.get(name, entry.roles)
            out[name] = {r for r in declared if entry.any_role or r in entry.roles}
        return out

    # --- one connection -----------------------------------------------------------------------------------
    def _crowded(self, ws: ServerConnection) -> str | None:
        """Why a new connection may not wait to register now (all slots, or its address's share, taken)."""
        if self.unauthenticated >= self.cfg.max_unauthenticated:
            return "too many connections waiting to register"
        if self.waiting_from.get(_address(ws), 0) >= self.cfg.max_unauthenticated_per_address:
            return "too many connections from this address waiting to register"
        return None

    def _admit(self, ws: ServerConnection, request):
        """Refuse the HTTP upgrade (503) while too many connections, in all or from this address, are waiting to
        register: one address cycling anonymous sockets cannot hold every slot."""
        why = self._crowded(ws)
        if why is not None:
            self.stats["refused_connections"] += 1
            return ws.respond(503, f"{why}; retry later\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        why = self._crowded(ws)
        if why is not None:  # several upgrades passed _admit at once
            self.stats["refused_connections"] += 1
            await ws.close(CLOSE_TRY_LATER, why)
            return
        addr = _address(ws)
        self.unauthenticated += 1
        self.waiting_from[addr] = self.waiting_from.get(addr, 0) + 1
        try:
            s = await self._register(ws)
        finally:
            self.unauthenticated -= 1
            self.waiting_from[addr] -= 1
            if not self.waiting_from[addr]:
                del self.waiting_from[addr]
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
                await asyncio.gather(s.pump, return_exceptions=True)  # before the backend may close
            await s.delivery.close()
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
        try:
            await self.backend.remember_agent(name, roles)
            pending = await self.backend.pending(name)
            await ws.send(encode_text(Envelope(type=WELCOME, sender=HUB_NAME, to=name, data={
                "version": PROTOCOL_VERSION, "name": name, "roles": sorted(roles), "pending": pending,
                "max_size": self.cfg.max_size, "rate": self.cfg.rate, "byte_rate": self.cfg.byte_rate,
                "max_pending": self.cfg.max_pending, "max_pending_bytes": self.cfg.max_pending_bytes,
                "max_sender_bytes": self.cfg.max_sender_bytes, "retention": self.cfg.retention,
                "capabilities": d.get("capabilities", {})})))
        except ConnectionClosed:  # replaced by a newer connection of the same agent while registering
            if self.online.get(name) is s:
                del self.online[name]
            return None
        s.delivery = self.backend.open(name)
        s.pump = asyncio.create_task(self._pump(s))
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
            if e.code in ("rate_limited", "recipient_full", "sender_full", "bad_payload"):
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
            await s.delivery.ack(ids, sender)
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
        stored = await self.backend.store(env, recipients, payload)
        await s.ws.send(encode_text(Envelope(type=RECEIPT, sender=HUB_NAME, to=s.name, reply_to=env.id,
                                             data={"recipients": recipients, "duplicate": not stored})))
        if stored:
            self.backend.wake(recipients)

    def resolve(self, to: str, sender: str) -> list[str]:
        """`to` → recipient names: an agent name (known to the agents file, online or not), else "*" for every
        known agent, else a role (see `roles`); the sender never receives its own role or broadcast messages."""
        if to in self.book.entries:
            return [to]
        names = self.book.entries.keys() if to == BROADCAST else [n for n, r in self.roles.items() if to in r]
        return sorted(n for n in names if n != sender)

    async def _pump(self, s: _Session) -> None:
        try:
            await s.delivery.run(s.ws.send)
        except ConnectionClosed:
            pass
        except Exception:  # a store that failed under one connection: drop it, the hub carries on
            log.exception("delivery to %s failed; closing its connection", s.name)
            await s.ws.close(1011, "delivery failed")


def _address(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError):
        return "?"


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
