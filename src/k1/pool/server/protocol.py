"""The OpenAI wire format the server speaks: request models (validated) and response builders.

Unknown request fields are ignored, as OpenAI's own server does for forward compatibility; the pool reads
`user` as the session id and `metadata.task_class` as the task class named by the caller (`metadata.context`,
its old name, is read for one more release); a class must be one the pool knows. Every text must be
valid Unicode (a lone surrogate is refused with 400), at most 4 stop strings of 256 characters, a seed in
int64, and a content part of type "text" must carry a string.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from k1.pool.route.limits import MAX_STOP_CHARS, MAX_STOPS, MAX_TOKENS


def _unicode(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text holds a lone surrogate; send valid UTF-8") from None
    return s


Text = Annotated[str, AfterValidator(_unicode)]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS), AfterValidator(_unicode)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: Text | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[Text, list[ContentPart], None] = ""

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stop: Union[Stop, Annotated[list[Stop], Field(max_length=MAX_STOPS)], None] = None
    seed: int | None = Field(default=None, ge=-(1 << 63), le=(1 << 63) - 1)
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(default=1, ge=1, le=1)  # one answer per request: the pool answers with one member
    user: Text | None = Field(default=None, max_length=256)
    metadata: dict[Annotated[Text, Field(max_length=64)], Annotated[Text, Field(max_length=512)]] | None = Field(
        default=None, max_length=16)

    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def limit(self) -> int:
        return self.max_tokens or 64

    def session(self) -> str:
        return (self.metadata or {}).get("session") or self.user or "default"

    def task_class(self) -> str | None:
        meta = self.metadata or {}
        return meta.get("task_class") or meta.get("context")


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 64

    def prompt(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Common):
    prompt: Union[Text, list[Text]]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("give one prompt per request")
            return self.prompt[0]
        return self.prompt


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request: str = Field(min_length=1, description="the `k1.request` id of an answer")
    success: float = Field(ge=0.0, le=1.0)
    source: str = Field(default="feedback", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    task_class: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   description="what the prompt asked, if the router's class was wrong")


def k1_block(routed) -> dict:
    """What the pool adds to every response: who answered, what it cost, why it was chosen."""
    g = routed.generation
    return {"member": g.member, "request": routed.request, "task_class": routed.task_class,
            "context": routed.task_class, "state": routed.state,  # "context": the old name, for one release
            "cost": {"atp": g.cost.atp, "flops": g.cost.flops, "latency_s": g.cost.latency_s},
            "outcome": routed.outcome, "importance": routed.importance,
            "utilities": routed.decision.utilities if routed.decision else None}


def usage(g) -> dict:
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens}


def chat_response(routed) -> dict:
    g = routed.generation
    return {"id": f"chatcmpl-{routed.request}", "object": "chat.completion", "created": int(time.time()),
            "model": g.member, "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                                            "finish_reason": _finish(g.finish_reason), "logprobs": None}],
            "usage": usage(g), "k1": k1_block(routed)}


def completion_response(routed) -> dict:
    g = routed.generation
    return {"id": f"cmpl-{routed.request}", "object": "text_completion", "created": int(time.time()),
            "model": g.member, "choices": [{"index": 0, "text": g.text, "finish_reason": _finish(g.finish_reason),
                                            "logprobs": None}],
            "usage": usage(g), "k1": k1_block(routed)}


def chunk(kind: str, request: str, member: str, delta: str | None, finish: str | None = None) -> dict:
    if kind == "chat":
        choice = {"index": 0, "delta": {"content": delta} if delta is not None else {}, "finish_reason": finish}
        return {"id": f"chatcmpl-{request}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": member, "choices": [choice]}
    return {"id": f"cmpl-{request}", "object": "text_completion", "created": int(time.time()), "model": member,
            "choices": [{"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}]}


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


def error(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
