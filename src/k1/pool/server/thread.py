"""`ServedPool`: the pool's app on a real uvicorn on 127.0.0.1, in a thread (tests and bench/pool_server.py),
with the same hardening as `k1 pool serve` (`serving.server`)."""

from __future__ import annotations

import threading
import time

from k1.pool.server.app import build_app
from k1.pool.server.serving import HEADER_TIMEOUT_S, server
from k1.pool.testing import free_port


class ServedPool:
    def __init__(self, router, header_timeout_s: float = HEADER_TIMEOUT_S, **app_kw):
        self.router = router
        self.port = free_port()
        self.app = build_app(router, **app_kw)
        self.server = server(self.app, "127.0.0.1", self.port, header_timeout_s=header_timeout_s)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 20 or not self.thread.is_alive():
                raise RuntimeError("the pool server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> ServedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
