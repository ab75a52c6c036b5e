"""`k1 pool serve`'s app on a real uvicorn on 127.0.0.1, called through LiteLLM as an OpenAI-compatible server
(`model="openai/auto"`): plain and streaming answers, the `k1` block, the member's name and the API key."""

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its price list from the package, never the network
litellm = pytest.importorskip("litellm")

from k1.pool.config import PoolSettings
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.server.thread import ServedPool
from k1.pool.store import PoolStore
from k1.pool.route.taskclass import TASK_CLASSES
from k1.pool.testing import tiny_hf_member

KEY = "sk-k1-litellm-test"
CHAT = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    members = [tiny_hf_member("big", seed=1, hidden=64), tiny_hf_member("small", seed=2, hidden=16, layers=1)]
    router = Router(Pool(members, PoolSettings(seed=0, budget_atp=1e6)),
                    PoolStore(tmp_path_factory.mktemp("litellm") / "pool.sqlite"))
    with ServedPool(router, api_key=KEY) as s:
        yield s
    router.close()


def call(served, model: str, **kw):
    return litellm.completion(model=f"openai/{model}", api_base=served.url, api_key=KEY, messages=CHAT,
                              max_tokens=6, temperature=0.0, num_retries=0, timeout=30, **kw)


def test_auto_answers_through_litellm_with_the_k1_block(served):
    r = call(served, "auto")
    k1 = r.model_dump()["k1"]  # LiteLLM keeps the server's extra field
    assert r.model == k1["member"] in ("big", "small")
    assert k1["context"] in TASK_CLASSES and k1["cost"]["atp"] > 0 and k1["utilities"].keys() == {"big", "small"}
    assert r.choices[0].message.content == served.router.pool[r.model].generate(CHAT, max_tokens=6).text
    assert r.usage.completion_tokens == 6
    assert served.router.store.experience(k1["request"])["member"] == r.model


def test_streaming_through_litellm(served):
    chunks = list(call(served, "small", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == served.router.pool["small"].generate(CHAT, max_tokens=6).text
    assert {c.model for c in chunks} == {"small"}
    blocks = [c.model_dump()["k1"] for c in chunks if c.model_dump().get("k1")]
    assert len(blocks) == 1 and blocks[0]["member"] == "small" and blocks[0]["cost"]["atp"] > 0
    assert [c.usage.completion_tokens for c in chunks if getattr(c, "usage", None)] == [6]


def test_a_wrong_key_is_refused(served):
    with pytest.raises(litellm.AuthenticationError, match="API key"):
        litellm.completion(model="openai/auto", api_base=served.url, api_key="wrong", messages=CHAT, max_tokens=4,
                           num_retries=0, timeout=30)
