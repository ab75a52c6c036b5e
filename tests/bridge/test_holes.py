"""Holes an attacker found in the hub, each kept as an attack that failed on the old hub: a tensor payload
torch cannot load, anonymous sockets holding every register slot, a log that grows without bound, one
agent's broadcasts filling every recipient's budget, revoked roles still receiving mail, and SQLite calls
that stalled the event loop."""

import asyncio
import json
import sqlite3
import struct
import subprocess
import time

import pytest
from websockets.asyncio.client import connect

from k1.bridge import BridgeClient, ExchangeLog, write_agents_file
from k1.bridge.protocol import TORCH_DTYPES, Envelope, encode_binary
from k1.bridge.testing import (
    bridge_cmd,
    counts,
    run,
    start_hub_process,
    subprocess_env,
    url,
)


def e8m0_payload() -> bytes:
    """A valid safetensors file (it parses) holding a dtype torch cannot load."""
    header = json.dumps({"x": {"dtype": "F8_E8M0", "shape": [4], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x01\x02\x03\x04"


def test_every_dtype_the_hub_accepts_is_one_torch_loads():
    import safetensors.torch as st

    assert TORCH_DTYPES <= set(st._TYPES), TORCH_DTYPES - set(st._TYPES)


def test_a_payload_torch_cannot_load_is_refused_at_the_hub(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice"):
            ws = await connect(url(hub), max_size=None)
            await ws.send(json.dumps({"type": "register", "data": {"name": "carol", "token": "tok-carol",
                                                                   "roles": [], "version": 1}}))
            await ws.recv()
            env = Envelope(type="tensor", to="alice", data={})
            await ws.send(encode_binary(env, e8m0_payload()))
            reply = json.loads(await ws.recv())
            await ws.close()
            return reply

    reply = run(go())
    assert reply["type"] == "error" and reply["data"]["code"] == "bad_payload" and "F8_E8M0" in reply["data"]["message"]
    assert counts(hub)["messages"] == 0


def test_listen_survives_a_stored_payload_torch_cannot_load(agents_file, tmp_path):
    db = tmp_path / "hub.sqlite"
    store = ExchangeLog(db)  # a log written by a hub that did not check dtypes
    store.append(Envelope(type="tensor", sender="alice", to="bob", id="e8m0"), ["bob"], e8m0_payload())
    store.append(Envelope(type="message", sender="alice", to="bob", id="good1", data="hello"), ["bob"])
    store.close()
    hub, port = start_hub_process(agents_file, db)
    try:
        r = subprocess.run(bridge_cmd("listen", "--url", f"ws://127.0.0.1:{port}", "--name", "bob", "--count", "1",
                                      "--timeout", "5"), capture_output=True, text=True, timeout=30,
                           env={**subprocess_env(), "K1_BRIDGE_TOKEN": "tok-bob"})
    finally:
        hub.kill()
        hub.wait()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "e8m0" in r.stderr and json.loads(r.stdout.splitlines()[-1])["id"] == "good1"


def test_message_tensors_turns_any_load_error_into_one_bridge_error():
    from k1.bridge import Message
    from k1.errors import BridgeError

    with pytest.raises(BridgeError, match="cannot load its tensors"):
        Message(Envelope(type="tensor", sender="a", id="m"), e8m0_payload()).tensors()


def test_anonymous_sockets_from_one_address_cannot_lock_agents_out(tmp_path):
    """80 sockets from 127.0.0.2 cycle through the register slots; 7 agents from 127.0.0.1 still get in."""
    from k1.bridge import AgentBook, BackgroundHub, HubConfig

    agents = {f"a{i}": (f"t{i}", []) for i in range(7)}
    book = AgentBook.from_file(write_agents_file(tmp_path / "agents.toml", agents))
    with BackgroundHub(HubConfig(port=0, db=tmp_path / "hub.sqlite"), book) as hub:
        joined, took, refused = run(_squat_and_join(hub, agents), timeout=60)
    assert joined == 7 and took < 4 and refused > 0


async def _squat_and_join(hub, agents):
    stop = asyncio.Event()

    async def squatter():
        while not stop.is_set():
            try:
                ws = await connect(url(hub), local_addr=("127.0.0.2", 0), open_timeout=2)
            except Exception:  # noqa: BLE001  refused (503): try again at once
                await asyncio.sleep(0.005)
                continue
            try:
                await ws.wait_closed()  # holds its slot until the hub's register timeout
            finally:
                await ws.close()

    squatters = [asyncio.create_task(squatter()) for _ in range(80)]
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    try:
        clients = await asyncio.gather(*(BridgeClient(url(hub), n, t).connect(timeout=4) for n, (t, _) in agents.items()),
                                       return_exceptions=True)
    finally:
        stop.set()
        await asyncio.gather(*squatters, return_exceptions=True)
    took = time.monotonic() - t0
    ok = [c for c in clients if isinstance(c, BridgeClient)]
    for c in ok:
        await c.close()
    return len(ok), took, hub.stats["refused_connections"]


def test_a_sender_has_a_byte_budget_in_the_log_acked_or_not(make_sqlite_hub):
    hub = make_sqlite_hub(max_sender_bytes=100_000)

    async def go():
        codes = []
        async with BridgeClient(url(hub), "alice", "tok-alice", retry_limited=False) as a:
            for _ in range(8):  # alice sends herself 20 kB messages and acks each
                try:
                    await a.send("alice", "x" * 20_000)
                    await a.ack(await a.recv(5))
                    codes.append("receipt")
                except Exception as e:  # noqa: BLE001  any refusal is recorded by its code
                    codes.append(getattr(e, "code", str(e)))
        return codes

    codes = run(go())
    assert codes[:4] == ["receipt"] * 4 and set(codes[4:]) == {"sender_full"}
    db = sqlite3.connect(hub.cfg.db)
    stored = db.execute("SELECT SUM(length(CAST(envelope AS BLOB))) FROM messages").fetchone()[0]
    assert stored <= 100_000


def test_one_senders_broadcasts_do_not_fill_others_budget_for_a_recipient(make_hub):
    hub = make_hub(max_pending=5)

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice", retry_limited=False) as a, \
                BridgeClient(url(hub), "bob", "tok-bob", retry_limited=False) as b:
            for i in range(5):
                await a.send("*", i)  # dave is offline: 5 pending from alice
            with pytest.raises(Exception, match="recipient_full"):
                await a.send("*", 5)
            return await b.send("dave", "mine")  # bob's own budget for dave is untouched

    assert run(go())


def test_a_revoked_role_or_agent_receives_no_mail(tmp_path, backend):
    from k1.bridge import AgentBook, BackgroundHub, HubConfig

    db = tmp_path / "hub.sqlite"
    before = write_agents_file(tmp_path / "a1.toml", {"alice": ("ta", "any"), "bob": ("tb", ["admin", "critic"]),
                                                      "eve": ("te", ["admin"])})
    with BackgroundHub(HubConfig(port=0, db=db, **backend), AgentBook.from_file(before)) as hub:
        async def join():
            for n, t in (("bob", "tb"), ("eve", "te")):
                async with BridgeClient(url(hub), n, t, roles=["admin"] + (["critic"] if n == "bob" else [])):
                    pass
        run(join())
    # the operator revokes bob's admin role and removes eve; the log still remembers what they declared
    after = write_agents_file(tmp_path / "a2.toml", {"alice": ("ta", "any"), "bob": ("tb", ["critic"])})
    with BackgroundHub(HubConfig(port=0, db=db, **backend), AgentBook.from_file(after)) as hub:
        async def send():
            async with BridgeClient(url(hub), "alice", "ta", retry_limited=False) as a:
                with pytest.raises(Exception, match="unknown_recipient"):
                    await a.send("admin", "for admins only")
                return await a._submit(Envelope(type="message", to="critic", data="for critics"))
        receipt = run(send())
    assert receipt["recipients"] == ["bob"]


def test_a_locked_log_does_not_stall_other_connections(make_sqlite_hub):
    """The SQLite work runs on a worker thread: while another process holds the file's write lock, the hub
    still answers every connection (here: an error reply to a bad frame) at once."""
    hub = make_sqlite_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice", receipt_timeout=20) as a:
            ws = await connect(url(hub))
            await ws.send(json.dumps({"type": "register", "data": {"name": "carol", "token": "tok-carol",
                                                                   "roles": [], "version": 1}}))
            await ws.recv()
            lock = sqlite3.connect(hub.cfg.db, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                sending = asyncio.create_task(a.send("bob", "waits for the lock"))
                await asyncio.sleep(0.2)  # the hub is now waiting on the lock
                t0 = time.monotonic()
                await ws.send("{not json")
                reply = json.loads(await ws.recv())
                answered = time.monotonic() - t0
                await asyncio.sleep(1.5 - answered)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            await sending
            await ws.close()
            return reply["data"]["code"], answered

    code, answered = run(go())
    assert code == "bad_json" and answered < 0.5
