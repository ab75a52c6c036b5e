"""BridgeClient: one agent's connection to the hub, with reconnect, receipts, acks, request/reply and tensors.

Sending: `send()` returns once the hub has logged the message (its receipt); messages not yet receipted are
resent after a reconnect (the hub drops repeats by sender and id), and a message the hub refused for a
limit (`rate_limited`, `recipient_full`) is resent with backoff until the receipt deadline.
Receiving (at least once, exactly once to the application): `recv()` hands over each message once (the
`Inbox` drops redeliveries of what is in hand or processed) and acks the previous one, because asking for
the next message means the last was processed; `ack(msg)` does it explicitly, `release(msg)` says
processing failed (the message is handed out again, never acked). Leaving `async with` on an exception,
or calling `close()`, acks nothing. A tensor frame whose payload is not safetensors is never handed over
and never acked. `SyncBridgeClient` wraps all of it for plain scripts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from k1.bridge.inbox import Inbox
from k1.bridge.protocol import (ACK, ERROR, PROTOCOL_VERSION, RECEIPT, REGISTER, WELCOME, Envelope, ProtocolError,
                                check_payload, encode_binary, encode_text, parse_binary, parse_text,
                                tensors_from_bytes, tensors_to_bytes)
from k1.errors import BridgeError

log = logging.getLogger(__name__)


@dataclass
class Message:
    """A received envelope, plus the safetensors payload of a tensor frame."""

    envelope: Envelope
    payload: bytes | None = None

    @property
    def id(self) -> str: return self.envelope.id
    @property
    def type(self) -> str: return self.envelope.type
    @property
    def sender(self) -> str: return self.envelope.sender
    @property
    def data(self) -> Any: return self.envelope.data
    @property
    def reply_to(self) -> str | None: return self.envelope.reply_to

    @property
    def key(self) -> tuple[str, str]: return self.envelope.sender, self.envelope.id

    def tensors(self) -> dict:
        if self.payload is None:
            raise BridgeError(f"message {self.id} carries no tensors")
        try:
            return tensors_from_bytes(self.payload)
        except Exception as e:  # noqa: BLE001  whatever the bytes make the loader raise, the caller gets one error
            raise BridgeError(f"message {self.id} from {self.sender}: cannot load its tensors: {e}") from None


LIMITS = ("rate_limited", "recipient_full", "unavailable")  # refusals that mean "later", not "never"


class HubRefused(BridgeError):
    """The hub answered the handshake with an error (auth, version): reconnecting would not help."""


class BridgeClient:
    """An agent on the bridge. `async with BridgeClient(url, name, token, roles=[...]) as c: ...`"""

    def __init__(self, url: str, name: str, token: str, *, roles: list[str] | tuple = (), capabilities: dict | None = None,
                 inbox: str | Path | None = None, receipt_timeout: float = 10.0, backoff: tuple[float, float] = (0.05, 2.0),
                 ssl=None, retry_limited: bool = True):
        self.url, self.name, self.token = url, name, token
        self.roles, self.capabilities = list(roles), capabilities or {}
        self.inbox = Inbox(inbox)
        self.durable = inbox is not None
        self.receipt_timeout, self.backoff, self.ssl = receipt_timeout, backoff, ssl
        self.retry_limited = retry_limited  # resend what the hub refused for a limit, with backoff
        self.welcome: dict = {}
        self.stats = {"connects": 0, "duplicates_dropped": 0, "resent": 0, "limited": 0, "released": 0,
                      "bad_payloads": 0}
        self._ws = None
        self._connected = asyncio.Event()
        self._closing = False
        self._failure: BaseException | None = None
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: dict[str, tuple[str | bytes, asyncio.Future]] = {}  # id → (frame, receipt future)
        self._waiting: dict[str, asyncio.Future] = {}                     # request id → reply future
        self._unacked: dict[tuple[str, str], Message] = {}  # (sender, id) → in hand: queued or being processed
        self._last: Message | None = None                   # returned by recv() and not yet acked or released
        self._task: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> "BridgeClient":
        self._task = asyncio.create_task(self._run())
        done, _ = await asyncio.wait([self._task, asyncio.create_task(self._connected.wait())], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._failure is not None:
            raise self._failure
        if not self._connected.is_set():
            self._task.cancel()
            raise BridgeError(f"could not reach the hub at {self.url} within {timeout:g}s")
        return self

    async def close(self, ack_last: bool = False) -> None:
        """Disconnect. The message last returned by recv() is acked only with `ack_last` (leaving `async with`
        without an exception passes it): a consumer that failed must not ack what it did not finish."""
        if ack_last and self._last is not None:
            await self.ack(self._last)
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.inbox.close()

    async def __aenter__(self) -> "BridgeClient":
        return await self.connect()

    async def __aexit__(self, exc_type, *exc) -> None:
        await self.close(ack_last=exc_type is None)

    async def _run(self) -> None:
        """Connect, register, read until the connection drops; repeat with exponential backoff and jitter."""
        delay = self.backoff[0]
        while not self._closing:
            try:
                async with connect(self.url, max_size=None, compression=None, ssl=self.ssl, open_timeout=5) as ws:
                    await self._register(ws)
                    delay = self.backoff[0]
                    await self._read(ws)
            except HubRefused as e:
                self._failure = e
                return
            except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError) as e:
                log.info("%s: connection lost (%s); retrying in %.2fs", self.name, e, delay)
            finally:
                self._ws = None
                self._connected.clear()
            if self._closing:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff[1])

    async def _register(self, ws) -> None:
        await ws.send(encode_text(Envelope(type=REGISTER, sender=self.name, data={
            "name": self.name, "token": self.token, "roles": self.roles, "capabilities": self.capabilities,
            "version": PROTOCOL_VERSION})))
        reply = parse_text(await asyncio.wait_for(ws.recv(), 10))
        if reply.type == ERROR:
            raise HubRefused(f"hub refused {self.name}: {reply.data.get('code')}: {reply.data.get('message')}")
        if reply.type != WELCOME:
            raise BridgeError(f"expected welcome, got {reply.type}")
        self.welcome = reply.data
        self._ws = ws
        self.stats["connects"] += 1
        for frame, _ in list(self._outbox.values()):  # not receipted before the drop: the hub dedups by id
            await ws.send(frame)
            self.stats["resent"] += 1
        self._connected.set()

    async def _read(self, ws) -> None:
        async for frame in ws:
            try:
                env, payload = parse_binary(frame) if isinstance(frame, bytes) else (parse_text(frame), None)
            except ProtocolError as e:
                log.warning("%s: dropped a bad frame from the hub: %s", self.name, e)
                continue
            if env.type == RECEIPT:
                entry = self._outbox.pop(env.reply_to, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(env.data)
            elif env.type == ERROR:
                self._on_error(env)
            else:
                await self._on_message(Message(env, payload))

    def _on_error(self, env: Envelope) -> None:
        exc = BridgeError(f"{env.data.get('code')}: {env.data.get('message')}")
        exc.code = env.data.get("code")
        entry = self._outbox.pop(env.reply_to, None) if env.reply_to else None
        if entry is not None and not entry[1].done():
            entry[1].set_exception(exc)
        else:
            log.warning("%s: hub error %s", self.name, exc)

    async def _on_message(self, msg: Message) -> None:
        if msg.payload is not None:
            try:
                check_payload(msg.payload)
            except ProtocolError as e:  # never handed over, never acked: it stays in the hub's log
                self.stats["bad_payloads"] += 1
                log.warning("%s: message %s from %s not taken: %s", self.name, msg.id, msg.sender, e)
                return
        wire = msg.envelope.wire()
        if self.durable:
            if not self.inbox.take(wire, msg.payload):
                self.stats["duplicates_dropped"] += 1
                await self._send_ack([msg.id], msg.sender)  # processed before: our earlier ack was lost
                return
            await self._send_ack([msg.id], msg.sender)  # committed to the inbox = processed, for the hub
        elif msg.key in self._unacked:  # in hand already (a redelivery after a reconnect): not done, no ack
            self.stats["duplicates_dropped"] += 1
            return
        elif self.inbox.seen(wire):  # processed and acked before; that ack was lost with the connection
            self.stats["duplicates_dropped"] += 1
            await self._send_ack([msg.id], msg.sender)
            return
        else:
            self._unacked[msg.key] = msg
        waiter = self._waiting.pop(msg.reply_to, None) if msg.reply_to else None
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)
            await self.ack(msg)
        else:
            self._queue.put_nowait(msg)

    async def _send_ack(self, ids: list[str], sender: str) -> None:
        if self._ws is None:
            return  # lost with the connection; the hub will redeliver and we ack the duplicate
        try:
            await self._ws.send(encode_text(Envelope(type=ACK, sender=self.name, data={"ids": ids, "from": sender})))
        except ConnectionClosed:
            pass

    # --- sending ------------------------------------------------------------------------------------------
    async def _submit(self, env: Envelope, payload: bytes | None = None) -> dict:
        frame = encode_text(env) if payload is None else encode_binary(env, payload)
        limit = self.welcome.get("max_size")
        if limit and len(frame) > limit:
            raise BridgeError(f"message of {len(frame)} bytes exceeds the hub's max_size {limit}")
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.receipt_timeout, self.backoff[0]
        while True:
            fut = loop.create_future()
            self._outbox[env.id] = (frame, fut)
            if self._ws is not None:
                try:
                    await self._ws.send(frame)
                except ConnectionClosed:
                    pass  # resent on reconnect
            try:
                return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self._outbox.pop(env.id, None)
                raise BridgeError(f"no receipt from the hub for {env.id} within {self.receipt_timeout:g}s") from None
            except BridgeError as e:  # refused; for a limit, wait and resend while the deadline allows
                if not self.retry_limited or getattr(e, "code", None) not in LIMITS or \
                        loop.time() + delay > deadline:
                    raise
                self.stats["limited"] += 1
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff[1])

    async def send(self, to: str, data: Any = None, *, type: str = "message", reply_to: str | None = None,
                   id: str | None = None) -> str:
        """Send and wait for the hub's receipt (the message is logged); returns the message id."""
        env = Envelope(type=type, sender=self.name, to=to, data=data, reply_to=reply_to, **({"id": id} if id else {}))
        await self._submit(env)
        return env.id

    async def send_tensors(self, to: str, tensors: dict, meta: Any = None, *, type: str = "tensor") -> str:
        """Tensors as a binary frame: JSON header + safetensors payload."""
        env = Envelope(type=type, sender=self.name, to=to, data=meta)
        await self._submit(env, tensors_to_bytes(tensors))
        return env.id

    async def request(self, to: str, data: Any = None, *, type: str = "request", timeout: float = 30.0) -> Message:
        """Send and wait for the message whose reply_to is this one's id."""
        env = Envelope(type=type, sender=self.name, to=to, data=data)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[env.id] = fut
        try:
            await self._submit(env)
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise BridgeError(f"no reply from {to!r} to {env.id} within {timeout:g}s") from None
        finally:
            self._waiting.pop(env.id, None)

    async def reply(self, msg: Message, data: Any = None, *, type: str = "reply") -> str:
        return await self.send(msg.sender, data, type=type, reply_to=msg.id)

    # --- receiving ----------------------------------------------------------------------------------------
    async def recv(self, timeout: float | None = None) -> Message:
        """The next message, each exactly once; acks the previously returned one (it has been processed)."""
        if self._last is not None:
            await self.ack(self._last)
            self._last = None
        try:
            msg = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise BridgeError(f"{self.name}: no message within {timeout:g}s") from None
        self._last = msg
        return msg

    async def ack(self, msg: Message) -> None:
        """`msg` was processed: the hub will not send it again, and a redelivery is dropped here."""
        if self._last is msg:
            self._last = None
        if self._unacked.pop(msg.key, None) is not None:
            self.inbox.done(msg.envelope.wire())
            await self._send_ack([msg.id], msg.sender)

    async def release(self, msg: Message, redeliver: bool = True) -> None:
        """Processing `msg` failed: it is not acked. With `redeliver`, recv() hands it out again (after the
        messages already waiting); without, it comes back from the hub on the next connection. Either way a
        process that dies now gets it again from the hub. (A durable inbox has acked on commit: no-op there.)"""
        if self._last is msg:
            self._last = None
        if self.durable or msg.key not in self._unacked:
            return
        self.stats["released"] += 1
        if redeliver:
            self._queue.put_nowait(msg)
        else:
            del self._unacked[msg.key]


