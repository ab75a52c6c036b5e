"""The OpenAI-compatible server (FastAPI): `/v1/models`, `/v1/chat/completions`, `/v1/completions` (with
SSE streaming), `/v1/feedback`, and `/v1/pool` (trust, budget, state).

`model: "auto"` routes through the pool; a member's name pins it. Every response carries a `k1` block:
which member answered, what it cost, the context class and the metabolic state. Errors use OpenAI's
envelope `{"error": {"message", "type", "param", "code"}}`, mapped from exceptions in one place. A
failing stream sends one error chunk, then `[DONE]`; a client that disconnects cancels its stream (the
tokens computed so far are charged as 'cancelled'). Local members share this process's CPU, so requests
run one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging

import anyio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from k1.errors import BackendError, ConfigError, K1Error
from k1.pool.members.base import CallFailed
from k1.pool.router import BudgetExhausted, Router, UnknownRequest
from k1.pool.server import protocol as P
from k1.pool.status import pool_status

log = logging.getLogger(__name__)

_DONE = object()


def build_app(router: Router) -> FastAPI:
    app = FastAPI(title="k1 pool", docs_url=None, redoc_url=None)
    lock = asyncio.Lock()  # one request at a time: local members are not re-entrant

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(x) for x in first["loc"] if x != "body") or None
        return JSONResponse(P.error(f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error",
                                    "invalid_value", param), status_code=400)

    @app.exception_handler(K1Error)
    async def _k1(request: Request, exc: K1Error):
        status, body = map_error(exc)
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models")
    async def models():
        data = [{"id": "auto", "object": "model", "created": 0, "owned_by": "k1-pool",
                 "k1": {"kind": "router", "selection": router.settings.selection}}]
        for m in router.pool.members.values():
            data.append({"id": m.name, "object": "model", "created": 0, "owned_by": "k1-pool",
                         "k1": {"kind": m.kind, "roles": m.roles}})
        return {"object": "list", "data": data}

    def check_model(name: str) -> None:
        if name != "auto" and name not in router.pool.members:
            raise UnknownModel(name, router.pool.names)

    async def answer(kind: str, req: P._Common, prompt, request: Request):
        check_model(req.model)
        kw = dict(model=req.model, session=req.session(), context=req.context(), max_tokens=req.limit(),
                  temperature=req.temperature, stop=req.stops(), seed=req.seed)
        if not req.stream:
            async with lock:
                routed = await run_in_threadpool(lambda: router.generate(prompt, **kw))
            return P.chat_response(routed) if kind == "chat" else P.completion_response(routed)
        await lock.acquire()
        try:
            stream = await run_in_threadpool(lambda: router.stream(prompt, **kw))
        except BaseException:
            lock.release()
            raise
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(sse(kind, stream, include_usage, lock, request), media_type="text/event-stream")

    async def sse(kind: str, stream, include_usage: bool, lock: asyncio.Lock, request: Request):
        finished = False
        try:
            if kind == "chat":
                first = P.chunk(kind, stream.request, stream.member, None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                yield _event(first)
            while True:
                delta = await run_in_threadpool(next, stream, _DONE)
                if delta is _DONE:
                    break
                if await request.is_disconnected():  # uvicorn drops writes to a closed socket silently
                    return
                yield _event(P.chunk(kind, stream.request, stream.member, delta))
            finished = True
            routed = stream.routed
            last = P.chunk(kind, stream.request, stream.member, None, P._finish(routed.generation.finish_reason))
            last["k1"] = P.k1_block(routed)
            if include_usage:
                last["usage"] = P.usage(routed.generation)
            yield _event(last)
        except Exception as e:  # a failing stream: one error chunk, then [DONE]
            finished = True
            yield _event(map_error(e)[1])
        finally:
            if not finished:  # the client went away: stop the member; what it computed is charged as cancelled
                with anyio.CancelScope(shield=True):  # the server may be cancelling this task right now
                    await run_in_threadpool(stream.close)
            lock.release()
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat(req: P.ChatRequest, request: Request):
        return await answer("chat", req, req.prompt(), request)

    @app.post("/v1/completions")
    async def completions(req: P.CompletionRequest, request: Request):
        try:
            text = req.text()
        except ValueError as e:
            return JSONResponse(P.error(str(e), "invalid_request_error", "invalid_value", "prompt"), 400)
        return await answer("completion", req, text, request)

    @app.post("/v1/feedback")
    async def feedback(req: P.FeedbackRequest):
        async with lock:
            return await run_in_threadpool(router.feedback, req.request, req.success, req.source)

    @app.get("/v1/pool")
    async def status():
        async with lock:
            return await run_in_threadpool(pool_status, router)

    return app


class UnknownModel(ConfigError):
    def __init__(self, name: str, names: list[str]):
        super().__init__(f"the model {name!r} does not exist; use 'auto' or one of: {', '.join(names)}")


def map_error(exc: Exception) -> tuple[int, dict]:
    """One place that turns an exception into an HTTP status and OpenAI's error envelope."""
    if isinstance(exc, UnknownModel):
        return 404, P.error(str(exc), "invalid_request_error", "model_not_found", "model")
    if isinstance(exc, UnknownRequest):
        return 404, P.error(str(exc), "invalid_request_error", "request_not_found", "request")
    if isinstance(exc, BudgetExhausted):
        return 429, P.error(str(exc), "insufficient_quota", "budget_exhausted")
    if isinstance(exc, CallFailed):
        status = 504 if exc.reason == "timeout" else 502
        return status, P.error(str(exc), "upstream_error", exc.reason)
    if isinstance(exc, (BackendError, ConfigError)):
        return 400, P.error(str(exc), "invalid_request_error", "bad_request")
    log.exception("unexpected error")
    return 500, P.error(f"internal error: {type(exc).__name__}", "server_error", "internal_error")


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
