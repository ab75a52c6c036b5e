"""The nginx and HAProxy examples of docs/pool.md, run as written (TLS and the addresses swapped for 127.0.0.1)
in front of two real `k1 pool serve` replicas on one store and a third address nobody listens on (a replica
that is down): a chat answer, a stream, feedback once through the balancer. Skipped where nginx or HAProxy
is not installed."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from k1.pool.testing import free_port, serving_within

DOC = Path(__file__).resolve().parents[2] / "docs" / "pool.md"
KEY = "balancer-key"
HOST = "pool.example.org"


def doc_block(lang: str) -> str:
    """The ```lang block of docs/pool.md's 'Behind a load balancer'."""
    section = DOC.read_text().split("### Behind a load balancer", 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.DOTALL).group(1)


def local(conf: str, ports: list[int]) -> str:
    """The example's replica addresses 10.0.0.11–13:8000 → the ports given, in order."""
    for i, p in enumerate(ports):
        conf = conf.replace(f"10.0.0.1{i + 1}:8000", f"127.0.0.1:{p}")
    assert "10.0.0." not in conf
    return conf


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, hf_dir):
    """Two replicas on one SQLite store, serving Host pool.example.org; → their ports and a dead port."""
    d = tmp_path_factory.mktemp("balanced")
    (d / "pool.toml").write_text(f'[pool]\nstore = "{d / "p.sqlite"}"\nseed = 0\n\n'
                                 f'[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "K1_POOL_API_KEY": KEY}
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(d / "pool.toml"), "--port",
                               str(p), "--allowed-host", HOST], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for p in ports]
    try:
        for p, proc in zip(ports, procs):
            assert serving_within(f"http://127.0.0.1:{p}/v1", proc, 180), proc.stderr.read() if proc.poll() else ""
        yield ports + [free_port()]  # r3 is down
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


def through(port: int) -> None:
    """A chat answer, a stream to [DONE], feedback accepted once: all through the balancer on `port`."""
    h = {"Authorization": f"Bearer {KEY}", "Host": HOST}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers=h, timeout=60) as c:
        ids = set()
        for _ in range(4):  # least-connections over 3 servers, one of them down: every request still answered
            r = c.post("/chat/completions", json={"model": "a", "max_tokens": 3,
                                                   "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text[:300]
            ids.add(r.json()["k1"]["request"])
        events = []
        with c.stream("POST", "/chat/completions", json={"model": "a", "max_tokens": 4, "stream": True,
                                                          "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
        assert events[-1] == "[DONE]" and any("k1" in json.loads(e) for e in events[:-1])
        rid = ids.pop()
        assert c.post("/feedback", json={"request": rid, "success": 1}).status_code == 200
        assert c.post("/feedback", json={"request": rid, "success": 1}).status_code == 409  # once, whichever replica


def run_until_serving(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 20:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Host": HOST}, timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the balancer did not start: " + log.read_text())


def test_the_nginx_example_balances_replicas(replicas, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    port = free_port()
    site = local(doc_block("nginx"), replicas)
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
    site = re.sub(r"\n\s*ssl_certificate\S*\s+\S+;", "", site)
    t = tmp_path
    (t / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {t / 'nginx.pid'};\nerror_log {t / 'error.log'};\n"
        f"events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {t / 'body'};\n"
        f" proxy_temp_path {t / 'proxy'};\n{site}\n}}\n")
    proc = run_until_serving([nginx, "-p", str(t), "-c", str(t / "nginx.conf")], port, t / "nginx.log")
    try:
        through(port)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_haproxy_example_balances_replicas(replicas, tmp_path):
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if haproxy is None:
        pytest.skip("HAProxy is not installed")
    port = free_port()
    conf = local(doc_block("haproxy"), replicas)
    conf = conf.replace("bind :443 ssl crt /etc/haproxy/pool.pem", f"bind 127.0.0.1:{port}")
    conf = conf.replace(" check\n", " check inter 500ms\n")  # the example's 2 s between checks, shortened
    (tmp_path / "haproxy.cfg").write_text(conf)
    proc = run_until_serving([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], port, tmp_path / "haproxy.log")
    try:
        time.sleep(2)  # the first health checks: r1 and r2 up, r3 down
        through(port)
    finally:
        proc.terminate()
        proc.wait(10)