class SyncBridgeClient:
    """The same client for synchronous code: its event loop runs in a daemon thread."""

    def __init__(self, *args, **kwargs):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="k1-bridge-client")
        self._thread.start()
        self.client: BridgeClient = self._call(self._make(args, kwargs))
        self._call(self.client.connect())

    async def _make(self, args, kwargs) -> BridgeClient:
        return BridgeClient(*args, **kwargs)  # built inside the loop: its asyncio objects belong there

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def send(self, to, data=None, **kw) -> str: return self._call(self.client.send(to, data, **kw))
    def send_tensors(self, to, tensors, meta=None, **kw) -> str: return self._call(self.client.send_tensors(to, tensors, meta, **kw))
    def request(self, to, data=None, **kw) -> Message: return self._call(self.client.request(to, data, **kw))
    def reply(self, msg, data=None, **kw) -> str: return self._call(self.client.reply(msg, data, **kw))
    def recv(self, timeout=None) -> Message: return self._call(self.client.recv(timeout))
    def ack(self, msg) -> None: self._call(self.client.ack(msg))
    def release(self, msg, redeliver=True) -> None: self._call(self.client.release(msg, redeliver))

    def close(self, ack_last: bool = False) -> None:
        try:
            self._call(self.client.close(ack_last), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self): return self
    def __exit__(self, exc_type, *exc): self.close(ack_last=exc_type is None)
