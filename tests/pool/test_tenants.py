"""Several users on one server, attacked as a key holder would: each finding of the multi-tenant review is a
test here that failed before tenants existed (one key, one cache, one classifier, one lock for everyone).

Tenants come from a keys file; "mallory" is an untrusted tenant, "alice" another, "root" the admin."""

import random
import socket
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from k1.errors import ConfigError
from k1.pool.config import PoolSettings
from k1.pool.errors import BudgetExhausted, PromptTooLong
from k1.pool.members.base import CallFailed
from k1.pool.members.k1 import K1Member
from k1.pool.members.openai import OpenAIMember
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.route.taskclass import learned_examples
from k1.pool.server.serving import QuietErrors
from k1.pool.server.thread import ServedPool
from k1.pool.store import PoolStore
from k1.pool.tenants import Tenant, Tenants
from k1.pool.testing import tiny_hf_member

ALICE, MALLORY, ROOT = "alice-key-0123456789", "mallory-key-0123456789", "root-key-0123456789"
KEYS = f"""
[[tenant]]
name = "alice"
key = "{ALICE}"
concurrency = 2

[[tenant]]
name = "mallory"
key = "{MALLORY}"
concurrency = 2
budget_share = 0.5

[[tenant]]
name = "root"
key = "{ROOT}"
admin = true
"""


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def tenants(tmp_path) -> Tenants:
    p = tmp_path / "keys.toml"
    p.write_text(KEYS)
    p.chmod(0o600)
    return Tenants.from_file(p)


@pytest.fixture(scope="module")
def small():
    return tiny_hf_member("small", seed=2, hidden=16, layers=1)


@pytest.fixture(scope="module")
def cached():  # a member with a KV prefix cache, alone in its pools (no other test's prompts in its cache)
    return tiny_hf_member("cached", seed=4, hidden=64, init=0.1)


@pytest.fixture(scope="module")
def wide():  # slow enough that a long answer takes seconds
    return tiny_hf_member("wide", seed=3, hidden=256, layers=4, positions=4096)


def _router(tmp_path, members, **settings):
    settings.setdefault("seed", 0)
    settings.setdefault("budget_atp", 1e6)
    return Router(Pool(members, PoolSettings(**settings)), PoolStore(tmp_path / "pool.sqlite"))


def _chat(url, key, text="hi", model="auto", timeout=30, **kw):
    return httpx.post(f"{url}/chat/completions", headers=_auth(key), timeout=timeout,
                      json={"model": model, "messages": [{"role": "user", "content": text}], **kw})


# ---- the keys file ---------------------------------------------------------------------------------------
def test_a_keys_file_names_tenants_and_is_refused_when_others_can_read_it(tmp_path, tenants):
    assert tenants.find(ALICE).name == "alice" and tenants.find(ROOT).admin and tenants.find("nope") is None
    assert not tenants.find(MALLORY).trusted and tenants.find(ROOT).trusted
    p = tmp_path / "open.toml"
    p.write_text(KEYS)
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Tenants.from_file(p)
    p.chmod(0o600)
    p.write_text('[[tenant]]\nname = "x"\nkey = "short"\n')
    with pytest.raises(ConfigError) as e:
        Tenants.from_file(p)
    assert "short" not in str(e.value)  # an error never echoes a key
    p.write_text('[[tenant]]\nname = "operator"\nkey = "0123456789abcdefgh"\n')
    with pytest.raises(ConfigError, match="operator"):  # would share the operator's sessions and requests
        Tenants.from_file(p)


# ---- 1. one uncharged request froze the server ------------------------------------------------------------
def test_classifying_a_huge_prompt_is_bounded_and_holds_no_lock(tmp_path, small, wide):
    r = _router(tmp_path, [small, wide], task_classes=[f"label{i}" for i in range(50)])
    rng = random.Random(0)
    huge = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(64 * 1024))  # random CJK: all n-grams distinct
    t0 = time.perf_counter()
    with pytest.raises(PromptTooLong):
        r.generate(huge, model="small", max_tokens=1)
    assert time.perf_counter() - t0 < 5.0  # the classifiers read a bounded head (before: 54 classes × 256k n-grams)
    # while a call runs, another member's call is never held by the router's own locks
    done = threading.Event()
    threading.Thread(target=lambda: (r.generate("a long answer", model="wide", max_tokens=400), done.set()),
                     daemon=True).start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    r.generate("hi", model="small", max_tokens=2)
    assert time.perf_counter() - t0 < 3.0 and not done.is_set()
    done.wait(60)


