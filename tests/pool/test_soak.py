"""Soak: many mixed requests against a real `k1 pool serve` process — streamed and not, cancelled at random
points, given up on, malformed, oversized, feedback and its replays, concurrent — with restarts (SIGTERM,
then start again on the same store) in the middle. Then: the server still answers, no member is held,
every answer's charge is the ledger's row for it and the ledger holds nothing else, trust counts equal the
feedback accepted, and the server's memory stayed bounded.

Two tenants share the server (a keys file): "good" and "hostile". The hostile one also sends feedback for the
good one's requests (404), names task classes the pool does not know (400), peeks at /v1/pool (no prompts),
sends prompts of random CJK text and more requests than its concurrency allows (429); the good one never
gets a 429 nor sees its requests judged by the other.

The default suite runs a short version (120 requests, one restart); `-m slow` runs 1,000 with three.
Each run prints its figures as one JSON line (`soak: {...}`)."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from k1.pool.store import PoolStore
from k1.pool.testing import free_port, serving_within

GOOD, HOSTILE = "soak-good-key-0123456789", "soak-hostile-key-0123456789"
AUTH = {"Authorization": f"Bearer {GOOD}"}
KEYS = f"""
[[tenant]]
name = "good"
key = "{GOOD}"
concurrency = 16

[[tenant]]
name = "hostile"
key = "{HOSTILE}"
concurrency = 2
budget_share = 0.5
"""


class Server:
    def __init__(self, pool_file, port, keys_file):
        self.pool_file, self.port, self.proc, self.keys_file = pool_file, port, None, keys_file
        self.url = f"http://127.0.0.1:{port}/v1"

    def start(self):
        env = {k: v for k, v in os.environ.items() if k != "K1_POOL_API_KEY"} | {"OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(self.pool_file),
                                      "--port", str(self.port), "--keys-file", str(self.keys_file)], env=env,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        assert serving_within(self.url, self.proc, 120), \
            "k1 pool serve did not start: " + (self.proc.stderr.read().decode()[-3000:] if self.proc.poll() is not None else "")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("k1 pool serve ignored SIGTERM")

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss


def _check_error(r: httpx.Response, statuses) -> None:
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)


def _check_answer(body: dict, kind: str) -> dict:
    assert body["object"] == ("chat.completion" if kind == "chat" else "text_completion")
    choice = body["choices"][0]
    assert isinstance(choice["message"]["content"] if kind == "chat" else choice["text"], str)
    assert body["usage"]["completion_tokens"] >= 0 and body["k1"]["cost"]["atp"] >= 0
    return body["k1"]


class Tally(Counter):
    """Counts from several client threads."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self[key] += n


HOSTILE_KINDS = ["steal_feedback", "bad_class", "peek", "cjk"]


