"""`k1 pool serve` attacked as a hostile client and an operator would, on a real uvicorn on 127.0.0.1:
cancelled streams, missing keys, foreign Host headers, replayed feedback, restarts over stored prompts,
oversized bodies and stop lists, clients that leave, concurrent load, failing and lying members, and
inputs that used to end in a plain-text 500."""

import json
import threading
import time

import httpx
import pytest

from k1.pool.config import PoolSettings
from k1.pool.route.limits import Limits
from k1.pool.members.openai import OpenAIMember
from k1.pool.route.taskclass import TASK_CLASSES
from k1.pool.pool import Pool
from k1.pool import CallFailed
from k1.pool.errors import PromptTooLong
from k1.pool.route.router import Router
from k1.pool.server.thread import ServedPool
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member


@pytest.fixture(scope="module")
def big():
    return tiny_hf_member("big", seed=1, hidden=64)


@pytest.fixture(scope="module")
def small():
    return tiny_hf_member("small", seed=2, hidden=16, layers=1)


@pytest.fixture(scope="module")
def wide():  # slow enough that a long answer takes seconds
    return tiny_hf_member("wide", seed=3, hidden=256, layers=4, positions=4096)


def _router(tmp_path, members, limits=None, **settings):
    settings.setdefault("seed", 0)
    settings.setdefault("budget_atp", 1e6)
    kw = {"limits": limits} if limits is not None else {}
    return Router(Pool(members, PoolSettings(**settings)), PoolStore(tmp_path / "pool.sqlite"), **kw)


def _rows(router, request):
    return [r for r in router.store.ledger(100_000) if r["request"] == request]


def _chat(url, model, text="hi", timeout=20, **kw):
    return httpx.post(f"{url}/chat/completions", timeout=timeout,
                      json={"model": model, "messages": [{"role": "user", "content": text}], **kw})


def _is_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["message"] and err["type"] and set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code
    return err


# ---- 1. a stream closed at any point ---------------------------------------------------------------------
def test_closing_a_stream_at_every_point_frees_the_member_and_charges_what_it_computed(tmp_path, big):
    r = _router(tmp_path, [big])
    big.generate("warm up", max_tokens=200)  # a stale, expensive generation the cancel must not be charged for
    full = big.generate("hello", max_tokens=8)
    stop = [full.text[-1] + "\x00never"]  # the answer ends on a stop prefix: its tail comes in a last, late yield
    n = len(list(big.stream("hello", max_tokens=8, stop=stop)))
    for k in range(n + 1):
        big.last_generation = None  # as on a member's first call
        s = r.stream("hello", model="big", max_tokens=8, stop=stop)
        for _ in range(k):
            next(s)
        s.close()  # raised inside close() before the fix, and the server never released its lock
        rows = _rows(r, s.request)
        if k:
            assert [x["path"] for x in rows] == ["cancelled"], (k, rows)
            assert 0 < rows[0]["completion_tokens"] <= 8 and rows[0]["atp"] > 0
        else:
            assert rows == []  # never started: nothing ran, nothing is charged
    r.generate("still answers", model="big", max_tokens=2)


