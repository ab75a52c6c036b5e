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


def _experience(store, i, outcome=1.0, trusted=True):
    return store.add_experience({"ts": time.time(), "request": f"r{i}", "session": "s", "prompt": f"p{i}",
                                 "response": "x", "member": "m", "context": "prose", "outcome": outcome,
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
    assert not due(s, cfg, "CRISIS", 1.0)[0]
    assert due(s, cfg, "WAKE", 0.2)[1] == "20% of the budget left (< 25%)"
    now = time.time()
    _, newest = s.verified_since(0)
    s.set_meta(CYCLE_KEY, json.dumps({"n": 1, "started": now, "watermark": newest, "outcome": "failed (exit 1)",
                                      "replica": "x"}))
    assert "the last cycle started 0 s ago" in due(s, cfg, "WAKE", 1.0)[1]  # a failed cycle counts too
    for i in range(40, 45):
        _experience(s, i)
    assert due(s, cfg, "WAKE", 1.0, now=now + 61) == (True, "5 new verified experiences (WAKE)")  # since the last
    s.set_meta(CYCLE_KEY, json.dumps({"n": 2, "started": now, "watermark": newest, "outcome": "running",
                                      "replica": "gone-host:1"}))
    assert last_cycle(s)["outcome"].startswith("abandoned")  # its lease is not held: its process died
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
    def __init__(self, pool_file, log):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}/v1"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(pool_file),
                                          "--port", str(self.port)], stdout=out, stderr=out,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})

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


def _until(pred, timeout_s, what):
    end = time.time() + timeout_s
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def test_two_servers_on_one_store_run_one_dream_and_both_take_up_the_student(tmp_path, hf_dir):
    f = _pool_file(tmp_path, hf_dir)
    a, b = Server(f, tmp_path / "a.log"), Server(f, tmp_path / "b.log")
    try:
        a.wait()
        b.wait()
        assert a.dream()["last"] is None and a.dream()["mode"] == "auto"
        for i in range(3):
            a.ask(f"tell me about the sea {i}")
            b.ask(f"tell me about the hills {i}")  # 6 verified experiences: both servers see DREAM due
        running = _until(lambda: (a.dream()["last"] or {}).get("outcome") == "running" and a.dream()["last"],
                         60, "a DREAM cycle starts")
        here = a if a.dream()["running_here"] else b
        # while DREAM runs in its own process, both servers answer
        t0 = time.time()
        done = [srv.ask("are you awake?", feedback=None) for srv in (here, a if here is b else b)]
        t1 = time.time()
        last = _until(lambda: a.dream()["last"]["outcome"] != "running" and a.dream()["last"], 120,
                      "the cycle ends")
        assert last["n"] == 1 and last["outcome"] == "ok", last
        assert last["new_versions"] == {"student": 1} and last["replica"] == running["replica"]
        assert t0 >= last["started"] and t1 <= last["ended"] and all(d["choices"] for d in done)  # served meanwhile
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
        assert PoolStore(tmp_path / "pool.sqlite").lease_holder("dream") is None
    finally:
        a.stop()
        b.stop()


def test_a_killed_dream_gives_back_its_lease_and_a_later_cycle_runs(tmp_path, hf_dir):
    f = _pool_file(tmp_path, hf_dir, every_s=3, after=2)
    a = Server(f, tmp_path / "a.log")
    try:
        a.wait()
        for i in range(2):
            a.ask(f"a question {i}")
        st = _until(lambda: a.dream()["pid"] and a.dream(), 30, "a DREAM cycle starts")
        os.kill(st["pid"], signal.SIGKILL)
        last = _until(lambda: a.dream()["last"]["outcome"] != "running" and a.dream()["last"], 30, "it is seen dead")
        assert last["outcome"] == "killed (signal 9)" and last["n"] == 1
        assert PoolStore(tmp_path / "pool.sqlite").lease_holder("dream") is None  # released, not left to expire
        for i in range(2):
            a.ask(f"another question {i}")
        last = _until(lambda: a.dream()["last"]["n"] == 2 and a.dream()["last"]["outcome"] != "running"
                      and a.dream()["last"], 120, "a later cycle runs")
        assert last["outcome"] == "ok" and last["new_versions"] == {"student": 1}
        lines = a.cycle_lines()
        assert len(lines) == 2 and "killed" in lines[0] and "new students: student v1" in lines[1]
    finally:
        a.stop()
