"""`HeldLease`: a store lease kept alive by a thread that renews it every third of its life — held while the
process that took it lives, and over by itself `ttl_s` after that process dies (SIGKILL, a lost machine).

One DREAM runs per store: `k1 pool dream` takes the lease `dream`; a server that starts a cycle takes it first
and hands it to its `k1 pool dream` child (same holder, `HOLDER_ENV`), both renewing it while the child runs."""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)

NAME = "dream"
HOLDER_ENV = "K1_DREAM_HOLDER"  # set by a serving pool for its `k1 pool dream` child: the lease is already its
TTL_ENV = "K1_DREAM_LEASE_S"
TTL_S = 120.0


def own_holder(tag: str = "") -> str:
    """This process's name for a lease: host:pid (and a tag)."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{tag}" if tag else "")


class HeldLease:
    def __init__(self, store, holder: str, ttl_s: float = TTL_S, name: str = NAME, handed: bool = False):
        """`handed`: the lease is another process's, handed to this one (a server's to its `k1 pool dream`):
        renewed here too, but released by its owner, who records the outcome first."""
        self.store, self.holder, self.ttl_s, self.name, self.handed = store, holder, ttl_s, name, handed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # the lease expired under us (the store was out of reach longer than ttl_s)

    def acquire(self) -> bool:
        """Take (or renew, if our holder has it) the lease and keep it renewed; → False while another has it."""
        if not self.store.acquire_lease(self.name, self.holder, self.ttl_s):
            return False
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.acquire_lease(self.name, self.holder, self.ttl_s):
                    self.lost = True
                    log.warning("lease %s lost to %s", self.name, self.store.lease_holder(self.name))
                    return
            except Exception as e:  # the store restarting: try again at the next beat, within the lease's life
                log.warning("lease %s not renewed: %s: %s", self.name, type(e).__name__, e)

    def release(self) -> None:
        """Stop renewing and end the lease now (if it is still ours)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.handed:
            return
        try:
            self.store.release_lease(self.name, self.holder)
        except Exception as e:  # then it ends by itself within ttl_s
            log.warning("lease %s not released: %s: %s", self.name, type(e).__name__, e)
