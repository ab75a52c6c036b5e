"""Running the app on uvicorn, hardened against clients that hold connections rather than send requests.

- Header timeout: a connection has `header_timeout_s` to send a whole request head — after it connects, and
  after each response on a kept-alive connection. A client that trickles half a header (slowloris) is
  dropped, not held forever.
- Connections: at most `max_connections` at once (uvicorn answers 503 past it), below the process's file
  descriptor limit, which is raised to its hard limit at start.
- Logs: when the process does run out of descriptors, asyncio reports every failed `accept()`; the loop's
  error handler logs each distinct message at most once per `LOG_EVERY_S` with a count of those dropped,
  so the log cannot fill a disk.
"""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
LOG_EVERY_S = 10.0


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head does not arrive in time."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a whole request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same time for its head

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


class QuietErrors:
    """A loop exception handler that logs each distinct message at most once per `every_s` seconds."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last: dict[str, float] = {}
        self.dropped: dict[str, int] = {}

    def __call__(self, loop, context: dict) -> None:
        msg = str(context.get("message", "error"))
        now = self.clock()
        if now - self.last.get(msg, -1e18) < self.every_s:
            self.dropped[msg] = self.dropped.get(msg, 0) + 1
            return
        self.last[msg] = now
        n = self.dropped.pop(msg, 0)
        exc = context.get("exception")
        log.error("%s%s%s", msg, f": {type(exc).__name__}: {exc}" if exc else "",
                  f" (and {n} more like it in the last {self.every_s:g} s)" if n else "")


class PoolServer(uvicorn.Server):
    async def serve(self, sockets=None) -> None:
        asyncio.get_running_loop().set_exception_handler(QuietErrors())
        await super().serve(sockets)


def fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; → the soft limit now."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server(app, host: str, port: int, *, header_timeout_s: float = HEADER_TIMEOUT_S,
           max_connections: int | None = None, log_level: str = "warning") -> PoolServer:
    """A uvicorn server for `app` with the header timeout, a connection cap and quiet accept errors."""
    proto = type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
    cap = max_connections or max(16, int(fd_limit() * 0.75) - 32)
    return PoolServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off", http=proto,
                                     limit_concurrency=cap, timeout_graceful_shutdown=5))
