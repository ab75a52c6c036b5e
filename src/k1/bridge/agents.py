"""Model agents: any pool member (or K-1 checkpoint) on the bridge, answering `generate` requests with a role.

A request is `{"type": "generate", "data": {"prompt": str | chat messages, "max_tokens", "temperature",
"stop", "seed"}}`; the reply carries the text and what it cost (`atp`, `flops`, `latency_s`, tokens).
Generation runs in a worker thread so the agent keeps answering heartbeats while a model thinks.
"""

from __future__ import annotations

import asyncio
import logging

from k1.bridge.client import BridgeClient, Message
from k1.errors import BridgeError

log = logging.getLogger(__name__)
GENERATE = "generate"


def generation_reply(member, data: dict) -> dict:
    """Run one generate call from a request's data; errors become a reply with `error`, never a dead agent."""
    try:
        g = member.generate(data["prompt"], max_tokens=int(data.get("max_tokens", 64)),
                            temperature=float(data.get("temperature", 0.0)), stop=data.get("stop"),
                            seed=data.get("seed"))
    except (KeyError, TypeError, ValueError) as e:
        return {"error": f"bad generate request: {e}"}
    except Exception as e:  # a member failure is reported to the caller, who decides what to do
        log.warning("member %s failed: %s", member.name, e)
        return {"error": f"{type(e).__name__}: {e}"}
    return {"text": g.text, "member": g.member, "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason,
            "cost": {"atp": g.cost.atp, "flops": g.cost.flops, "latency_s": g.cost.latency_s}}


class ModelAgent:
    """Serve `generate` requests for one member over a connected BridgeClient, one at a time, until stopped."""

    def __init__(self, client: BridgeClient, member):
        self.client, self.member = client, member
        self.served = 0

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                msg = await self.client.recv(timeout=0.5)
            except BridgeError:
                continue  # nothing yet: check `stop` again
            await self.handle(msg)

    async def handle(self, msg: Message) -> None:
        if msg.type != GENERATE or not isinstance(msg.data, dict):
            await self.client.reply(msg, {"error": f"agent {self.client.name} answers `{GENERATE}` requests only"})
            return
        reply = await asyncio.to_thread(generation_reply, self.member, msg.data)
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
