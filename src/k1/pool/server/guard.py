"""`Guard`: what every request passes before the app sees it — its Host, its key and its size.

- Host: only the bound address, localhost, the loopback addresses and names given in `allowed_hosts` (a
  page on another site that rebinds its DNS name to 127.0.0.1 still sends its own name, and is refused:
  DNS rebinding). A server bound to 0.0.0.0 is called by the machine's name: list it in `allowed_hosts`.
- Key: with an API key set, every path but `/v1/models` and the schema needs `Authorization: Bearer <key>`
  (compared in constant time), as vLLM's and llama.cpp's servers do; 401 otherwise.
- Size: a body over `limit` bytes gets 413 as soon as the count passes it; nothing larger is ever held.
Every refusal is an OpenAI error object.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = {"/v1/models", "/openapi.json"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Guard:
    def __init__(self, app, *, api_key: str | None, body_bytes: int, host: str = "127.0.0.1",
                 allowed_hosts: tuple[str, ...] = ()):
        self.app, self.api_key, self.body_bytes = app, api_key, body_bytes
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
        if self.api_key and scope["path"] not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _refuse(send, 401, "a missing or wrong API key; send 'Authorization: Bearer <key>'",
                                     "invalid_request_error", "invalid_api_key")
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

        return await self.app(scope, replay, send)


async def _refuse(send, status: int, message: str, type_: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
