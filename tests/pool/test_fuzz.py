"""Property-based fuzzing of the pool's HTTP API from its own OpenAPI schema (schemathesis): requests that
follow the schema and requests that break it, sent to a real uvicorn on 127.0.0.1. Every response must be
a valid OpenAI object (a completion, a chat completion, a stream of chunks ending in [DONE], the model
list, the pool's status, a feedback receipt) or an OpenAI error object — never a 500, never plain text."""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from k1.pool.config import PoolSettings
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.server.thread import ServedPool
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member

EXAMPLES = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    members = [tiny_hf_member("auto-a", seed=1, hidden=16, layers=1),
               tiny_hf_member("small", seed=2, hidden=16, layers=1, positions=256)]
    router = Router(Pool(members, PoolSettings(seed=0, budget_atp=1e9)),
                    PoolStore(tmp_path_factory.mktemp("fuzz") / "pool.sqlite"))
    with ServedPool(router) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_dict(served.app.fastapi.openapi())


P, N = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CASES = [("/v1/models", "GET", P), ("/v1/pool", "GET", P)] + [  # a GET without parameters cannot be broken
    (path, "POST", mode) for path in ("/v1/chat/completions", "/v1/completions", "/v1/feedback") for mode in (P, N)]


def _is_error(body) -> bool:
    e = body.get("error") if isinstance(body, dict) else None
    return (isinstance(e, dict) and set(e) == {"message", "type", "param", "code"}
            and isinstance(e["message"], str) and e["message"] != "" and isinstance(e["type"], str))


def check_openai(resp, path: str) -> None:
    assert resp.status_code < 500 or resp.status_code in (502, 503, 504), (resp.status_code, resp.text[:300])
    ctype = resp.headers.get("content-type", [""])[0]  # schemathesis keeps every value of a header
    if ctype.startswith("text/event-stream"):
        assert resp.status_code == 200
        lines = [ln[5:].strip() for ln in resp.text.splitlines() if ln.startswith("data:")]
        assert lines and lines[-1] == "[DONE]", resp.text[-300:]
        for data in lines[:-1]:
            chunk = json.loads(data)
            assert _is_error(chunk) or chunk["object"] in ("chat.completion.chunk", "text_completion"), chunk
        return
    assert ctype.startswith("application/json"), (resp.status_code, ctype, resp.text[:300])
    body = json.loads(resp.content)
    if resp.status_code != 200:
        assert _is_error(body), (resp.status_code, body)
        return
    if path == "/v1/models":
        assert body["object"] == "list" and all(m["object"] == "model" for m in body["data"])
    elif path == "/v1/chat/completions":
        assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
        assert body["usage"]["total_tokens"] >= 0
    elif path == "/v1/completions":
        assert body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)
    elif path == "/v1/feedback":
        assert {"request", "member", "success"} <= set(body)
    elif path == "/v1/pool":
        assert {"members", "trust", "budget", "state"} <= set(body)


@pytest.mark.parametrize("path,method,mode", CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_every_response_is_an_openai_object_or_error(served, api_schema, path, method, mode):
    # schemathesis draws the cases (its pytest plugin does not run on this pytest); hypothesis drives them
    op = api_schema[path][method]
    base = served.url.removesuffix("/v1")

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES if method == "POST" else 10, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        resp = case.call(base_url=base, timeout=60)
        check_openai(resp, path)

    fuzz()