def _one(url: str, rng: random.Random, answered: list, stats: Tally, hostile: bool = False,
         victims: list | None = None) -> None:
    """One random request; what it got back is checked, its outcome counted. `answered` holds this tenant's
    answers; `victims` the other tenant's (the hostile one tries to judge them)."""
    kinds = ["chat", "completion", "stream", "cancel", "give_up", "malformed", "oversized", "too_many_stops",
             "feedback", "pool", "no_key"] + (HOSTILE_KINDS if hostile else [])
    kind = rng.choices(kinds, weights=[20, 10, 12, 12, 3, 8, 3, 4, 12, 3, 3] + ([6, 4, 3, 3] if hostile else []))[0]
    model = rng.choice(["auto", "a", "b"])
    n = rng.randint(1, 12)
    msgs = [{"role": "user", "content": f"soak {rng.random():.6f} " * rng.randint(1, 4)}]
    who = "hostile" if hostile else "good"
    stats.add(f"{who}:{kind}", 1)
    busy = {503, 429} if hostile else {503}  # a full queue is an answer; the hostile tenant also meets its limit
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {HOSTILE if hostile else GOOD}"},
                      timeout=60) as c:
        if kind in ("chat", "completion"):
            body = {"model": model, "max_tokens": n, "user": f"s{rng.randint(0, 5)}"}
            path = "/chat/completions" if kind == "chat" else "/completions"
            body |= {"messages": msgs} if kind == "chat" else {"prompt": msgs[0]["content"]}
            r = c.post(path, json=body)
            if r.status_code in busy:
                _check_error(r, busy)
                stats.add(f"{who}:{r.status_code}", 1)
                return
            assert r.status_code == 200, r.text[:300]
            answered.append(_check_answer(r.json(), kind))
        elif kind in ("stream", "cancel"):
            body = {"model": model, "max_tokens": n, "messages": msgs, "stream": True,
                    "stream_options": {"include_usage": True}}
            stop_after = rng.randint(0, n + 2) if kind == "cancel" else None
            with c.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    _check_error(r, busy)
                    stats.add(f"{who}:{r.status_code}", 1)
                    return
                events = 0
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    assert "error" not in chunk, chunk
                    assert chunk["object"] == "chat.completion.chunk"
                    if chunk.get("k1"):
                        answered.append(chunk["k1"])
                    events += 1
                    if stop_after is not None and events > stop_after:
                        stats.add("cancelled", 1)
                        break  # leaves the loop: the connection closes mid-stream
        elif kind == "give_up":
            try:
                r = c.post("/chat/completions", json={"model": model, "max_tokens": 400, "messages": msgs},
                           timeout=0.05)
                assert r.status_code in busy | {200}, r.text[:300]
            except httpx.TimeoutException:
                stats.add("gave_up", 1)
        elif kind == "malformed":
            junk = rng.choice([b"{", b"[]", b'{"model": 5}', b'{"model": "a", "messages": "x"}', bytes(
                rng.getrandbits(8) for _ in range(rng.randint(1, 200))),
                b'{"model": "a", "messages": [{"role": "user", "content": "\\ud800"}]}',
                b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "seed": 99999999999999999999}'])
            _check_error(c.post("/chat/completions", content=junk, headers={"Content-Type": "application/json"}),
                         {400, 422} | busy)
        elif kind == "oversized":
            size = rng.randint(1 << 20 | 1, 3 << 20)
            _check_error(c.post("/completions", content=b"x" * size, headers={"Content-Type": "application/json"}),
                         {413})
            stats.add("bytes_refused", size)
        elif kind == "too_many_stops":
            _check_error(c.post("/chat/completions", json={"model": model, "messages": msgs,
                                                           "stop": ["x" * 10] * rng.randint(5, 40)}), {400} | busy)
        elif kind == "feedback":
            if not answered:
                _check_error(c.post("/feedback", json={"request": "nope", "success": 1}), {404})
                return
            k1 = rng.choice(answered)
            r = c.post("/feedback", json={"request": k1["request"], "success": rng.choice([0, 1])})
            if r.status_code == 200:
                stats.add("feedback_accepted", 1)
            else:
                _check_error(r, {409})
        elif kind == "pool":
            assert c.get("/pool").status_code == 200
        elif kind == "no_key":
            _check_error(httpx.post(f"{url}/chat/completions", json={"model": "a", "messages": msgs}), {401})
        elif kind == "steal_feedback":  # another tenant's request id is unknown to it
            if victims:
                _check_error(c.post("/feedback", json={"request": rng.choice(victims)["request"], "success": 0}),
                             {404})
                stats.add("stolen_feedback_refused", 1)
        elif kind == "bad_class":
            r = c.post("/chat/completions", json={"model": model, "max_tokens": 1, "messages": msgs,
                                                  "metadata": {"task_class": f"junk{rng.randint(0, 10 ** 6)}"}})
            _check_error(r, {400} | busy)
        elif kind == "peek":
            r = c.get("/pool")
            assert r.status_code == 200 and "recent" not in r.json() and "soak " not in r.text
        elif kind == "cjk":
            text = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1000, 200_000)))
            r = c.post("/chat/completions", json={"model": model, "max_tokens": 1,
                                                  "messages": [{"role": "user", "content": text}]})
            assert r.status_code in {200, 400} | busy, r.text[:300]