def test_a_client_names_only_task_classes_from_the_fixed_set(tmp_path, tenants, small):
    r = _router(tmp_path, [small])
    with ServedPool(r, tenants=tenants) as s:
        for i in range(3):
            resp = _chat(s.url, MALLORY, max_tokens=1, metadata={"task_class": f"junk-{i}"})
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_task_class"
        resp = _chat(s.url, MALLORY, max_tokens=1, metadata={"context": "junk-old-name"})
        assert resp.status_code == 400
        ok = _chat(s.url, MALLORY, max_tokens=1, metadata={"task_class": "arithmetic"})
        assert ok.status_code == 200 and ok.json()["k1"]["task_class"] == "arithmetic"
        assert ok.json()["k1"]["context"] == "arithmetic"  # the old field, readable for one more release
    assert not any(c.startswith("junk") for (_, c) in r.store.trust())


# ---- 2. another user's prompt read back through the KV prefix cache ---------------------------------------
def test_the_prefix_cache_is_salted_per_tenant_so_costs_reveal_no_other_tenants_prompt(tmp_path, tenants, cached):
    r = _router(tmp_path, [cached])
    secret = "my bank PIN is 48213377, keep it"
    cold = tiny_hf_member("cold", seed=4, hidden=64, init=0.1)
    cold.enable_prefix_cache(0)
    want = cold.generate([{"role": "user", "content": secret}], max_tokens=1).cost.flops
    with ServedPool(r, tenants=tenants) as s:
        assert _chat(s.url, ALICE, secret, model="cached", max_tokens=1).status_code == 200  # the victim
        guess = _chat(s.url, MALLORY, secret, model="cached", max_tokens=1).json()["k1"]["cost"]["flops"]
        again = _chat(s.url, ALICE, secret, model="cached", max_tokens=1).json()["k1"]["cost"]["flops"]
    assert guess == want  # the attacker's right guess costs what a cold run costs: no hit to see
    assert again < want  # a tenant still reuses its own prefixes


def test_the_k1_members_cache_is_salted_too(tmp_path, k1_run):
    from k1.engine.run.generate import load_run_model

    model, tok, _ = load_run_model(k1_run)
    r = _router(tmp_path, [K1Member(model, tok, "k")])
    alice, mallory = Tenant("alice"), Tenant("mallory")
    cold = K1Member(model, tok, "k", prefix_cache=0).generate("the king said", max_tokens=1).cost.flops
    r.generate("the king said", model="k", max_tokens=1, tenant=alice)
    assert r.generate("the king said", model="k", max_tokens=1, tenant=mallory).generation.cost.flops == cold
    assert r.generate("the king said", model="k", max_tokens=1, tenant=alice).generation.cost.flops < cold


# ---- 3. any client retrained the task classifier for everyone ---------------------------------------------
def test_an_untrusted_tenants_labels_never_teach_the_classifier(tmp_path, tenants, small):
    r = _router(tmp_path, [small])
    mallory, root = tenants.find(MALLORY), tenants.find(ROOT)
    for i in range(40):
        r.generate(f"What is {i} + {i + 3}?", model="small", max_tokens=1, tenant=mallory, task_class="facts")
    out = r.generate("What is 5 + 9?", model="small", max_tokens=1, tenant=mallory)
    r.feedback(out.request, 0.0, task_class="facts", tenant=mallory)
    r.refit_task_classes()
    assert r.task_classes.classify("What is 12 + 30?") == "arithmetic"
    # the admin's labels are learnt
    for i in range(40):
        r.generate(f"Translate word {i} into French.", model="small", max_tokens=1, tenant=root,
                   task_class="translate")
    r.refit_task_classes()
    assert r.task_classes.classify("Translate 'bread' into French.") == "translate"


def test_the_calibration_prompts_stay_in_the_training_set_however_many_labels_come(tmp_path, small):
    r = _router(tmp_path, [small])
    rows = [{"cls": "arithmetic", "task": f"t{i}", "prompt": f"What is {i} + 1?", "response": "", "score": 1.0,
             "atp": 1.0} for i in range(5)]
    r.store.set_calibration("small", rows)
    for i in range(30):
        r.generate(f"Tell me about topic {i}.", model="small", max_tokens=1, task_class="facts")
    learned = learned_examples(r.store, 10)
    assert sum(1 for _, c in learned if c == "arithmetic") == 5 and len(learned) == 15


