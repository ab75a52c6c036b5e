"""`Guard`: what every request passes before the app sees it — its Host, its key and its size.

- Host: only the bound address, localhost, the loopback addresses and names given in `allowed_hosts` (a
  page on another site that rebinds its DNS name to 127.0.0.1 still sends its own name, and is refused:
  DNS rebinding). A server bound to 0.0.0.0 is called by the machine's name: list it in `allowed_hosts`.
- Key: with keys set, every path but `/v1/models` and the schema needs `Authorization: Bearer <key>`
  (compared in constant time with every key), as vLLM's and llama.cpp's servers do; 401 otherwise. The key
  names the tenant (`k1.pool.tenants`), which the app reads from `request.state.tenant`.
- Concurrency: a tenant with `concurrency` completions in flight gets 429 at once for the next one, so no
  tenant can hold every worker thread of the server (waiting at a busy member's gate holds one).
- Size: a body over `limit` bytes gets 413 as soon as the count passes it; nothing larger is ever held.
Every refusal is an OpenAI error object.
"""

from __future__ import annotations

import json

import anyio

from k1.pool.tenants import OPERATOR, Tenants

OPEN_PATHS = {"/v1/models", "/openapi.json"}
COUNTED_PATHS = {"/v1/chat/completions", "/v1/completions"}  # the calls that hold a worker thread while they run
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Guard:
    def __init__(self, app, *, api_key: str | None = None, body_bytes: int, host: str = "127.0.0.1",
                 allowed_hosts: tuple[str, ...] = (), tenants: Tenants | None = None):
        self.app, self.body_bytes = app, body_bytes
        self.tenants = tenants if tenants is not None else Tenants.single(api_key)
        self.inflight: dict[str, int] = {}
        self._threads = False
        self.hosts = LOOPBACK | {host.lower(), f"[{host.lower()}]"} | {h.lower() for h in allowed_hosts}
        self.refused_bytes = 0  # bodies refused for size, as announced or as counted (for the soak figures)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in self.hosts:
            return await _refuse(send, 400, f"Host {host!r} is not served here; use the bound address or localhost",
                                 "invalid_request_error", "invalid_host")
        tenant = OPERATOR if self.tenants.open else None
        if tenant is None:
            auth = headers.get("authorization", "")
            tenant = self.tenants.find(auth[7:] if auth[:7].lower() == "bearer " else "")
            if tenant is None and scope["path"] not in OPEN_PATHS:
                return await _refuse(send, 401, "a missing or wrong API key; send 'Authorization: Bearer <key>'",
                                     "invalid_request_error", "invalid_api_key")
        scope.setdefault("state", {})["tenant"] = tenant
        announced = headers.get("content-length", "")
        if announced.isdigit() and int(announced) > self.body_bytes:
            self.refused_bytes += int(announced)
            return await _refuse(send, 413, f"the body is {int(announced)} bytes; the limit is {self.body_bytes}",
                                 "invalid_request_error", "request_too_large")
        body, more = [], True
        n = 0
        while more:  # read the body here, counting, so an unannounced (chunked) one is capped too
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            n += len(chunk)
            if n > self.body_bytes:
                self.refused_bytes += n
                return await _refuse(send, 413, f"the body passed the limit of {self.body_bytes} bytes",
                                     "invalid_request_error", "request_too_large")
            body.append(chunk)
            more = msg.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        if scope["path"] not in COUNTED_PATHS:
            return await self.app(scope, replay, send)
        if not self._threads:  # room in the thread pool for every tenant's limit (anyio's default is 40)
            self._threads = True
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, min(1024, sum(
                min(t.concurrency, 256) for t in self.tenants) + 16))
        n = self.inflight.get(tenant.name, 0)
        if n >= tenant.concurrency:
            return await _refuse(send, 429, f"this key has {n} requests in flight, its limit; wait for one to finish",
                                 "rate_limit_error", "tenant_busy")
        self.inflight[tenant.name] = n + 1
        try:
            return await self.app(scope, replay, send)
        finally:
            self.inflight[tenant.name] -= 1


async def _refuse(send, status: int, message: str, type_: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