def soak(tmp_path, hf_dir, n: int, restarts: int, workers: int = 6, seed: int = 0) -> dict:
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[pool]\nstore = "pool.sqlite"\nbudget_atp = 1e9\nseed = 0\n\n'
                    f'[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n\n'
                    f'[[members]]\nname = "b"\nkind = "hf"\npath = "{hf_dir}"\n')
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    keys.chmod(0o600)
    server = Server(pool, free_port(), keys)
    server.start()
    rng = random.Random(seed)
    answered: list[dict] = []
    hostile: list[dict] = []
    stats = Tally()
    rss = []
    t0 = time.time()
    try:
        cuts = {round(n * (i + 1) / (restarts + 1)) for i in range(restarts)}
        done = 0
        with ThreadPoolExecutor(workers) as ex:
            while done < n:
                batch = min(n - done, 40)
                seeds = [(rng.random(), rng.random() < 0.3) for _ in range(batch)]
                for f in [ex.submit(_one, server.url, random.Random(s), hostile if bad else answered, stats, bad,
                                    answered) for s, bad in seeds]:
                    f.result()
                done += batch
                rss.append(server.rss())
                if any(done - batch < c <= done for c in cuts) and done < n:
                    server.stop()
                    server.start()
                    stats.add("restarts", 1)
        # still answers, and no member is held: each answers at once
        for m in ("a", "b"):
            r = httpx.post(f"{server.url}/chat/completions", headers=AUTH, timeout=15,
                           json={"model": m, "max_tokens": 2, "messages": [{"role": "user", "content": "alive?"}]})
            assert r.status_code == 200, r.text[:300]
            answered.append(r.json()["k1"])
        rss.append(server.rss())
    finally:
        server.stop()
    store = PoolStore(tmp_path / "pool.sqlite")
    ledger = store.ledger(10_000_000)
    by_request: dict[str, list[dict]] = {}
    for row in ledger:  # the answers' own rows (a background self-verification adds a 0-ATP "verify" row)
        if row["kind"] == "request":
            by_request.setdefault(row["request"], []).append(row)
    assert all(r["kind"] in ("request", "verify") and (r["kind"] == "request" or r["atp"] == 0) for r in ledger)
    for k1 in answered + hostile:  # each answer's charge is exactly its ledger row, under its tenant
        rows = by_request[k1["request"]]
        assert [r["path"] for r in rows] == ["success"], rows
        assert rows[0]["atp"] == pytest.approx(k1["cost"]["atp"])
        assert rows[0]["tenant"] == ("good" if k1 in answered else "hostile")
    assert stats["good:429"] == 0  # the hostile tenant's load never turned the good one away
    answered = answered + hostile
    assert all(len(rows) == 1 and rows[0]["path"] in ("success", "cancelled") for rows in by_request.values())
    answered_atp = sum(k1["cost"]["atp"] for k1 in answered)
    other_atp = sum(r["atp"] for r in ledger if r["request"] not in {k1["request"] for k1 in answered})
    assert store.spent() == pytest.approx(answered_atp + other_atp)
    outcomes = sum(s + f for s, f in store.trust().values())
    assert outcomes == pytest.approx(stats["feedback_accepted"])  # one per accepted feedback, none lost
    store.close()
    growth = max(rss) - rss[0]
    assert growth < 400 << 20, f"server RSS grew by {growth >> 20} MB"
    figures = {"requests": n, "workers": workers, "seconds": round(time.time() - t0, 1), "answered": len(answered),
               "ledger_rows": len(ledger), "cancelled_rows": sum(r["path"] == "cancelled" for r in ledger),
               "rss_start_mb": rss[0] >> 20, "rss_max_mb": max(rss) >> 20, "hostile_answered": len(hostile), **stats}
    print("soak:", json.dumps(figures))
    return figures


def test_soak_short(tmp_path, hf_dir):
    f = soak(tmp_path, hf_dir, n=120, restarts=1)
    assert f["restarts"] == 1 and f["answered"] > 20


@pytest.mark.slow
def test_soak_full(tmp_path, hf_dir):
    f = soak(tmp_path, hf_dir, n=1000, restarts=3, workers=8, seed=1)
    assert f["restarts"] == 3 and f["answered"] > 200