# ---- 4. global state one key holder could steer or read ---------------------------------------------------
def test_one_tenant_cannot_force_crisis_nor_read_others_prompts(tmp_path, tenants, small):
    r = _router(tmp_path, [small])
    with ServedPool(r, tenants=tenants) as s:
        victim = _chat(s.url, ALICE, "alice's private question", model="small", max_tokens=1).json()["k1"]["request"]
        for _ in range(5):
            req = _chat(s.url, MALLORY, model="small", max_tokens=1).json()["k1"]["request"]
            assert httpx.post(f"{s.url}/feedback", headers=_auth(MALLORY),
                              json={"request": req, "success": 0}).status_code == 200
        assert r.metabolism.state != "CRISIS"
        # feedback only for one's own requests: another tenant's id is unknown to it
        resp = httpx.post(f"{s.url}/feedback", headers=_auth(MALLORY), json={"request": victim, "success": 0})
        assert resp.status_code == 404
        seen = httpx.get(f"{s.url}/pool", headers=_auth(MALLORY))
        assert seen.status_code == 200 and "private question" not in seen.text and "recent" not in seen.json()
        admin = httpx.get(f"{s.url}/pool", headers=_auth(ROOT)).json()
        assert any("private question" in e["prompt"] for e in admin["recent"])
        # the admin may judge any request, and its failures do move the state
        assert httpx.post(f"{s.url}/feedback", headers=_auth(ROOT),
                          json={"request": victim, "success": 0}).status_code == 200


def test_a_tenants_budget_share_stops_it_and_nobody_else(tmp_path, tenants, small):
    budget = 20 * small.estimate_cost(8, 8)
    r = _router(tmp_path, [small], budget_atp=budget)
    mallory, alice = tenants.find(MALLORY), tenants.find(ALICE)
    with pytest.raises(BudgetExhausted):
        for _ in range(200):
            r.generate("spend", model="small", max_tokens=8, tenant=mallory)
    assert 0 < r.store.spent("mallory") <= 0.5 * budget
    r.generate("mine", model="small", max_tokens=2, tenant=alice)


# ---- 5. fairness ------------------------------------------------------------------------------------------
def test_one_tenant_cannot_hold_every_worker(tmp_path, tenants, wide, small):
    r = _router(tmp_path, [wide, small])
    with ServedPool(r, tenants=tenants) as s, ThreadPoolExecutor(24) as ex:
        flood = [ex.submit(_chat, s.url, MALLORY, "go on", "wide", 60, max_tokens=300) for _ in range(20)]
        time.sleep(1.0)
        t0 = time.perf_counter()
        resp = _chat(s.url, ALICE, model="small", max_tokens=2)
        waited = time.perf_counter() - t0
        codes = sorted(f.result().status_code for f in flood)
    assert resp.status_code == 200 and waited < 5
    assert codes.count(429) >= 17  # mallory's limit is 2 in flight: the rest are refused at once


def test_a_half_sent_header_is_dropped(tmp_path, small):
    with ServedPool(_router(tmp_path, [small]), header_timeout_s=1.0) as s:
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(5)
        t0 = time.perf_counter()
        assert sock.recv(1024) == b""  # closed by the server
        assert time.perf_counter() - t0 < 4
        sock.close()


def test_accept_errors_are_logged_once_per_period_not_once_each(caplog):
    handler = QuietErrors(every_s=10.0, clock=lambda: 0.0)
    with caplog.at_level("ERROR"):
        for _ in range(10_000):
            handler(None, {"message": "socket.accept() out of system resource", "exception": OSError(24, "EMFILE")})
    assert len(caplog.records) == 1