def test_a_client_that_leaves_a_stream_anywhere_never_blocks_the_server(tmp_path, big):
    r = _router(tmp_path, [big])
    with ServedPool(r) as s:
        body = {"model": "big", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": True}
        for k in range(12):
            with httpx.stream("POST", f"{s.url}/chat/completions", json=body, timeout=10) as resp:
                seen = 0
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        seen += 1
                        if seen > k:
                            break
            assert _chat(s.url, "big", max_tokens=2, timeout=10).status_code == 200, k
        rows = r.store.ledger(100_000)
        assert len(rows) == 24 and all(x["completion_tokens"] <= 8 for x in rows)


# ---- 2. keys, Host, feedback ----------------------------------------------------------------------------
def test_an_api_key_guards_everything_but_the_model_list(tmp_path, small):
    with ServedPool(_router(tmp_path, [small]), api_key="s3cret") as s:
        assert httpx.get(f"{s.url}/models").status_code == 200
        _is_error(_chat(s.url, "small", max_tokens=2), 401, "invalid_api_key")
        _is_error(httpx.get(f"{s.url}/pool"), 401)
        _is_error(httpx.post(f"{s.url}/feedback", json={"request": "x", "success": 1}), 401)
        _is_error(httpx.get(f"{s.url}/pool", headers={"Authorization": "Bearer wrong"}), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{s.url}/pool", headers=ok).status_code == 200
        r = httpx.post(f"{s.url}/chat/completions", headers=ok, timeout=20,
                       json={"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"


def test_a_foreign_host_header_is_refused(tmp_path, small):
    with ServedPool(_router(tmp_path, [small])) as s:
        _is_error(httpx.get(f"{s.url}/models", headers={"Host": "attacker.example"}), 400, "invalid_host")
        assert httpx.get(f"{s.url}/models", headers={"Host": f"localhost:{s.port}"}).status_code == 200
    with ServedPool(_router(tmp_path, [small]), allowed_hosts=("pool.lan",)) as s:
        assert httpx.get(f"{s.url}/models", headers={"Host": f"pool.lan:{s.port}"}).status_code == 200
        _is_error(httpx.get(f"{s.url}/models", headers={"Host": "attacker.example"}), 400, "invalid_host")


def test_feedback_counts_once_per_request_and_its_source_is_bounded(tmp_path, small):
    r = _router(tmp_path, [small])
    with ServedPool(r) as s:
        req = _chat(s.url, "small", max_tokens=2, metadata={"context": "qa"}).json()["k1"]["request"]
        assert httpx.post(f"{s.url}/feedback", json={"request": req, "success": 0}).status_code == 200
        for _ in range(50):  # replays of one failure
            _is_error(httpx.post(f"{s.url}/feedback", json={"request": req, "success": 0}), 409, "feedback_exists")
        assert r.store.trust("qa")[("small", "qa")] == (0.0, 1.0)
        assert r.metabolism.state != "CRISIS"
        req2 = _chat(s.url, "small", "x", max_tokens=2).json()["k1"]["request"]
        _is_error(httpx.post(f"{s.url}/feedback", json={"request": req2, "success": 1, "source": "s" * 5000}), 400)
        _is_error(httpx.post(f"{s.url}/feedback", json={"request": req2, "success": 1, "source": "a b\n"}), 400)


# ---- 3. restarts over stored prompts; prompts longer than a context ---------------------------------------
def test_prompts_longer_than_the_reference_neither_fail_calls_nor_restarts(tmp_path):
    ref = tiny_hf_member("ref", seed=1, hidden=16, layers=1, positions=128)
    wide = tiny_hf_member("wide2", seed=3, hidden=32, positions=4096)
    long = "lorem ipsum dolor " * 50  # 900 bytes: 900 tokens, beyond ref's 128 positions
    r = _router(tmp_path, [ref, wide], reference="ref")
    out = r.generate(long, model="wide2", session="s", max_tokens=2)  # the reference scores what fits
    assert out.member == "wide2"
    r.store.add_experience({"ts": 0, "request": "old", "session": "s", "prompt": long * 3, "response": "",
                            "member": "wide2"})  # what an older version stored
    r.close()
    again = _router(tmp_path, [ref, wide], reference="ref")  # startup never runs stored prompts through a model
    n = len(again.store.ledger())
    with pytest.raises(PromptTooLong, match="128 positions"):
        again.generate(long, model="ref", max_tokens=2)
    assert len(again.store.ledger()) == n and not any(m == "ref" for m, _ in again.store.trust())  # not the member's fault


def test_a_prompt_enters_the_context_history_only_once_answered(tmp_path, small, failing_server):
    remote = OpenAIMember("down", failing_server, retries=0)
    r = _router(tmp_path, [small, remote])
    with pytest.raises(CallFailed):
        r.generate("a question that failed", model="down", session="s")
    assert "a question that failed" not in list(r.contexts.sessions.get("s").prompts if "s" in r.contexts.sessions else [])
    r.generate("a question answered", model="small", session="s", max_tokens=2)
    assert list(r.contexts.sessions["s"].prompts) == ["a question answered"]


def test_a_prompt_too_long_for_the_member_is_a_400(tmp_path, big):
    with ServedPool(_router(tmp_path, [big])) as s:
        _is_error(_chat(s.url, "big", "x" * 2000, max_tokens=2), 400, "context_length_exceeded")
        assert _chat(s.url, "big", max_tokens=2).status_code == 200


# ---- 4. resource limits --------------------------------------------------------------------------------
def test_oversized_bodies_and_stop_lists_are_refused_before_any_work(tmp_path, small):
    r = _router(tmp_path, [small])
    with ServedPool(r) as s:
        t0 = time.time()
        _is_error(_chat(s.url, "small", "x" * (2 << 20)), 413, "request_too_large")
        assert time.time() - t0 < 5
        chunked = (b"x" for _ in range(3))  # no Content-Length: counted as it arrives
        big_chunks = (b"{" + b" " * (600 << 10) for _ in range(3))
        _is_error(httpx.post(f"{s.url}/completions", content=big_chunks, timeout=20), 413)
        _is_error(httpx.post(f"{s.url}/completions", content=chunked, timeout=20), 400)
        _is_error(_chat(s.url, "small", stop=["a", "b", "c", "d", "e"]), 400)
        _is_error(_chat(s.url, "small", stop=["z" * 2000]), 400)
        _is_error(_chat(s.url, "small", max_tokens=10 ** 6), 400)
        assert r.store.ledger() == []
        assert _chat(s.url, "small", max_tokens=2).status_code == 200


def test_a_client_that_gives_up_stops_its_call_which_is_charged_as_cancelled(tmp_path, wide):
    r = _router(tmp_path, [wide])
    with ServedPool(r) as s:
        with pytest.raises(httpx.ReadTimeout):
            _chat(s.url, "wide", max_tokens=4000, timeout=1.0)
        t0 = time.time()
        while time.time() - t0 < 15 and not r.store.ledger():
            time.sleep(0.05)
        rows = r.store.ledger()
        assert [x["path"] for x in rows] == ["cancelled"] and 0 < rows[0]["completion_tokens"] < 4000
        assert r.store.experiences() == []


def test_concurrent_calls_never_spend_past_the_budget(tmp_path, big, small):
    est = big.estimate_cost(big.prompt_tokens([{"role": "user", "content": "hi"}]), 40)
    r = _router(tmp_path, [big, small], budget_atp=2.5 * est)
    with ServedPool(r) as s:
        out = []
        threads = [threading.Thread(target=lambda: out.append(_chat(s.url, "big", max_tokens=40, temperature=1.0)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(x.status_code for x in out).count(200) >= 1
        assert all(x.status_code in (200, 429) for x in out)
        assert r.store.spent() <= r.settings.budget_atp


# ---- 5. concurrency ------------------------------------------------------------------------------------
def test_members_answer_at_the_same_time(tmp_path, wide, small):
    with ServedPool(_router(tmp_path, [wide, small])) as s:
        body = {"model": "wide", "prompt": "go", "max_tokens": 3000, "stream": True}
        with httpx.stream("POST", f"{s.url}/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()  # kept open: leaving the loop of a stream's lines closes the connection
            while not next(lines).startswith("data:"):
                pass  # wide is answering, and holds its turn
            t0 = time.time()
            r = _chat(s.url, "small", max_tokens=2, timeout=5)  # waited for wide's 3,000 tokens before
            assert r.status_code == 200 and time.time() - t0 < 5
            assert s.router.gates["wide"].busy  # wide is still answering


def test_a_full_queue_answers_503_at_once(tmp_path, wide):
    with ServedPool(_router(tmp_path, [wide]), limits=Limits(queue=0)) as s:
        body = {"model": "wide", "prompt": "go", "max_tokens": 3000, "stream": True}
        with httpx.stream("POST", f"{s.url}/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()  # kept open: leaving the loop of a stream's lines closes the connection
            while not next(lines).startswith("data:"):
                pass
            t0 = time.time()
            _is_error(_chat(s.url, "wide", max_tokens=2, timeout=5), 503, "member_busy")
            assert time.time() - t0 < 3


# ---- 6. failures route on; remote members are not trusted ----------------------------------------------
def test_a_failing_member_is_retried_on_the_next_candidate_then_cooled_down(tmp_path, small, failing_server):
    remote = OpenAIMember("down", failing_server, retries=0, breaker_failures=100)
    r = _router(tmp_path, [remote, small], Limits(cooldown_after=2, cooldown_s=600), selection="greedy",
                cost_weight=0.0)
    for ctx in TASK_CLASSES:  # trust is keyed by task class
        for _ in range(20):
            r.store.record_outcome("down", ctx, 1.0, "seed")  # the pool trusts it: it is chosen first
    answered = [r.generate(f"question {i}", max_tokens=2, session="s") for i in range(6)]
    assert {a.member for a in answered} == {"small"}
    failures = [x for x in r.store.ledger() if x["member"] == "down"]
    assert [x["path"] for x in failures] == ["failure", "failure"]  # then cooled down, no longer tried
    assert sum(f for (m, _), (_, f) in r.store.trust().items() if m == "down") == 2
    assert r.cooled("down") and not r.cooled("small")


def test_a_failing_member_fails_over_through_the_server(tmp_path, small, failing_server):
    remote = OpenAIMember("down", failing_server, retries=0)
    r = _router(tmp_path, [remote, small], selection="greedy", cost_weight=0.0)
    for ctx in TASK_CLASSES:
        for _ in range(20):
            r.store.record_outcome("down", ctx, 1.0, "seed")
    with ServedPool(r) as s:
        resp = _chat(s.url, "auto", "first words", max_tokens=2)
        assert resp.status_code == 200 and resp.json()["model"] == "small"
        req = resp.json()["k1"]["request"]
        assert [(x["member"], x["path"]) for x in _rows(r, req)] == [("down", "failure"), ("small", "success")]
        _is_error(_chat(s.url, "down", max_tokens=2), 502)  # a pinned member's failure is the answer


def test_negative_usage_never_refunds_the_budget(hostile_server):
    m = OpenAIMember("liar", hostile_server("negative"), retries=0, price_per_1k_tokens=1.0)
    g = m.generate("some prompt", max_tokens=4)
    assert g.prompt_tokens >= 0 and g.completion_tokens >= 0 and g.cost.atp >= 0


def test_a_flood_is_cut_off_and_a_trickle_meets_its_deadline(hostile_server):
    m = OpenAIMember("flood", hostile_server("flood"), retries=0, max_response_bytes=1 << 20)
    with pytest.raises(CallFailed, match="bytes"):
        m.generate("hi", max_tokens=5)
    m = OpenAIMember("trickle", hostile_server("trickle"), retries=0, timeout_s=5, deadline_s=1.0)
    t0 = time.time()
    with pytest.raises(CallFailed) as e:
        m.generate("hi", max_tokens=5)
    assert e.value.reason == "timeout" and time.time() - t0 < 4


# ---- 7. every error is an OpenAI error object --------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "seed": 1180591620717411303424}',
    b'{"model": "small", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    b'{"model": "small", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "stop": ["\\udfff"]}',
    b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "user": "\\ud800"}',
    b'[1, 2]',
    b'{"model": "small", "messages": [{"role": "user", "content": "x"}], "metadata": {"context": 5}}',
])
def test_bad_inputs_get_openai_errors_not_a_plain_500(tmp_path_factory, small, raw):
    r = _router(tmp_path_factory.mktemp("bad"), [small])
    with ServedPool(r) as s:
        resp = httpx.post(f"{s.url}/chat/completions", content=raw, headers={"Content-Type": "application/json"},
                          timeout=20)
        _is_error(resp, 400)
        json.dumps(resp.json())


def test_the_serve_command_takes_its_key_from_a_file_and_stops_on_sigterm(tmp_path, hf_dir):
    import os
    import signal
    import subprocess
    import sys

    from k1.pool.testing import free_port

    pool = tmp_path / "pool.toml"
    pool.write_text(f'[pool]\nstore = "pool.sqlite"\n\n[[members]]\nname = "tiny"\nkind = "hf"\npath = "{hf_dir}"\n')
    key = tmp_path / "key"
    key.write_text("k3y\n")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(pool), "--port", str(port),
                             "--api-key-file", str(key)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        t0 = time.time()
        while True:
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() - t0 < 60, proc.stdout.read().decode()[-2000:]
                time.sleep(0.2)
        _is_error(_chat(url, "tiny", max_tokens=2), 401)
        r = httpx.post(f"{url}/chat/completions", headers={"Authorization": "Bearer k3y"}, timeout=20,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200
        assert b"k3y" not in " ".join(proc.args).encode()  # never on the command line
        proc.send_signal(signal.SIGTERM)
        # a graceful stop within 15 s: uvicorn shuts down, then re-raises the signal it caught (status -15 or 0)
        assert proc.wait(15) in (0, -signal.SIGTERM)
        out = proc.stdout.read().decode()
        assert "Traceback" not in out and "Error" not in out, out[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unknown_paths_and_methods_are_openai_errors(tmp_path, small):
    with ServedPool(_router(tmp_path, [small])) as s:
        _is_error(httpx.get(f"{s.url}/nope"), 404, "not_found")
        _is_error(httpx.get(f"{s.url}/chat/completions"), 405, "method_not_allowed")
        _is_error(httpx.post(f"{s.url}/chat/completions", content=b"a=1",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}), 400)
