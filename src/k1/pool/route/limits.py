"""`Limits`: what one request may ask of the pool, and how long it may wait — in one place.

The server refuses what is over a limit before any member runs (413 for a body, 400 for the rest, like
OpenAI and vLLM); the router bounds the queue in front of each member, retries a failed call on the next
candidate and cools down a member that keeps failing (LiteLLM's router does the same).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_STOPS = 4  # OpenAI allows up to 4 stop sequences
MAX_STOP_CHARS = 256
MAX_TOKENS = 4096


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    body_bytes: int = Field(default=1 << 20, ge=1024)  # a request body larger than this gets 413
    prompt_tokens: int = Field(default=8192, ge=1)  # per call, also for members that slide their window
    concurrency: str = Field(default="member", pattern="^(member|global)$")  # a lock per member, or one for all
    queue: int = Field(default=16, ge=0)  # requests waiting for one member; more get 503
    wait_s: float = Field(default=60.0, gt=0)  # a request still waiting after this gets 503
    retries: int = Field(default=2, ge=0)  # `model: auto`: further candidates tried after a failed call
    cooldown_after: int = Field(default=3, ge=1)  # failures in a row that cool a member down
    cooldown_s: float = Field(default=60.0, ge=0)  # how long a cooled member is left out of selection
