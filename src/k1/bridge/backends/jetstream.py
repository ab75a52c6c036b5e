"""The JetStream backend: the hub's messages live in a NATS JetStream stream, so several hub processes (on
several machines) share them, and storage, fan-out, redelivery, de-duplication and retention are the
broker's work. The WebSocket protocol and its clients do not change; tokens, roles, rate limits and
addressing stay in the hub.

Layout (STREAM is `HubConfig.stream`, default K1_BRIDGE; names are hex-encoded into subject tokens):
- stream STREAM, subjects `STREAM.to.<recipient>.<sender>`, work-queue retention: a message is stored
  once per recipient and deleted when that recipient acks it. `max_msgs_per_subject` = `max_pending` with
  discard-new per subject is the budget per (sender, recipient), enforced by the server for every hub
  process at once; `max_age` = `retention`, `max_bytes` = `stream_max_bytes`. Each copy carries
  `Nats-Msg-Id` = sha256(sender, id, recipient), so a resend within `dedupe_window` is dropped by the server
  (`duplicate: true` in the receipt), whichever hub process it reaches.
- one durable pull consumer per recipient (`r<hex name>`), explicit acks, `ack_wait`, `max_deliver`,
  `redeliver_backoff`. The hub pulls only while the recipient is connected to it, and acks a message only
  when the recipient's client acks it (after its application finished). On disconnect the hub naks what
  the recipient held, so it comes back at once on the next connection; if the hub process dies, the server
  redelivers after `ack_wait`.
- stream STREAM_DEAD keeps the server's max-deliveries advisories: a message delivered `max_deliver`
  times without an ack is not delivered again, and its advisory (stream sequence, consumer) is kept there
  for `retention`; `dead_letters()` lists them with their messages.
- key-value bucket STREAM_roles: the roles each agent declared at its last registration, shared by all hub
  processes (each watches it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from urllib.parse import urlparse

import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, BucketNotFoundError, NotFoundError

from k1.bridge.protocol import Envelope, ProtocolError, encode_text, frame_binary
from k1.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

FULL_CODES = {10077, 10047, 10028}  # max messages per subject, max bytes, max messages: the budget is spent
HEADROOM = 64 << 10  # a stored frame is the client's frame plus the stamped sender; NATS must carry it


def _quiet(what: str):
    """nats-py prints a traceback per connection error by default; one log line is enough."""
    async def cb(e=None):
        log.warning("NATS %s%s", what, f": {e}" if e else "")
    return cb


def tok(name: str) -> str:
    """Any agent name → a safe subject token / consumer name (subjects forbid `.`, `*`, `>`, spaces)."""
    return name.encode().hex() or "00"


def untok(t: str) -> str:
    return bytes.fromhex(t).decode()


class JetStreamBackend:
    """Messages in a JetStream stream on the NATS server at `cfg.backend` (nats://HOST:PORT)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.stream = cfg.stream
        self.dead_stream = f"{cfg.stream}_DEAD"
        self.declared: dict[str, set[str]] = {}
        self.nc = self.js = self.kv = None
        self._watcher = None
        self._watch_task: asyncio.Task | None = None
        self._consumers: set[str] = set()
        self.stats = {"naked": 0, "store_errors": 0}

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self, manage: bool = True) -> None:
        """Connect; with `manage`, create or update the streams and the roles bucket and watch the roles (a hub);
        without, only read (`k1 bridge dead`)."""
        cfg = self.cfg
        # nats-py retries a first connection as long as later ones: probe once, so a wrong URL is one line
        u = urlparse(cfg.backend)
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(u.hostname or "127.0.0.1", u.port or 4222), 5)
            w.close()
            self.nc = await asyncio.wait_for(nats.connect(
                cfg.backend, name="k1-bridge", connect_timeout=3, reconnect_time_wait=0.5, max_reconnect_attempts=-1,
                allow_reconnect=True, error_cb=_quiet("error"), disconnected_cb=_quiet("disconnected"),
                reconnected_cb=_quiet("reconnected")), 15)
        except Exception as e:  # noqa: BLE001  nats-py raises several kinds here; the operator needs one line
            raise BridgeError(f"cannot reach NATS at {cfg.backend}: {e or type(e).__name__}") from None
        if self.nc.max_payload < cfg.max_size + HEADROOM:
            await self.nc.close()
            raise ConfigError(f"NATS at {cfg.backend} carries at most {self.nc.max_payload} bytes per message, below "
                              f"the bridge's max_size {cfg.max_size} + {HEADROOM}: raise max_payload in the NATS "
                              "server's configuration or lower --max-size")
        self.js = self.nc.jetstream(timeout=5)
        if not manage:
            return
        retention = max(0, cfg.retention)  # 0: no age limit
        window = min(cfg.dedupe_window, cfg.retention) if cfg.retention > 0 else cfg.dedupe_window
        await self._ensure_stream(StreamConfig(
            name=self.stream, subjects=[f"{self.stream}.to.>"], retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW, discard_new_per_subject=True, max_msgs_per_subject=cfg.max_pending,
            max_age=retention, max_bytes=cfg.stream_max_bytes, duplicate_window=window, storage=StorageType.FILE,
            num_replicas=cfg.replicas))
        await self._ensure_stream(StreamConfig(
            name=self.dead_stream, subjects=[f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.>"],
            max_age=retention, storage=StorageType.FILE, num_replicas=cfg.replicas))
        bucket = f"{self.stream}_roles"
        try:
            self.kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            self.kv = await self.js.create_key_value(KeyValueConfig(bucket=bucket, history=1,
                                                                    replicas=cfg.replicas))
        self._watcher = await self.kv.watchall()
        while (entry := await self._watcher.updates(timeout=10)) is not None:  # None: the initial values are in
            self._on_roles(entry)
        self._watch_task = asyncio.create_task(self._watch())

    async def _ensure_stream(self, sc: StreamConfig) -> None:
        try:
            await self.js.add_stream(sc)
        except BadRequestError:  # exists with another configuration: bring it to ours where the server allows
            try:
                await self.js.update_stream(sc)
            except APIError as e:
                raise ConfigError(f"JetStream stream {sc.name} exists with a configuration the bridge cannot "
                                  f"change ({e.description}); use another --stream or delete it") from None

    def _on_roles(self, entry) -> None:
        try:
            name = untok(entry.key)
        except ValueError:
            return
        if entry.value:
            self.declared[name] = set(json.loads(entry.value))
        else:
            self.declared.pop(name, None)

    async def _watch(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                self._on_roles(entry)

    async def stop(self) -> dict:
        counts = {}
        try:
            counts = await self.counts()
        except (TimeoutError, NatsError):
            pass
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except NatsError:
                pass
        await self.nc.close()
        return counts

    # --- agents and messages ------------------------------------------------------------------------------
    async def remember_agent(self, name: str, roles: list[str]) -> None:
        self.declared[name] = set(roles)
        try:
            await self.kv.put(tok(name), json.dumps(sorted(roles)).encode())
        except NatsError as e:  # routing by role falls back to this process's memory until NATS is back
            log.warning("could not record the roles of %s in NATS: %s", name, e)

    async def store(self, env: Envelope, recipients: list[str], payload: bytes | None) -> bool:
        text = encode_text(env)
        data = text.encode() if payload is None else frame_binary(text.encode(), payload)
        headers = {"K1-From": tok(env.sender), "K1-Id": env.id.encode().hex(),
                   "K1-Kind": "text" if payload is None else "binary"}

        async def one(r: str):
            mid = hashlib.sha256(json.dumps([env.sender, env.id, r]).encode()).hexdigest()
            try:
                ack = await self.js.publish(f"{self.stream}.to.{tok(r)}.{tok(env.sender)}", data,
                                            headers={**headers, "Nats-Msg-Id": mid})
                return bool(ack.duplicate)
            except APIError as e:
                if e.err_code in FULL_CODES:
                    return r
                raise
        try:
            if not self.nc.is_connected:  # do not queue it in nats-py's reconnect buffer: say so now
                raise NatsError("not connected")
            results = await asyncio.gather(*(one(r) for r in recipients))
        except (TimeoutError, NatsError) as e:
            self.stats["store_errors"] += 1
            raise ProtocolError("unavailable", f"the bridge's store (NATS) did not take the message: "
                                f"{e or type(e).__name__}; resend later") from None
        full = [r for r in results if isinstance(r, str)]
        if full:  # the others were stored; a resend stores only these (the server drops the repeats)
            raise ProtocolError("recipient_full", f"{', '.join(full)} already hold(s) the limit of "
                                f"{self.cfg.max_pending} messages from {env.sender} not yet acked (or the stream is "
                                "full); resend later")
        return not all(results)

    def wake(self, recipients: list[str]) -> None:
        pass  # a connected recipient's pull request is answered by the server as soon as a message lands

    async def consumer(self, name: str) -> str:
        """The recipient's durable pull consumer (created on first use, by whichever hub process needs it)."""
        cname = f"r{tok(name)}"[:250]
        if cname not in self._consumers:
            cfg = self.cfg
            await self.js.add_consumer(self.stream, ConsumerConfig(
                durable_name=cname, filter_subject=f"{self.stream}.to.{tok(name)}.>", ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL, ack_wait=cfg.ack_wait, max_deliver=cfg.max_deliver,
                backoff=list(cfg.redeliver_backoff) or None, max_ack_pending=cfg.max_ack_pending))
            self._consumers.add(cname)
        return cname

    def open(self, name: str) -> _Delivery:
        return _Delivery(self, name)

    async def pending(self, name: str) -> int:
        try:
            info = await self.js.consumer_info(self.stream, await self.consumer(name))
        except NatsError:
            return 0
        return info.num_pending + info.num_ack_pending

    async def counts(self) -> dict:
        """messages: what the stream holds; pending_deliveries: what the consumers have not seen acked (pending or
        delivered and unacked)."""
        n = (await self.js.stream_info(self.stream)).state.messages
        pending, offset = 0, 0
        while infos := await self.js.consumers_info(self.stream, offset=offset):
            pending += sum(ci.num_pending + ci.num_ack_pending for ci in infos)
            offset += len(infos)
        return {"messages": n, "pending_deliveries": pending}

    async def dead_letters(self, limit: int = 100) -> list[dict]:
        """Messages delivered `max_deliver` times without an ack: recipient, deliveries, and the envelope while
        the stream still holds it."""
        out = []
        try:
            n = (await self.js.stream_info(self.dead_stream)).state.last_seq
        except NotFoundError:
            return out
        for seq in range(max(1, n - limit + 1), n + 1):
            try:
                adv = json.loads((await self.js.get_msg(self.dead_stream, seq)).data)
            except NotFoundError:
                continue
            row = {"recipient": untok(adv["consumer"][1:]), "stream_seq": adv["stream_seq"],
                   "deliveries": adv["deliveries"], "envelope": None}
            try:
                m = await self.js.get_msg(self.stream, adv["stream_seq"])
                row["envelope"] = json.loads(_header_of(m.data, m.headers))
            except (NotFoundError, ValueError):
                pass
            out.append(row)
        return out


def _header_of(data: bytes, headers: dict | None) -> bytes:
    """The JSON envelope of a stored frame (a binary frame carries it after a 4-byte length)."""
    if (headers or {}).get("K1-Kind") == "binary":
        n = int.from_bytes(data[:4], "big")
        return data[4:4 + n]
    return data


class _Delivery:
    """One connection's pull loop on the recipient's consumer: pull requests published to
    `$JS.API.CONSUMER.MSG.NEXT`, answered on a private inbox this connection owns and withdraws at close."""

    def __init__(self, backend: JetStreamBackend, name: str):
        self.b, self.name = backend, name
        self.inhand: dict[tuple[str, str], object] = {}  # (sender, id) → the NATS message sent to the client
        self.sub = None

    async def run(self, send) -> None:
        b = self.b
        batch, poll = b.cfg.pull_batch, b.cfg.pull_wait
        while True:
            try:
                if self.sub is None:
                    cname = await b.consumer(self.name)
                    self.inbox = b.nc.new_inbox()
                    self.sub = await b.nc.subscribe(self.inbox)
                    subject = f"$JS.API.CONSUMER.MSG.NEXT.{b.stream}.{cname}"
                expires_at = time.monotonic() + poll
                await b.nc.publish(subject, json.dumps({"batch": batch, "expires": int(poll * 1e9)}).encode(),
                                   reply=self.inbox)
                got = 0
                while got < batch:
                    try:
                        m = await self.sub.next_msg(timeout=max(0.05, expires_at - time.monotonic() + 1.0))
                    except NatsTimeout:
                        break
                    status = (m.headers or {}).get("Status")
                    if status is not None or not m.reply:
                        if status == "100":  # idle heartbeat
                            continue
                        break  # 404/408/409: this pull request is over
                    got += 1
                    h = m.headers or {}
                    key = (untok(h.get("K1-From", "")), bytes.fromhex(h.get("K1-Id", "")).decode())
                    self.inhand[key] = m  # a redelivery replaces the older copy: ack the newest
                    await send(m.data if h.get("K1-Kind") == "binary" else m.data.decode())
            except (TimeoutError, NatsError, APIError) as e:
                log.warning("delivery to %s: NATS: %s; retrying", self.name, e or type(e).__name__)
                await _nak(self.b, await self._drop_sub())
                await asyncio.sleep(0.5)

    async def ack(self, ids: list[str], sender: str | None) -> None:
        wanted = set(ids)
        keys = [k for k in self.inhand if k[1] in wanted and (sender is None or k[0] == sender)]
        for k in keys:
            m = self.inhand.pop(k)
            try:
                await m.ack()
            except NatsError:  # lost: the server redelivers after ack_wait and the client acks the repeat
                pass

    async def close(self) -> None:
        """Withdraw this connection's pull request, then nak what the recipient held and what had reached this
        hub but not the recipient, oldest first, so it comes back on the next connection at once and in order.
        (NATS handles a connection's commands in order and drops a pull request nobody listens to, so the
        naked messages cannot go to this dead request; a message still on the wire from the server when the
        request is withdrawn comes back after ack_wait.)"""
        stragglers = await self._drop_sub()
        held, self.inhand = list(self.inhand.values()), {}
        await _nak(self.b, sorted(held + stragglers, key=_seq))

    async def _drop_sub(self) -> list:
        sub, self.sub = self.sub, None
        if sub is None:
            return []
        arrived = []
        while True:  # messages already received for this connection and not yet sent on
            try:
                m = await sub.next_msg(timeout=0.001)
            except (NatsTimeout, NatsError):
                break
            if m.reply and (m.headers or {}).get("Status") is None:
                arrived.append(m)
        try:
            await sub.unsubscribe()
        except NatsError:
            pass
        return arrived


def _seq(m) -> int:
    try:
        return m.metadata.sequence.stream
    except Exception:  # noqa: BLE001  not a JetStream delivery: last
        return 1 << 62


async def _nak(b: JetStreamBackend, msgs) -> None:
    for m in msgs:
        try:
            await m.nak()
            b.stats["naked"] += 1
        except NatsError:
            pass
