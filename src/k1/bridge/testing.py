"""Helpers shared by tests/bridge and bench/bridge.py: a hub in a subprocess, a demo agents book, waiting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

# name → (token, allowed roles): four agents, two sharing the role "critic"
DEMO_AGENTS = {"alice": ("tok-alice", "any"), "bob": ("tok-bob", ["critic"]),
               "carol": ("tok-carol", ["critic", "solver"]), "dave": ("tok-dave", [])}


def url(hub) -> str:
    return f"ws://127.0.0.1:{hub.port}"


def run(coro, timeout: float = 30):
    """Run one coroutine to completion with a deadline (tests are plain functions, no asyncio plugin)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bridge_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "k1.bridge", *map(str, args)]


def subprocess_env() -> dict:
    """The current environment with this checkout's src/ first, so subprocesses import the same k1."""
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


NATS_SERVER = os.environ.get("K1_NATS_SERVER", "/usr/sbin/nats-server")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(store_dir: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """A real `nats-server -js` on 127.0.0.1 with its store in `store_dir`; returns it and its nats:// URL once it
    accepts connections. Raises RuntimeError (one line: why) when it cannot start."""
    import shutil
    import socket

    exe = NATS_SERVER if Path(NATS_SERVER).is_file() else shutil.which("nats-server")
    if exe is None:
        raise RuntimeError(f"nats-server not found ({NATS_SERVER}; Debian: apt-get install nats-server)")
    port = port or free_port()
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    conf = store_dir / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{store_dir}", max_file_store: 1TB }}\n')
    p = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError(f"nats-server exited: {p.stderr.read().strip().splitlines()[-1:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError(f"nats-server did not listen on 127.0.0.1:{port} within 10 s")


def start_hub_process(agents_file, db, port: int = 0, *extra) -> tuple[subprocess.Popen, int]:
    """`python -m k1.bridge serve` in a subprocess; returns it and its port once it prints `listening`."""
    p = subprocess.Popen(bridge_cmd("serve", "--agents", agents_file, "--db", db, "--port", port, *extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    line = p.stdout.readline()
    if not line.startswith("listening"):
        p.kill()
        raise RuntimeError(f"hub did not start: {line!r} {p.stderr.read()}")
    return p, int(line.split()[1].rsplit(":", 1)[1])


def counts(hub) -> dict:
    """A hub's {"messages", "pending_deliveries"}, asked on its own event loop (any backend)."""
    return asyncio.run_coroutine_threadsafe(hub.counts(), hub.loop).result(10)


def wait_until(pred, timeout: float = 10.0, every: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False



async def soak(tmp: Path, senders: int = 3, messages: int = 100, kills: int = 1, fail_rate: float = 0.1,
               window: int = 4, seed: int = 0, timeout: float = 120.0, backend: str = "sqlite") -> dict:
    """Senders → one consumer through hub processes that are SIGKILLed and restarted mid-run.

    backend="sqlite": one hub process on one SQLite file, killed `kills` times.
    backend="jetstream": a real nats-server -js and two hub processes on one stream; the senders alternate
    between them and the consumer uses the second. The kills alternate: the consumer's hub process, then the
    NATS server (restarted on the same port and store), and so on.

    The consumer's handler raises on `fail_rate` of the messages it is handed (seeded): those are released,
    not acked, and must come back. Returns what the promise is checked by: sent (receipted), delivered
    (distinct messages processed), lost, processed_twice (a message processed again after its ack),
    failures (handler raises), redeliveries dropped by the client, restarts, sender resends, and what the
    store still holds afterwards.
    """
    import random
    import signal

    from k1.bridge.auth import write_agents_file
    from k1.bridge.client import BridgeClient

    tokens = {f"s{i}": f"tok-s{i}" for i in range(senders)} | {"worker": "tok-worker"}
    agents = write_agents_file(Path(tmp) / "soak-agents.toml", {n: (t, []) for n, t in tokens.items()})
    db = Path(tmp) / "soak.sqlite"
    nats_proc = nats_url = None
    if backend == "jetstream":
        nats_proc, nats_url = start_nats(Path(tmp) / "nats")
        extra = ("--backend", nats_url, "--stream", "SOAK", "--ack-wait", "2")
        hubs = [start_hub_process(agents, db, 0, *extra) for _ in range(2)]
    else:
        extra = ()
        hubs = [start_hub_process(agents, db)]
    procs, ports = [h for h, _ in hubs], [port for _, port in hubs]
    urls = [f"ws://127.0.0.1:{port}" for port in ports]
    total = senders * messages
    rng = random.Random(seed)
    receipted: set[tuple[str, str]] = set()
    processed: list[tuple[str, str]] = []
    failures = restarts = 0
    killed: list[str] = []

    worker = await BridgeClient(urls[-1], "worker", tokens["worker"], backoff=(0.02, 0.3)).connect()
    clients = [await BridgeClient(urls[i % len(urls)], f"s{i}", tokens[f"s{i}"], backoff=(0.02, 0.3),
                                  receipt_timeout=60).connect() for i in range(senders)]

    async def send_all(c: BridgeClient):
        sem = asyncio.Semaphore(window)

        async def one(k: int):
            async with sem:
                mid = await c.send("worker", {"k": k})
                receipted.add((c.name, mid))

        await asyncio.gather(*(one(k) for k in range(messages)))

    async def consume():
        nonlocal failures
        while len(set(processed)) < total:
            msg = await worker.recv(timeout=60)
            try:
                if rng.random() < fail_rate:
                    raise RuntimeError("the handler failed")
            except RuntimeError:
                failures += 1
                await worker.release(msg)
                continue
            processed.append(msg.key)
            await worker.ack(msg)

    async def killer():
        nonlocal nats_proc, restarts
        for i in range(kills):
            while len(set(processed)) < total * (i + 1) / (kills + 1):
                await asyncio.sleep(0.01)
            if backend == "jetstream" and i % 2 == 1:  # the broker itself: only what it wrote survives
                nats_proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(nats_proc.wait)
                nats_proc, _ = await asyncio.to_thread(start_nats, Path(tmp) / "nats", int(nats_url.rsplit(":", 1)[1]))
                killed.append("nats")
            else:  # the consumer's hub process: no shutdown, no naks
                procs[-1].send_signal(signal.SIGKILL)
                await asyncio.to_thread(procs[-1].wait)
                procs[-1], _ = await asyncio.to_thread(start_hub_process, agents, db, ports[-1], *extra)
                killed.append("hub")
            restarts += 1

    async def store_counts() -> dict:
        if backend != "jetstream":
            from k1.bridge.store import ExchangeLog

            log = ExchangeLog(db)
            try:
                return log.counts()
            finally:
                log.close()
        import nats as nats_py

        nc = await nats_py.connect(nats_url)
        try:
            js = nc.jetstream()
            n = (await js.stream_info("SOAK")).state.messages
            ci = await js.consumer_info("SOAK", "r" + "worker".encode().hex())
        finally:
            await nc.close()
        # pending = what the recipient's consumer has not seen acked; the stream may hold more: a NATS server
        # killed with -9 can come back with acks on disk but not the work queue's deletions (docs/results-bridge.md)
        return {"messages": n, "pending_deliveries": ci.num_pending + ci.num_ack_pending, "consumer": {
            "num_pending": ci.num_pending, "num_ack_pending": ci.num_ack_pending,
            "num_redelivered": ci.num_redelivered, "ack_floor": ci.ack_floor.stream_seq,
            "delivered": ci.delivered.stream_seq}}

    t0 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(send_all(c) for c in clients), consume(), killer()), timeout)
        wall = time.monotonic() - t0
        # the last acks reach the store asynchronously: wait until it agrees nothing is pending
        # (JetStream: a delivery whose ack a killed NATS server forgot comes back after ack_wait and is acked again)
        t_settle = time.monotonic()
        settle = t_settle + (40 if backend == "jetstream" else 10)
        while True:
            counts = await store_counts()
            if counts["pending_deliveries"] == 0 or time.monotonic() > settle:
                break
            await asyncio.sleep(0.1)
        settle_s = time.monotonic() - t_settle
    finally:
        for c in (*clients, worker):
            await c.close()
        for p in procs + ([nats_proc] if nats_proc else []):
            p.kill()
            p.wait()
    return {"backend": backend, "hub_processes": len(procs), "senders": senders, "messages_per_sender": messages,
            "sent": len(receipted), "delivered": len(set(processed)), "lost": len(receipted - set(processed)),
            "processed_twice": len(processed) - len(set(processed)), "failures": failures,
            "redeliveries_dropped": worker.stats["duplicates_dropped"], "restarts": restarts, "killed": killed,
            "resent": sum(c.stats["resent"] for c in clients), "limited": sum(c.stats["limited"] for c in clients),
            "wall_s": round(wall, 1), "settle_s": round(settle_s, 1), "log_messages": counts["messages"], "log_pending": counts["pending_deliveries"],
            **({"consumer": counts["consumer"]} if "consumer" in counts else {})}


# --- pytest fixtures (tests/bridge and tests/agents import them into their conftest) -----------------------
try:
    import pytest
except ImportError:  # the bench does not need pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def agents_file(tmp_path):
        from k1.bridge.auth import write_agents_file

        return write_agents_file(tmp_path / "agents.toml", DEMO_AGENTS)

    @pytest.fixture
    def make_hub(tmp_path, agents_file):
        """make_hub(**HubConfig fields) → a started in-process hub on SQLite (stopped after the test)."""
        yield from _hubs(tmp_path, agents_file, {})

    @pytest.fixture(scope="session")
    def nats_url(tmp_path_factory):
        """A real nats-server -js for the whole session (each test gets its own stream); skipped, with the
        reason, where it cannot start."""
        try:
            p, u = start_nats(tmp_path_factory.mktemp("nats"))
        except RuntimeError as e:
            pytest.skip(f"JetStream backend not tested: {e}")
        yield u
        p.kill()
        p.wait()


_streams = __import__("itertools").count()


def unique_stream() -> str:
    """A fresh stream name, so tests sharing one NATS server never see each other's messages."""
    return f"T{os.getpid()}x{next(_streams)}"


def jetstream_config(nats_url: str) -> dict:
    """HubConfig fields for a test hub on JetStream: its own stream, and a short ack_wait so that a killed hub
    process's deliveries come back within seconds."""
    return {"backend": nats_url, "stream": unique_stream(), "ack_wait": 2.0}


def _hubs(tmp_path, agents_file, defaults: dict):
    from k1.bridge.auth import AgentBook
    from k1.bridge.hub import BackgroundHub, HubConfig

    hubs = []

    def make(**kw):
        kw = {"db": tmp_path / "bridge.sqlite", "ping_interval": 5, **defaults, **kw}
        h = BackgroundHub(HubConfig(port=0, **kw), AgentBook.from_file(agents_file))
        hubs.append(h)
        return h.__enter__()

    yield make
    for h in hubs:
        h.__exit__(None, None, None)
