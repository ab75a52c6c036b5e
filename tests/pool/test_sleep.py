"""The server's sleep (k1.pool.sleep): when DREAM is due, the lease that lets one process of many run it, and real
`k1 pool serve` processes on 127.0.0.1 that run DREAM by themselves — once per cycle however many replicas see
it due, in a separate process while they keep answering, each replica then taking up the new student without a
restart; a DREAM killed midway gives its lease back and a later cycle runs; a client cannot make cycles come
faster than the pool file allows."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from k1.pool.sleep.lease import HeldLease
from k1.pool.sleep.scheduler import CYCLE_KEY, due, last_cycle
from k1.pool.sleep.settings import DreamSettings
from k1.pool.store import PoolStore
from k1.pool.testing import free_port, serving_within


def _experience(store, i, outcome=1.0, trusted=True, task_class="prose"):
    return store.add_experience({"ts": time.time(), "request": f"r{i}", "session": "s", "prompt": f"p{i}",
                                 "response": "x", "member": "m", "task_class": task_class, "outcome": outcome,
                                 "importance": 0.5, "tenant": "operator" if trusted else "guest",
                                 "extra": {"label_trusted": trusted}})


def test_dream_is_due_after_enough_verified_experiences_from_trusted_tenants(store_url):
    s = PoolStore(store_url)
    cfg = DreamSettings(mode="auto", after=3, rest_after=2, every_s=60, min_budget_left=0.25)
    for i in range(2):
        _experience(s, i)
    _experience(s, 10, outcome=None)  # not verified
    for i in range(20, 30):
        _experience(s, i, trusted=False)  # an untrusted tenant's: never makes DREAM due
    assert due(s, cfg, "WAKE", 1.0) == (False, "2 of 3 new verified experiences (WAKE)")
    assert due(s, cfg, "REST", 1.0)[0]  # a resting pool sleeps sooner
    _experience(s, 3)
    assert due(s, cfg, "WAKE", 1.0) == (True, "3 new verified experiences (WAKE)")
    assert due(s, cfg, "CRISIS", 1.0)[0]  # a failing pool sleeps too: what it learns are answers a verifier accepted
    assert due(s, cfg, "WAKE", 0.2)[1] == "20% of the budget left (< 25%)"
    now = time.time()
    _, newest = s.verified_since(0)
    s.set_meta(CYCLE_KEY, json.dumps({"n": 1, "started": now, "since": 0, "watermark": newest,
                                      "outcome": "failed (exit 1)", "replica": "x"}))
    assert "the last cycle started 0 s ago" in due(s, cfg, "WAKE", 1.0)[1]  # a failed cycle counts too
    for i in range(40, 45):
        _experience(s, i)
    # the failed cycle consumed nothing: counted from where it counted (0), not from where it began
    assert due(s, cfg, "WAKE", 1.0, now=now + 61) == (True, "8 new verified experiences (WAKE)")
    s.set_meta(CYCLE_KEY, json.dumps({"n": 1, "started": now, "watermark": newest, "outcome": "ok", "replica": "x"}))
    assert due(s, cfg, "WAKE", 1.0, now=now + 61) == (True, "5 new verified experiences (WAKE)")  # since the last
    s.set_meta(CYCLE_KEY, json.dumps({"n": 2, "started": now, "watermark": newest, "outcome": "running",
                                      "replica": "gone-host:1"}))
    assert last_cycle(s)["outcome"].startswith("abandoned")  # its lease is not held: its process died
    s.close()


def test_per_class_dream_is_due_for_the_class_with_the_most_new_verified_experiences(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    for i, cls in enumerate(["prose"] * 2 + ["arithmetic"] * 3 + ["code"] * 4):
        _experience(s, i, task_class=cls)
    cfg = DreamSettings(mode="auto", after=4, per_class=True)
    assert due(s, cfg, "WAKE", 1.0) == (True, "4 new verified experiences of class code (WAKE)")
    only = cfg.model_copy(update={"classes": ["arithmetic", "prose"]})
    assert due(s, only, "WAKE", 1.0) == (False, "3 of 4 new verified experiences of class arithmetic (WAKE)")
    with pytest.raises(ValueError, match="per_class picks the task class"):
        DreamSettings(per_class=True, args=["--task-class", "code"])
    s.close()


def test_dream_settings_in_the_pool_file(tmp_path, hf_dir):
    from k1.errors import ConfigError
    from k1.pool.config import read_pool_config

    f = tmp_path / "pool.toml"
    member = f'[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n'
    f.write_text('[pool]\ndream = "auto"\n' + member)
    assert read_pool_config(f).pool.dream.mode == "auto"
    f.write_text('[pool.dream]\nmode = "auto"\nafter = 8\nargs = ["--k", "8"]\n' + member)
    assert read_pool_config(f).pool.dream.after == 8
    assert read_pool_config(tmp_path / "pool.toml").pool.dream.args == ["--k", "8"]
    for bad in ('[pool]\ndream = "sometimes"\n', '[pool.dream]\nargs = ["--pool", "other.toml"]\n',
                '[pool.dream]\nevery_s = 0\n'):
        f.write_text(bad + member)
        with pytest.raises(ConfigError):
            read_pool_config(f)
    from typer.testing import CliRunner

    from k1.pool.cli import app

    f.write_text(member)
    with pytest.raises(ConfigError, match="--dream sometimes: use auto or off"):
        CliRunner().invoke(app, ["serve", "--pool", str(f), "--dream", "sometimes"], catch_exceptions=False)


def test_a_held_lease_is_renewed_and_a_dead_holders_expires_by_itself(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    a = HeldLease(s, "a", ttl_s=1.5)
    assert a.acquire()
    time.sleep(2.5)  # past its first life: renewed
    assert not HeldLease(s, "b", ttl_s=1.5).acquire() and s.lease_holder("dream") == "a"
    a.release()
    assert s.lease_holder("dream") is None
    code = ("import sys, time; from k1.pool.store import PoolStore; from k1.pool.sleep.lease import HeldLease; "
            f"assert HeldLease(PoolStore({str(tmp_path / 'p.sqlite')!r}), 'doomed', ttl_s=1.5).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert s.lease_holder("dream") == "doomed"
    time.sleep(1.7)
    b = HeldLease(s, "b", ttl_s=1.5)
    assert b.acquire()  # the killed holder's lease ended by itself
    b.release()
    s.close()


# ---- real servers ----------------------------------------------------------------------------------------------

DREAM_ARGS = '["--k", "8", "--epochs", "1", "--max-tokens", "4"]'


def _pool_file(tmp_path, hf_dir, every_s=600, after=4, args=DREAM_ARGS):
    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "pool.sqlite"\nseed = 0\nself_verify = false\n\n'
                 f'[pool.dream]\nmode = "auto"\nafter = {after}\nevery_s = {every_s}\ncheck_s = 0.5\nlease_s = 6\n'
                 f'args = {args}\n\n'
                 f'[[members]]\nname = "teacher"\nkind = "hf"\npath = "{hf_dir}"\nroles = ["teacher"]\n\n'
                 f'[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\nroles = ["student"]\n')
    return f


class Server:
    def __init__(self, pool_file, log, env=None):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}/v1"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(pool_file),
                                          "--port", str(self.port)], stdout=out, stderr=out,
                                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    def wait(self):
        assert serving_within(self.url, self.proc, 180), self.log.read_text(errors="replace")[-3000:]

    def ask(self, text, model="teacher", feedback=1.0):
        r = httpx.post(f"{self.url}/chat/completions", timeout=120, json={
            "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200, r.text
        if feedback is not None:
            assert httpx.post(f"{self.url}/feedback", json={"request": r.json()["k1"]["request"], "success": feedback},
                              timeout=30).status_code == 200
        return r.json()

    def dream(self) -> dict:
        return httpx.get(f"{self.url}/pool", timeout=30).json()["dream"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cycle_lines(self) -> list[str]:
        return [ln for ln in self.log.read_text(errors="replace").splitlines() if "DREAM cycle" in ln]


def _timed(fn, *a, **kw) -> float:
    t = time.perf_counter()
    fn(*a, **kw)
    return round(1000 * (time.perf_counter() - t), 1)


def _until(pred, timeout_s, what):
    end = time.time() + timeout_s
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_two_servers_on_one_store_run_one_dream_and_both_take_up_the_student(tmp_path, hf_dir, backend, request):
    f = _pool_file(tmp_path, hf_dir)
    env = {}
    if backend == "postgres":  # the replicas' shared store on a real Postgres; DREAM's weights in a shared folder
        env = {"K1_POOL_STORE": request.getfixturevalue("pg_server").create_database("sleep_replicas"),
               "K1_POOL_DIR": str(tmp_path / "shared")}
    store = env.get("K1_POOL_STORE", tmp_path / "pool.sqlite")
    a, b = Server(f, tmp_path / "a.log", env), Server(f, tmp_path / "b.log", env)
    try:
        a.wait()
        b.wait()
        assert a.dream()["last"] is None and a.dream()["mode"] == "auto"
        before = [_timed(srv.ask, "are you awake?", feedback=None) for srv in (a, b, a, b)]
        for i in range(3):
            a.ask(f"tell me about the sea {i}")
            b.ask(f"tell me about the hills {i}")  # 6 verified experiences: both servers see DREAM due
        running = _until(lambda: (a.dream()["last"] or {}).get("outcome") == "running" and a.dream()["last"],
                         60, "a DREAM cycle starts")
        here = a if a.dream()["running_here"] else b
        # while DREAM runs in its own process, both servers answer
        t0 = time.time()
        during = [_timed(srv.ask, "are you awake?", feedback=None) for srv in (here, a if here is b else b) * 2]
        t1 = time.time()
        last = _until(lambda: a.dream()["last"]["outcome"] != "running" and a.dream()["last"], 120,
                      "the cycle ends")
        assert last["n"] == 1 and last["outcome"] == "ok", last
        assert last["new_versions"] == {"student": 1} and last["replica"] == running["replica"]
        assert t0 >= last["started"] and t1 <= last["ended"]  # served meanwhile, by both
        print(json.dumps({"backend": backend, "cycle_s": last["seconds"], "request_ms_before": before,
                          "request_ms_during_dream": during}))
        assert last["report"]["student"] == "student"
        for srv in (a, b):  # every replica has the new student loaded, without a restart
            _until(lambda srv=srv: srv.dream()["students_held"] == {"student": 1}, 20, "the student is taken up")
        assert a.proc.poll() is None and b.proc.poll() is None
        # a client sending more verified experiences cannot bring the next cycle before every_s
        for i in range(6):
            a.ask(f"more {i}")
        time.sleep(2)
        assert "the last cycle started" in a.dream()["due"] and a.dream()["last"]["n"] == 1
        assert len(a.cycle_lines()) + len(b.cycle_lines()) == 1  # one line per cycle, on the replica that ran it
        assert PoolStore(store).lease_holder("dream") is None
    finally:
        a.stop()
        b.stop()


def test_a_killed_dream_gives_back_its_lease_and_a_later_cycle_runs(tmp_path, hf_dir):
    f = _pool_file(tmp_path, hf_dir, every_s=3, after=4)
    a = Server(f, tmp_path / "a.log")
    try:
        a.wait()
        for i in range(4):
            a.ask(f"a question {i}")
        st = _until(lambda: a.dream()["pid"] and a.dream(), 30, "a DREAM cycle starts")
        os.kill(st["pid"], signal.SIGKILL)
        last = _until(lambda: a.dream()["last"]["outcome"] != "running" and a.dream()["last"], 30, "it is seen dead")
        assert last["outcome"] == "killed (signal 9)" and last["n"] == 1
        assert PoolStore(tmp_path / "pool.sqlite").lease_holder("dream") is None  # released, not left to expire
        last = _until(lambda: a.dream()["last"]["n"] == 2 and a.dream()["last"]["outcome"] != "running"
                      and a.dream()["last"], 120, "a later cycle runs, on the experiences the killed one left")
        assert last["outcome"] == "ok" and last["new_versions"] == {"student": 1}
        lines = a.cycle_lines()
        assert len(lines) == 2 and "killed" in lines[0] and "new students: student v1" in lines[1]
    finally:
        a.stop()


def test_a_student_unloaded_at_rest_comes_back_with_its_dream_weights(tmp_path, hf_dir):
    import torch

    from k1.pool.learn.weights import save_student
    from k1.pool.session import open_router

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "pool.sqlite"\n\n[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\n')
    r = open_router(f)
    with torch.no_grad():
        for p in r.pool["student"].model.parameters():
            p.add_(0.01)  # what DREAM taught it
    save_student(r, r.pool["student"], None)
    taught = {k: v.clone() for k, v in r.pool["student"].model.state_dict().items()}
    assert r.pool.unload_idle(0.0) == ["student"]  # REST
    back = r.pool["student"].model.state_dict()  # its next use reloads it from the pool file's folder …
    assert all(torch.equal(taught[k], back[k]) for k in taught)  # … with what DREAM taught it, not the base weights
    r.pool.close()
    r.close()


def test_a_call_in_flight_when_a_new_student_arrives_answers_wholly_on_the_old_weights(tmp_path, hf_dir):
    import threading

    import torch

    from k1.pool.learn.weights import save_student
    from k1.pool.session import open_router

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "pool.sqlite"\nseed = 0\nself_verify = false\n\n'
                 f'[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\n')
    a, b = open_router(f), open_router(f)  # two replicas on one store
    prompt, n = "the river ", 40
    old = a.generate(prompt, model="student", max_tokens=n).generation.text
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in b.pool["student"].model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))  # DREAM on replica b
    save_student(b, b.pool["student"], None)
    new = b.generate(prompt, model="student", max_tokens=n).generation.text
    assert new != old
    stream = a.stream(prompt, model="student", max_tokens=n)
    it = iter(stream)
    text = next(it)  # a's student is answering
    took: list = []
    poll = threading.Thread(target=lambda: took.append(a.students.look(force=True, wait=True)))
    poll.start()  # the server's background look, as the new version arrives
    poll.join(0.5)
    assert poll.is_alive()  # it waits for the member's turn …
    text += "".join(it)
    poll.join(30)
    assert text == old and took == [["student"]]  # … so the call in flight answered wholly on the old weights
    assert a.generate(prompt, model="student", max_tokens=n).generation.text == new  # and the next on the new
    for r in (a, b):
        r.pool.close()
        r.close()


def test_a_failing_dream_is_not_retried_before_every_s_and_a_stopping_server_stops_its_dream(tmp_path, hf_dir):
    from k1.pool.session import open_router
    from k1.pool.sleep.scheduler import Sleep

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "pool.sqlite"\nseed = 0\nself_verify = false\n\n'
                 f'[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\nroles = ["student"]\n')
    r = open_router(f)
    for i in range(3):
        r.feedback(r.generate(f"question {i}", max_tokens=2).request, 1.0)
    lines: list[str] = []
    broken = DreamSettings(mode="auto", after=2, every_s=600, args=["--verified-only"])  # exits 2 at once
    s = Sleep(r, f, broken, say=lines.append)
    s.tick()
    assert s.proc is not None and s.store.lease_holder("dream") == s.lease.holder
    s.proc.wait(120)
    s.tick()
    last = last_cycle(r.store)
    assert last["outcome"].startswith("failed (exit 2)") and "--verified-only needs --task-class" in last["outcome"]
    assert len(lines) == 1 and lines[0].startswith("DREAM cycle 1: failed (exit 2)")
    assert s.store.lease_holder("dream") is None
    for i in range(3):
        r.feedback(r.generate(f"again {i}", max_tokens=2).request, 1.0)
    s.tick()  # due by count, but a failed cycle counts against every_s: no loop of failing cycles
    assert s.proc is None and "the last cycle started" in s.why and last_cycle(r.store)["n"] == 1
    s = Sleep(r, f, DreamSettings(mode="auto", after=2, every_s=1, per_class=True), say=lines.append)
    time.sleep(1.1)
    s.tick()  # a real cycle starts, for the class with the most new verified experiences …
    from collections import Counter

    (cls, _), = Counter(e["task_class"] for e in r.store.experiences()).most_common(1)
    assert s.proc is not None and s.proc.args[-2:] == ["--task-class", cls] and s.cycle["task_class"] == cls
    s.stop()  # … and the server shuts down under it
    last = last_cycle(r.store)
    assert last["n"] == 2 and last["outcome"] == "stopped: the server shut down" and s.proc is None
    assert s.store.lease_holder("dream") is None
    r.pool.close()
    r.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as st:
            return "State:\tZ" in st.read()  # dead, not yet reaped by whoever adopted it
    except FileNotFoundError:
        return True


def test_a_killed_server_takes_its_dream_with_it_and_the_lease_expires(tmp_path, hf_dir):
    f = _pool_file(tmp_path, hf_dir, after=2, args='["--k", "8", "--epochs", "5000", "--max-tokens", "4"]')  # minutes
    a, child = Server(f, tmp_path / "a.log"), None
    try:
        a.wait()
        for i in range(4):  # DREAM needs 4
            a.ask(f"a question {i}")
        child = _until(lambda: a.dream()["pid"], 30, "a DREAM cycle starts")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        _until(lambda: _gone(child), 20, "the orphaned DREAM stops")
        s = PoolStore(tmp_path / "pool.sqlite")
        _until(lambda: s.lease_holder("dream") is None, 10, "the lease expires")
        assert last_cycle(s)["outcome"].startswith("abandoned")
        s.close()
    finally:
        a.stop()
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_store_failing_as_a_cycle_starts_leaves_no_lease_behind(tmp_path, hf_dir, monkeypatch):
    from k1.pool.session import open_router
    from k1.pool.sleep.scheduler import Sleep

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "pool.sqlite"\nself_verify = false\n\n'
                 f'[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\n')
    r = open_router(f)
    for i in range(2):
        r.feedback(r.generate(f"question {i}", max_tokens=2).request, 1.0)
    s = Sleep(r, f, DreamSettings(mode="auto", after=2))

    def down(*a):
        raise ConnectionError("the store went away")
    monkeypatch.setattr(r.store, "set_meta", down)  # the cycle's record cannot be written
    with pytest.raises(ConnectionError):
        s.tick()
    assert s.proc is None and r.store.lease_holder("dream") is None  # not held for ever by a live server
    r.pool.close()
    r.close()


def test_a_cycle_on_one_class_consumes_that_classs_experiences_only(tmp_path):
    """Per-class cycles: each class counts its new verified experiences from its own last cycle, so a cycle on
    code leaves arithmetic's count as it was (one global mark reset every class's); a failed cycle consumes
    nothing."""
    from k1.pool.sleep.scheduler import cycle_record, new_verified

    s = PoolStore(tmp_path / "p.sqlite")
    cfg = DreamSettings(mode="auto", after=3, every_s=1, per_class=True)
    for i, cls in enumerate(["code"] * 4 + ["arithmetic"] * 2):
        _experience(s, i, task_class=cls)
    first = cycle_record(s, cfg, last_cycle(s), "4 new", "x")
    assert first["task_class"] == "code" and first["marks"] == {"code": first["watermark"]}
    s.set_meta(CYCLE_KEY, json.dumps({**first, "outcome": "ok", "started": time.time() - 10}))
    _experience(s, 10, task_class="arithmetic")
    assert due(s, cfg, "WAKE", 1.0) == (True, "3 new verified experiences of class arithmetic (WAKE)")
    _experience(s, 11, task_class="code")
    second = cycle_record(s, cfg, last_cycle(s), "3 new", "x")
    assert second["task_class"] == "arithmetic" and second["marks"]["code"] == first["watermark"]
    s.set_meta(CYCLE_KEY, json.dumps({**second, "outcome": "failed (exit 1)", "started": time.time() - 10}))
    assert new_verified(s, cfg, last_cycle(s)) == (3, "arithmetic")  # the failed cycle consumed nothing
    s.set_meta(CYCLE_KEY, json.dumps({**second, "outcome": "ok", "started": time.time() - 10}))
    assert new_verified(s, cfg, last_cycle(s)) == (1, "code")  # arithmetic consumed; code's one since its cycle
    s.close()
