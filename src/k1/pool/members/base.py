"""The one interface every pool member speaks: `generate` (and `stream`), `score`, a `Cost` per call, `close`.

A member is a local K-1 checkpoint, a Hugging Face causal LM, or an OpenAI-compatible HTTP server. The
router, the server, the bridge and the self-learning loop only ever see this interface.

Cost units (docs/pool.md): a local member's `atp` is its measured compute in GFLOPs (1 ATP = 1e9 FLOPs,
FLOPs counted from the model's shapes and the tokens it actually ran); a remote member's `atp` is its
configured price per 1,000 tokens times the tokens it was billed for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, Union

from k1.errors import BackendError

# A prompt is plain text or OpenAI-style chat messages ([{"role": "user", "content": "..."}]).
Prompt = Union[str, list[dict]]

FLOPS_PER_ATP = 1e9  # local members: 1 ATP = 1 GFLOP of measured compute


@dataclass(frozen=True)
class Cost:
    """What one call cost."""

    flops: float  # measured compute for local members (FLOPs/token from the model's shapes × tokens); 0 for remote
    latency_s: float  # measured wall time
    atp: float  # charged to the budget: local = flops / FLOPS_PER_ATP, remote = config price × tokens

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.latency_s + other.latency_s, self.atp + other.atp)


ZERO_COST = Cost(0.0, 0.0, 0.0)


class CallFailed(BackendError):
    """A member call that failed after spending something: the router still charges `cost` to the budget.

    `reason`: "error" (bad answer, server error), "timeout", or "unavailable" (refused, circuit open)."""

    def __init__(self, message: str, cost: Cost = ZERO_COST, reason: str = "error"):
        super().__init__(message)
        self.cost, self.reason = cost, reason


@dataclass
class Generation:
    """One answer and what it cost."""

    text: str
    member: str
    prompt_tokens: int
    completion_tokens: int
    cost: Cost
    finish_reason: str = "stop"  # "stop" | "length" | "cancelled" (a stream closed early by its consumer)
    token_logprobs: list[float] | None = None  # natural-log probabilities of the generated tokens, where available
    token_entropies: list[float] | None = None  # entropy (nats) of each next-token distribution / ln(vocab), local only


@dataclass
class Score:
    """How well a member predicts `continuation` after `prompt`: bits per UTF-8 byte of the continuation."""

    bits_per_byte: float
    n_bytes: int
    n_tokens: int
    cost: Cost


class Member(ABC):
    """A language model in the pool.

    Attributes: `name` (unique in a pool), `kind` ("k1" | "hf" | "openai"), `roles` (free-form tags from the
    pool file, e.g. "teacher", "student", "reference", "judge"). Capabilities are class attributes:
    `supports_score` (has token log-probabilities), `is_local` (cost is measured compute).
    """

    kind: str = "member"
    supports_score: bool = False
    is_local: bool = False
    max_positions: int | None = None  # prompt + answer limit in tokens, where the member has one

    def __init__(self, name: str, roles: tuple[str, ...] | list[str] = ()):
        self.name = name
        self.roles = list(roles)
        self.last_generation: Generation | None = None

    def generate(self, prompt: Prompt, *, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, seed: int | None = None) -> Generation:
        """Answer `prompt` (greedy at temperature 0) with at most `max_tokens` tokens, cut before any `stop`."""
        for _ in self.stream(prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed):
            pass
        assert self.last_generation is not None
        return self.last_generation

    @abstractmethod
    def stream(self, prompt: Prompt, *, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        """Yield text deltas as they are produced; when exhausted, `self.last_generation` holds the whole
        `Generation` (text, tokens, cost). A stream abandoned early (closed by its consumer) still records what
        it cost: `last_generation` then has `finish_reason="cancelled"` and the text produced so far."""

    def score(self, prompt: Prompt, continuation: str) -> Score:
        """Bits per byte of `continuation` given `prompt`. Raises NotImplementedError without log-probabilities."""
        raise NotImplementedError(f"member {self.name!r} ({self.kind}) has no token log-probabilities")

    def prompt_tokens(self, prompt: Prompt) -> int:
        """How many tokens `prompt` takes (remote members: UTF-8 bytes / 4, as their cost estimate does)."""
        return max(1, len(prompt_text(prompt).encode("utf-8", "replace")) // 4)

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> float:
        """Expected ATP of a call before any has been measured (the router's prior; measured means replace it)."""
        return 0.0

    def close(self) -> None:
        """Release what the member holds (weights, connections). Safe to call twice."""

    def info(self) -> dict:
        """A JSON-able description for `/v1/models` and `k1 pool status`."""
        return {"name": self.name, "kind": self.kind, "roles": self.roles, "supports_score": self.supports_score}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, roles={self.roles})"


def prompt_text(prompt: Prompt) -> str:
    """Plain text of a prompt; chat messages become 'role: content' lines ending with 'assistant:'."""
    if isinstance(prompt, str):
        return prompt
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt]
    return "\n".join(lines) + "\nassistant:"


@dataclass
class StopScanner:
    """Cuts generated text at the first stop string, and holds back any tail that could still become one,
    so a stream never emits text that a later token turns into a stop sequence."""

    stops: list[str] = field(default_factory=list)

    def cut(self, text: str) -> tuple[str, bool]:
        """→ (text before the first stop string, whether one was found)."""
        hits = [text.find(s) for s in self.stops if s and s in text]
        return (text[:min(hits)], True) if hits else (text, False)

    def safe_prefix(self, text: str) -> str:
        """The part of `text` no future token can turn into a stop string (nor an incomplete character)."""
        keep = len(text)
        while keep and text[keep - 1] == "\ufffd":  # an unfinished multi-byte character: wait for its bytes
            keep -= 1
        head = text[:keep]
        held = max((k for s in self.stops for k in range(1, min(len(s), keep + 1)) if head.endswith(s[:k])), default=0)
        return head[:keep - held]
