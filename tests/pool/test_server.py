"""`k1 pool serve`'s app on a real uvicorn on 127.0.0.1, driven by the official `openai` client — and
`OpenAIMember` against it (a remote member is a pool served elsewhere)."""

import threading
import time

import httpx
import openai
import pytest
import uvicorn

from k1.pool.config import PoolSettings
from k1.pool.members.openai import OpenAIMember
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.server.app import build_app
from k1.pool.store import PoolStore
from k1.pool.route.taskclass import TASK_CLASSES
from k1.pool.testing import free_port, tiny_hf_member


class Served:
    def __init__(self, router):
        self.router = router
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(build_app(router), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert time.time() - t0 < 20, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    members = [tiny_hf_member("big", seed=1, hidden=64), tiny_hf_member("small", seed=2, hidden=16, layers=1),
               tiny_hf_member("wide", seed=3, hidden=256, layers=4, positions=4096)]
    router = Router(Pool(members, PoolSettings(seed=0, budget_atp=1e6)),
                    PoolStore(tmp_path_factory.mktemp("srv") / "pool.sqlite"))
    s = Served(router)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=30)


def test_models_lists_every_member_and_auto(client):
    assert [m.id for m in client.models.list()] == ["auto", "big", "small", "wide"]


def test_chat_completion_pinned_to_a_member(client, served):
    r = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert r.model == "small" and r.usage.completion_tokens == 5
    local = served.router.pool["small"].generate([{"role": "user", "content": "hi"}], max_tokens=5)
    assert r.choices[0].message.content == local.text  # greedy: the same answer as the member in-process
    k1 = r.model_extra["k1"]
    assert k1["member"] == "small" and k1["cost"]["atp"] > 0 and k1["context"] in TASK_CLASSES


def test_auto_routes_and_says_who_answered(client):
    r = client.completions.create(model="auto", prompt="once upon", max_tokens=3, user="s1")
    assert r.model in ("big", "small", "wide") and r.model_extra["k1"]["member"] == r.model
    assert r.model_extra["k1"]["utilities"].keys() == {"big", "small", "wide"}


def test_streaming_chat_and_completion(client, served):
    parts, last = [], None
    for ch in client.chat.completions.create(model="big", messages=[{"role": "user", "content": "tell"}],
                                             max_tokens=8, stream=True, stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].delta.content:
            parts.append(ch.choices[0].delta.content)
        last = ch
    assert last.usage.completion_tokens == 8 and last.model_extra["k1"]["member"] == "big"
    exp = served.router.store.experience(last.model_extra["k1"]["request"])
    assert "".join(parts) == exp["response"]
    row = [r for r in served.router.store.ledger() if r["request"] == exp["request"]][0]
    assert (row["path"], row["stream"]) == ("success", 1)
    text = "".join(c.choices[0].text for c in client.completions.create(model="small", prompt="ab", max_tokens=4,
                                                                      stream=True))
    assert text == served.router.pool["small"].generate("ab", max_tokens=4).text


def test_feedback_moves_trust(client, served):
    r = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "q"}], max_tokens=2,
                                       metadata={"context": "qa"})
    resp = httpx.post(f"{served.url}/feedback", json={"request": r.model_extra["k1"]["request"], "success": 1})
    assert resp.status_code == 200 and resp.json()["member"] == "small"
    assert served.router.store.trust("qa")[("small", "qa")] == (1.0, 0.0)


@pytest.mark.parametrize("kw,status,code", [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ({"model": "auto", "messages": []}, 400, "invalid_value"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "invalid_value"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "invalid_value"),
])
def test_malformed_requests_get_openai_errors(client, kw, status, code):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**kw)
    assert e.value.status_code == status
    assert e.value.body["code"] == code and e.value.body["message"]


def test_bad_json_and_unknown_feedback_are_4xx(served):
    r = httpx.post(f"{served.url}/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{served.url}/feedback", json={"request": "nope", "success": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    r = httpx.post(f"{served.url}/feedback", json={"request": "x", "success": 3})
    assert r.status_code == 400


def test_openai_member_against_the_served_pool(served):
    remote = OpenAIMember("remote-small", served.url, model="small", price_per_1k_tokens=2.0)
    g = remote.generate("ab", max_tokens=4)
    local = served.router.pool["small"].generate("ab", max_tokens=4)
    assert g.text == local.text and g.completion_tokens == 4 and g.prompt_tokens == local.prompt_tokens
    assert g.cost.atp == pytest.approx(2.0 * (g.prompt_tokens + 4) / 1000) and g.cost.flops == 0
    chat = [{"role": "user", "content": "hi"}]
    assert "".join(remote.stream(chat, max_tokens=5)) == served.router.pool["small"].generate(chat, max_tokens=5).text
    assert remote.last_generation.completion_tokens == 5
    assert remote.models() == ["auto", "big", "small", "wide"]
    remote.close()


def test_a_disconnected_stream_is_charged_as_cancelled(served):
    with httpx.stream("POST", f"{served.url}/completions", json={"model": "wide", "prompt": "go", "max_tokens": 4000,
                                                                  "stream": True, "temperature": 1.0}) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"text": "' in line:
                break  # leave after the first token
    t0 = time.time()
    while time.time() - t0 < 10:
        rows = [r for r in served.router.store.ledger() if r["path"] == "cancelled"]
        if rows:
            break
        time.sleep(0.05)
    assert rows and 0 < rows[-1]["completion_tokens"] < 4000 and rows[-1]["atp"] > 0
