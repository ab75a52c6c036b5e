"""`OpenAIMember`: any OpenAI-compatible HTTP server (vLLM, llama.cpp server, Ollama, `k1 pool serve`).

httpx with a timeout per request, retries with exponential backoff on transport errors, timeouts, 429 and
5xx, and a circuit breaker that fails fast after repeated failures until a cooldown has passed. A plain
string prompt goes to `/completions`, chat messages to `/chat/completions`. Cost: the configured price per
1,000 tokens times the tokens the server reports in `usage` (estimated as UTF-8 bytes / 4 when it reports
none); a timed-out call is charged for its prompt (the server had it), a refused one for nothing.

A remote server is not trusted: `usage` counts that are not non-negative integers are replaced by the
estimate (a negative count would refund the budget), a call ends with a timeout once `deadline_s` has passed
in all (httpx's timeout is per read, so a server trickling bytes would never time out), and a response
larger than `max_response_bytes` is cut off and fails the call. An answer cannot be longer than the
`max_tokens` it was asked for: reported completion tokens above it, or more than `MAX_TOKEN_BYTES` bytes of
text per allowed token, fail the call (and the router charges at most what it reserved for the call).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Iterator

import httpx

from k1.pool.members.base import ZERO_COST, CallFailed, Cost, Generation, Member, Prompt, prompt_text

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_TOKEN_BYTES = 128  # no tokenizer's token is longer: more text than this per allowed token is a lie


class CircuitBreaker:
    """Closed → open after `failures` failures in a row; open → half-open (one trial call) after `cooldown_s`."""

    def __init__(self, failures: int = 3, cooldown_s: float = 30.0, clock=time.monotonic):
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.count, self.opened_at = 0, None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.count, self.opened_at = 0, None

    def failure(self) -> None:
        self.count += 1
        if self.count >= self.failures or self.opened_at is not None:  # a failed half-open trial re-opens
            self.opened_at = self.clock()


def _tokens_estimate(text: str) -> int:
    return max(1, len(text.encode("utf-8", "replace")) // 4) if text else 0


def _count(v) -> int | None:
    """A usage count the server reported, if it is one: a non-negative integer (bools and floats are not)."""
    return v if type(v) is int and 0 <= v < 1 << 40 else None


class _TooLarge(Exception):
    pass


class OpenAIMember(Member):
    kind = "openai"

    def __init__(self, name: str, base_url: str, *, model: str | None = None, roles=(), api_key: str | None = None,
                 price_per_1k_tokens: float = 1.0, timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.5,
                 breaker_failures: int = 3, breaker_cooldown_s: float = 30.0, deadline_s: float = 120.0,
                 max_response_bytes: int = 4 << 20):
        super().__init__(name, roles)
        self.deadline_s, self.max_response_bytes = deadline_s, max_response_bytes
        self.base_url, self.model = base_url.rstrip("/"), model or name
        self.price_per_1k_tokens, self.retries, self.backoff_s = price_per_1k_tokens, retries, backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self.breaker = CircuitBreaker(breaker_failures, breaker_cooldown_s)

    @classmethod
    def from_spec(cls, name: str, base_url: str, api_key_env: str | None = None, **kw) -> "OpenAIMember":
        return cls(name, base_url, api_key=os.environ.get(api_key_env) if api_key_env else None, **kw)

    # ---- request plumbing -------------------------------------------------------------------------
    def _price(self, tokens: int) -> float:
        return self.price_per_1k_tokens * tokens / 1000.0

    def _body(self, prompt: Prompt, max_tokens, temperature, stop, seed, stream: bool) -> tuple[str, dict]:
        body = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if isinstance(prompt, str):
            return "/completions", {**body, "prompt": prompt}
        return "/chat/completions", {**body, "messages": prompt}

    def _open(self, path: str, body: dict, prompt: Prompt, t0: float) -> httpx.Response:
        """Send with retries and the breaker; → a response with status 200 (the stream not yet read)."""
        if not self.breaker.allow():
            raise CallFailed(f"member {self.name!r}: circuit open after {self.breaker.count} failures; "
                             f"retrying after {self.breaker.cooldown_s:g} s", Cost(0, time.perf_counter() - t0, 0),
                             "unavailable")
        reason, message = "error", ""
        for attempt in range(self.retries + 1):
            if attempt and time.perf_counter() - t0 >= self.deadline_s:
                reason, message = "timeout", f"no answer within the {self.deadline_s:g} s deadline"
                break
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))  # jittered backoff
            try:
                resp = self.client.send(self.client.build_request("POST", path, json=body), stream=True)
            except httpx.TimeoutException as e:
                reason, message = "timeout", f"timed out ({type(e).__name__})"
                continue
            except httpx.TransportError as e:
                reason, message = "unavailable", f"cannot reach {self.base_url} ({type(e).__name__}: {e})"
                continue
            if resp.status_code == 200:
                return resp
            head = next(resp.iter_bytes(), b"")[:200]  # an error body is not read to its end
            reason, message = "error", f"HTTP {resp.status_code}: {head.decode('utf-8', 'replace')}"
            resp.close()
            if resp.status_code not in RETRY_STATUS:
                break  # a 4xx other than 429 will not get better by asking again
        self.breaker.failure()
        billed = self._price(_tokens_estimate(prompt_text(prompt))) if reason == "timeout" else 0.0
        raise CallFailed(f"member {self.name!r}: {message}", Cost(0.0, time.perf_counter() - t0, billed), reason)

    def _lines(self, resp: httpx.Response, t0: float) -> Iterator[str]:
        """The response's lines, counting bytes as they arrive (a line without an end is not held whole)."""
        buf, n = b"", 0
        for chunk in resp.iter_bytes():
            n += len(chunk)
            if n > self.max_response_bytes:
                raise _TooLarge(f"member {self.name!r}: the answer passed {self.max_response_bytes} bytes")
            if time.perf_counter() - t0 > self.deadline_s:
                raise httpx.ReadTimeout(f"past the {self.deadline_s:g} s deadline")
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if buf:
            yield buf.decode("utf-8", "replace")

    # ---- the member verbs -------------------------------------------------------------------------
    def stream(self, prompt: Prompt, *, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        t0 = time.perf_counter()
        path, body = self._body(prompt, max_tokens, temperature, stop, seed, stream=True)
        resp = self._open(path, body, prompt, t0)
        parts: list[str] = []
        usage, finish, n_bytes = None, "stop", 0

        def record(reason: str) -> None:
            text = "".join(parts)
            pt = _count((usage or {}).get("prompt_tokens")) or _tokens_estimate(prompt_text(prompt))
            ct = _count((usage or {}).get("completion_tokens")) or min(_tokens_estimate(text), max_tokens)
            self.last_generation = Generation(text=text, member=self.name, prompt_tokens=pt, completion_tokens=ct,
                                              cost=Cost(0.0, time.perf_counter() - t0, self._price(pt + ct)),
                                              finish_reason=reason)

        try:
            for line in self._lines(resp, t0):
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise json.JSONDecodeError("not an object", data, 0)
                if "error" in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                    raise CallFailed(f"member {self.name!r}: {str(err.get('message'))[:200]}",
                                     Cost(0.0, time.perf_counter() - t0, 0.0))
                usage = chunk.get("usage") if isinstance(chunk.get("usage"), dict) else usage
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    d = choice.get("delta")
                    delta = choice.get("text") if "text" in choice else d.get("content") if isinstance(d, dict) else None
                    if delta and isinstance(delta, str):
                        n_bytes += len(delta.encode("utf-8", "replace"))
                        if n_bytes > max_tokens * MAX_TOKEN_BYTES:
                            raise _TooLarge(f"member {self.name!r}: {n_bytes} bytes of answer for max_tokens="
                                            f"{max_tokens}; no tokenizer makes that many")
                        parts.append(delta)
                        yield delta
                    if choice.get("finish_reason") in ("stop", "length"):
                        finish = choice["finish_reason"]
        except GeneratorExit:
            record("cancelled")
            raise
        except _TooLarge as e:
            self.breaker.failure()
            raise CallFailed(str(e), Cost(0.0, time.perf_counter() - t0, self._price(
                _tokens_estimate(prompt_text(prompt)) + _tokens_estimate("".join(parts)))), "error") from None
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            self.breaker.failure()
            raise CallFailed(f"member {self.name!r}: the stream broke ({type(e).__name__})",
                             Cost(0.0, time.perf_counter() - t0, self._price(_tokens_estimate(prompt_text(prompt)))),
                             "timeout" if isinstance(e, httpx.TimeoutException) else "error") from None
        finally:
            resp.close()
        told = _count((usage or {}).get("completion_tokens"))
        if told is not None and told > max_tokens:
            self.breaker.failure()
            raise CallFailed(f"member {self.name!r}: reported {told} completion tokens for max_tokens={max_tokens}",
                             Cost(0.0, time.perf_counter() - t0,
                                  self._price(_tokens_estimate(prompt_text(prompt)) + max_tokens)), "error")
        self.breaker.success()
        record(finish)

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> float:
        return self._price(prompt_tokens + max_tokens)

    def models(self) -> list[str]:
        """The model ids the server lists (`GET /models`)."""
        try:
            resp = self.client.get("/models")
            resp.raise_for_status()
        except httpx.HTTPError as e:
            raise CallFailed(f"member {self.name!r}: cannot list models ({type(e).__name__})", ZERO_COST,
                             "unavailable") from None
        return [m["id"] for m in resp.json().get("data", [])]

    def info(self) -> dict:
        return {**super().info(), "base_url": self.base_url, "model": self.model,
                "price_per_1k_tokens": self.price_per_1k_tokens, "breaker": self.breaker.state}

    def close(self) -> None:
        self.client.close()
