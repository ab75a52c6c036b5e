"""The OpenAI-compatible server (FastAPI): `/v1/models`, `/v1/chat/completions`, `/v1/completions` (with
SSE streaming), `/v1/feedback`, and `/v1/pool` (trust, budget, state).

`model: "auto"` routes through the pool; a member's name pins it. Every response carries a `k1` block:
which member answered, what it cost, the task class (`k1.task_class`; `k1.context` repeats it for one more
release) and the metabolic state. Errors use OpenAI's
envelope `{"error": {"message", "type", "param", "code"}}`, mapped from exceptions in one place — every
error, an unexpected one included. A failing stream sends one error chunk, then `[DONE]`.

A client that goes away stops its call, streamed or not: the member stops between tokens and what it
computed is charged as 'cancelled'. Requests for different members run at the same time; each member takes
one at a time with a bounded queue (`k1.pool.route.gates.Gate`), and a full queue answers 503. `Guard` checks
Host, API key (which names the tenant), the tenant's requests in flight and body size before a request
reaches the app. Errors come from `k1.pool.errors`: this module never imports the router.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import anyio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from k1.common.db import StoreUnavailable
from k1.errors import BackendError, ConfigError, K1Error
from k1.pool.errors import (BudgetExhausted, Busy, Cancelled, FeedbackExists, PromptTooLong, TenantBusy,
                            UnknownModel, UnknownRequest, UnknownTaskClass)
from k1.pool.members.base import CallFailed
from k1.pool.route.limits import Limits
from k1.pool.server import protocol as P
from k1.pool.server.guard import Guard
from k1.pool.status import pool_status
from k1.pool.tenants import OPERATOR, Tenants

log = logging.getLogger(__name__)

_DONE = object()
POLL_S = 0.1  # how often a waiting non-streamed request checks that its client is still there


def build_app(router, *, api_key: str | None = None, limits: Limits | None = None,
              host: str = "127.0.0.1", allowed_hosts: tuple[str, ...] = (), tenants: Tenants | None = None):
    """The ASGI app: the FastAPI routes behind a `Guard`. `.state` (a FastAPI app's) holds the inner app.
    `tenants` (a keys file's) or `api_key` (one key: its holder is the operator); neither: no key."""
    limits = limits or router.limits
    router.set_limits(limits)
    app = FastAPI(title="k1 pool", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors() or [{"loc": (), "msg": "invalid request", "type": ""}]
        first = next((e for e in errs if not str(e.get("type", "")).endswith("_type")), errs[0])
        param = ".".join(str(x) for x in first["loc"] if x != "body" and "[" not in str(x)) or None
        return JSONResponse(P.error(f"{param}: {first['msg']}" if param else first["msg"], "invalid_request_error",
                                    "invalid_value", param), status_code=400)

    @app.exception_handler(HTTPException)  # unknown path, wrong method, a body FastAPI cannot parse
    async def _http(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return JSONResponse(P.error(str(exc.detail), kind, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(K1Error)
    async def _k1(request: Request, exc: K1Error):
        status, body = map_error(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception):
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

    def tenant_of(request: Request):
        return getattr(request.state, "tenant", None) or OPERATOR

    async def answer(kind: str, req: P._Common, prompt, request: Request):
        check_model(req.model)
        kw = dict(model=req.model, session=req.session(), task_class=req.task_class(), max_tokens=req.limit(),
                  temperature=req.temperature, stop=req.stops(), seed=req.seed, tenant=tenant_of(request))
        if not req.stream:
            routed = await until_disconnected(request, lambda stop: router.generate(prompt, cancelled=stop.is_set, **kw))
            return P.chat_response(routed) if kind == "chat" else P.completion_response(routed)
        stream = await run_in_threadpool(lambda: router.stream(prompt, **kw))
        try:  # the first delta before the headers: a member that cannot start answers with a real status
            first = await run_in_threadpool(next, stream, _DONE)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(stream.close)
            raise
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(sse(kind, stream, first, include_usage, request), media_type="text/event-stream")

    async def until_disconnected(request: Request, work):
        """Run `work(stop_event)` in a thread; if the client goes away meanwhile, set the event (the router
        then stops the member between tokens and charges the call as cancelled)."""
        stop = threading.Event()
        task = asyncio.ensure_future(run_in_threadpool(work, stop))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=POLL_S)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    stop.set()
        finally:
            if not task.done():  # disconnected, or this handler was cancelled: the call stops on its own
                stop.set()
                task.add_done_callback(lambda t: t.exception())  # its Cancelled is expected; nobody awaits it

    async def sse(kind: str, stream, first, include_usage: bool, request: Request):
        finished = False
        try:
            if kind == "chat":
                head = P.chunk(kind, stream.request, stream.member, None)
                head["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                yield _event(head)
            delta = first
            while delta is not _DONE:
                yield _event(P.chunk(kind, stream.request, stream.member, delta))
                delta = await run_in_threadpool(next, stream, _DONE)
                if await request.is_disconnected():  # uvicorn drops writes to a closed socket silently
                    return
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
    async def feedback(req: P.FeedbackRequest, request: Request):
        return await run_in_threadpool(lambda: router.feedback(req.request, req.success, req.source, req.task_class,
                                                               tenant=tenant_of(request)))

    @app.get("/v1/pool")
    async def status(request: Request):
        return await run_in_threadpool(lambda: pool_status(router, tenant=tenant_of(request)))

    guard = Guard(app, api_key=api_key, body_bytes=limits.body_bytes, host=host, allowed_hosts=allowed_hosts,
                  tenants=tenants)
    guard.state, guard.router, guard.fastapi = app.state, router, app
    return guard


def map_error(exc: Exception) -> tuple[int, dict]:
    """One place that turns an exception into an HTTP status and OpenAI's error envelope."""
    if isinstance(exc, UnknownModel):
        return 404, P.error(str(exc), "invalid_request_error", "model_not_found", "model")
    if isinstance(exc, UnknownRequest):
        return 404, P.error(str(exc), "invalid_request_error", "request_not_found", "request")
    if isinstance(exc, UnknownTaskClass):
        return 400, P.error(str(exc), "invalid_request_error", "unknown_task_class", "metadata.task_class")
    if isinstance(exc, TenantBusy):
        return 429, P.error(str(exc), "rate_limit_error", "tenant_busy")
    if isinstance(exc, FeedbackExists):
        return 409, P.error(str(exc), "invalid_request_error", "feedback_exists", "request")
    if isinstance(exc, PromptTooLong):
        return 400, P.error(str(exc), "invalid_request_error", "context_length_exceeded", "messages")
    if isinstance(exc, BudgetExhausted):
        return 429, P.error(str(exc), "insufficient_quota", "budget_exhausted")
    if isinstance(exc, Busy):
        return 503, P.error(str(exc), "server_error", "member_busy")
    if isinstance(exc, Cancelled):
        return 499, P.error(str(exc), "invalid_request_error", "cancelled")
    if isinstance(exc, CallFailed):
        status = 504 if exc.reason == "timeout" else 502
        return status, P.error(str(exc), "upstream_error", exc.reason)
    if isinstance(exc, StoreUnavailable):  # the shared store is restarting: the client may try again
        return 503, P.error(str(exc), "server_error", "store_unavailable")
    if isinstance(exc, (BackendError, ConfigError)):
        return 400, P.error(str(exc), "invalid_request_error", "bad_request")
    log.exception("unexpected error")
    return 500, P.error(f"internal error: {type(exc).__name__}", "server_error", "internal_error")


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