SERVE_WITH_64_FDS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from k1.pool.server.serving import server
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
server(app, "127.0.0.1", int(sys.argv[1]), max_connections=10_000).run()
"""


def test_running_out_of_file_descriptors_does_not_flood_the_log(tmp_path):
    """Measured before: uvicorn's default loop wrote 11.6 MB of accept() tracebacks in 8 s under this load."""
    import subprocess
    import sys

    from k1.pool.testing import free_port

    port, log = free_port(), tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_WITH_64_FDS, str(port)], stdout=out, stderr=out)
        try:
            t0 = time.time()
            while time.time() - t0 < 30:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            socks = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(150)]
            time.sleep(4)
            for c in socks:
                c.close()
        finally:
            proc.terminate()
            proc.wait(10)
    assert log.stat().st_size < 10_000, log.read_text()[:500]


# ---- 6. remote members' charges escaped the reservation ---------------------------------------------------
@pytest.mark.parametrize("mode", ["bigreply", "hugeusage", "overlong"])
def test_a_remote_members_charge_never_exceeds_its_reservation(tmp_path, hostile_server, mode):
    m = OpenAIMember("liar", hostile_server(mode), retries=0, price_per_1k_tokens=1.0)
    r = _router(tmp_path, [m], budget_atp=100.0)
    reserve = m.estimate_cost(m.prompt_tokens("hello"), 5)
    with pytest.raises(CallFailed):  # each of these answers is a lie: the call fails, charged what was reserved
        r.generate("hello", model="liar", max_tokens=5)
    assert 0 < r.store.spent() <= reserve + 1e-9


def test_completion_tokens_above_max_tokens_are_invalid(hostile_server):
    for mode in ("bigreply", "overlong", "hugeusage"):
        with pytest.raises(CallFailed):
            OpenAIMember("liar", hostile_server(mode), retries=0).generate("hi", max_tokens=5)


# ---- 7. the CSRF protection's dependency ------------------------------------------------------------------
def test_fastapi_lower_bound_has_the_strict_content_type_default():
    deps = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    fastapi = next(d for d in deps["optional-dependencies"]["pool"] if d.startswith("fastapi"))
    assert tuple(int(x) for x in fastapi.split(">=")[1].split(",")[0].split(".")) >= (0, 132)


def test_a_text_plain_body_from_a_web_page_is_refused(tmp_path, small):
    with ServedPool(_router(tmp_path, [small])) as s:
        r = httpx.post(f"{s.url}/chat/completions", headers={"Content-Type": "text/plain"},
                       content=b'{"model": "small", "messages": [{"role": "user", "content": "x"}]}')
        assert r.status_code in (400, 415, 422) and "error" in r.json()


# ---- a probe measures the pool without teaching it -------------------------------------------------------
def test_a_probe_tenants_calls_are_charged_and_teach_the_pool_nothing(tmp_path, small):
    """A bench's baselines (the same prompts pinned to each member) must not feed the pool: before probes, every
    pinned call was self-verified, recorded as an experience and moved its member's trust."""
    import sqlite3

    p = tmp_path / "keys.toml"
    p.write_text(KEYS + '\n[[tenant]]\nname = "bench"\nkey = "probe-key-0123456789"\nprobe = true\n')
    p.chmod(0o600)
    tenants = Tenants.from_file(p)
    assert tenants.find("probe-key-0123456789").probe and not tenants.find(ALICE).probe
    r = _router(tmp_path, [small])
    r.verifiers = lambda task_class: (lambda prompt, answer: 1.0)  # every answer verifiable: self-verification runs
    db = sqlite3.connect(tmp_path / "pool.sqlite")

    def rows(table):
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    with ServedPool(r, tenants=tenants) as s:
        probe = _chat(s.url, "probe-key-0123456789", "7 + 5 = ?", model="small", max_tokens=2)
        assert probe.status_code == 200
        time.sleep(0.5)  # a background verification would have run by now
        assert (rows("experiences"), rows("outcomes")) == (0, 0)
        assert db.execute("SELECT COUNT(*) FROM ledger WHERE tenant = 'bench'").fetchone()[0] == 1  # charged
        req = probe.json()["k1"]["request"]
        assert httpx.post(f"{s.url}/feedback", headers=_auth("probe-key-0123456789"),
                          json={"request": req, "success": 1}).status_code == 404  # nothing to judge
        assert _chat(s.url, ALICE, "7 + 5 = ?", model="small", max_tokens=2).status_code == 200
        for _ in range(50):  # the ordinary tenant's call is recorded and self-verified
            if rows("outcomes"):
                break
            time.sleep(0.1)
        assert rows("experiences") == 1 and rows("outcomes") == 1
