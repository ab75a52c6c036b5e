"""Model agents: any pool member (or K-1 checkpoint) on the bridge, answering `generate` requests with a role.

A request is `{"type": "generate", "data": {"prompt": str | chat messages, "max_tokens", "temperature",
"stop", "seed"}}`; its parameters are checked against bounds (`GenerateRequest`) before the model runs, and
the reply carries the text and what it cost (`atp`, `flops`, `latency_s`, tokens), or `{"error"}`.
Generation runs in a worker thread so the agent keeps answering heartbeats while a model thinks. Under load
the agent backs off: a reply the hub rate-limits is resent (the client's backoff), and a request it could not
answer is released, not acked, so it comes back instead of being lost.

A plain-text prompt to a chat model (one whose tokenizer has a chat template, as SmolLM2-Instruct's) is sent
as one user message through that template (`plain="chat"`, the default): fed raw, such a model may answer
nothing at all (SmolLM2 gave "" to the raw "What is 2 + 3?" and "2 + 3 = 5" to it as a chat message).
`plain="raw"` sends it as a raw completion.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from k1.bridge.client import BridgeClient, Message
from k1.errors import BridgeError

log = logging.getLogger(__name__)
GENERATE = "generate"
MAX_TOKENS = 1024        # the most tokens one request may ask for (`ModelAgent(max_tokens=...)` lowers or raises it)
MAX_PROMPT_CHARS = 100_000
MAX_STOP = 4             # as OpenAI's API
MAX_STOP_CHARS = 64


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class GenerateRequest(BaseModel):
    """The data of a `generate` request, with the bounds an agent enforces before running its model."""

    model_config = ConfigDict(extra="forbid")
    prompt: Union[str, list[ChatTurn]] = Field(max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(64, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False)
    stop: Optional[Union[str, list[str]]] = Field(None, max_length=MAX_STOP)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)

    def stops(self) -> list[str] | None:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        for s in stops or ():
            if not 0 < len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"stop: each stop string has 1 to {MAX_STOP_CHARS} characters")
        return stops or None


def parse_request(data, max_tokens: int = MAX_TOKENS) -> GenerateRequest:
    """Request data → GenerateRequest, or ValueError with one line naming each bad field."""
    try:
        req = GenerateRequest.model_validate(data)
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, err['loc'])) or 'data'}: {err['msg']}"
                                   for err in e.errors(include_url=False))) from None
    if req.max_tokens > max_tokens:
        raise ValueError(f"max_tokens: at most {max_tokens} on this agent, got {req.max_tokens}")
    req.stops()
    return req


def has_chat_template(member) -> bool:
    """Whether the member's tokenizer formats chat messages (Hugging Face chat models do; K-1 trees do not)."""
    return bool(getattr(getattr(member, "tokenizer", None), "chat_template", None))


def generation_reply(member, data, max_tokens: int = MAX_TOKENS, plain: Literal["chat", "raw"] = "chat") -> dict:
    """Run one generate call from a request's data; errors become a reply with `error`, never a dead agent.
    A plain-text prompt to a chat model becomes one user message unless `plain` is "raw" (module docstring)."""
    try:
        req = parse_request(data, max_tokens)
    except ValueError as e:
        return {"error": f"bad generate request: {e}"}
    prompt = req.prompt if isinstance(req.prompt, str) else [t.model_dump() for t in req.prompt]
    if isinstance(prompt, str) and plain == "chat" and has_chat_template(member):
        prompt = [{"role": "user", "content": prompt}]
    try:
        g = member.generate(prompt, max_tokens=req.max_tokens, temperature=req.temperature, stop=req.stops(),
                            seed=req.seed)
    except Exception as e:  # a member failure is reported to the caller, who decides what to do
        log.warning("member %s failed: %s", member.name, e)
        return {"error": f"{type(e).__name__}: {e}"}
    return {"text": g.text, "member": g.member, "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason,
            "cost": {"atp": g.cost.atp, "flops": g.cost.flops, "latency_s": g.cost.latency_s}}


class ModelAgent:
    """Serve `generate` requests for one member over a connected BridgeClient, one at a time, until stopped."""

    def __init__(self, client: BridgeClient, member, max_tokens: int = MAX_TOKENS, retry_delay: float = 0.5,
                 plain: Literal["chat", "raw"] = "chat"):
        self.client, self.member, self.plain = client, member, plain
        self.max_tokens, self.retry_delay = max_tokens, retry_delay
        self.served = 0
        self.released = 0

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                msg = await self.client.recv(timeout=0.5)
            except BridgeError:
                continue  # nothing yet: check `stop` again
            try:
                await self.handle(msg)
            except BridgeError as e:  # the reply could not be sent (hub limits, lost connection): try again later
                log.warning("agent %s: could not answer %s (%s); it will come back", self.client.name, msg.id, e)
                self.released += 1
                await self.client.release(msg)
                await asyncio.sleep(self.retry_delay)
                continue
            await self.client.ack(msg)

    async def handle(self, msg: Message) -> None:
        if msg.type != GENERATE or not isinstance(msg.data, dict):
            await self.client.reply(msg, {"error": f"agent {self.client.name} answers `{GENERATE}` requests only"})
            return
        reply = await asyncio.to_thread(generation_reply, self.member, msg.data, self.max_tokens, self.plain)
        await self.client.reply(msg, reply)
        self.served += 1


async def ask_agent(client: BridgeClient, to: str, prompt, *, max_tokens: int = 64, temperature: float = 0.0,
                    stop=None, seed=None, timeout: float = 300.0) -> dict:
    """One generate request through the hub; returns the reply data (raises BridgeError on an agent error)."""
    r = await client.request(to, {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                                  "stop": stop, "seed": seed}, type=GENERATE, timeout=timeout)
    if not isinstance(r.data, dict) or "error" in r.data:
        raise BridgeError(f"agent {r.sender}: {r.data.get('error') if isinstance(r.data, dict) else r.data}")
    return {**r.data, "from": r.sender}
