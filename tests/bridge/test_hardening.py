"""The bridge attacked as a hostile client or a careless operator would, against a real hub on 127.0.0.1:
the delivery promise, bounded resources, per-sender dedupe, deep JSON, explicit roles, plain-text warnings."""

import asyncio
import json
import time
import subprocess

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from k1.bridge import AgentBook, BridgeClient, ExchangeLog, write_agents_file
from k1.bridge.protocol import PROTOCOL_VERSION, Envelope, encode_binary
from k1.bridge.testing import bridge_cmd, counts, run, start_hub_process, subprocess_env, url, wait_until
from k1.errors import BridgeError, ConfigError


def register_frame(name, token, roles=()):
    return json.dumps({"type": "register", "data": {"name": name, "token": token, "roles": list(roles),
                                                    "version": PROTOCOL_VERSION}})


async def raw_agent(hub, name="alice", token="tok-alice"):
    ws = await connect(url(hub), max_size=None)
    await ws.send(register_frame(name, token))
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


# --- 8. at-least-once ------------------------------------------------------------------------------------
def test_a_consumer_that_raises_does_not_ack_and_gets_the_message_again(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a:
            sent = await a.send("bob", "work")
        with pytest.raises(RuntimeError):
            async with BridgeClient(url(hub), "bob", "tok-bob") as b:
                await b.recv(5)
                raise RuntimeError("the consumer failed while processing")
        async with BridgeClient(url(hub), "bob", "tok-bob") as b:
            again = await b.recv(5)
        return sent, again.id

    sent, again = run(go())
    assert again == sent
    # the clean exit acked it (the hub records an ack just after the client leaves: wait for it, briefly)
    deadline = time.monotonic() + 5
    while counts(hub)["pending_deliveries"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts(hub)["pending_deliveries"] == 0


def test_a_released_message_comes_back_on_the_same_connection(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a, BridgeClient(url(hub), "bob", "tok-bob") as b:
            await a.send("bob", 1)
            await a.send("bob", 2)
            first = await b.recv(5)
            await b.release(first)       # processing failed: hand it out again
            second = await b.recv(5)     # recv does not ack a released message
            await b.ack(second)
            third = await b.recv(5)
            await b.ack(third)
        return [first.data, second.data, third.data]

    first, *rest = run(go())
    assert first == 1 and sorted(rest) == [1, 2]  # 1 comes back (after 2 if 2 had arrived already)
    assert wait_until(lambda: counts(hub)["pending_deliveries"] == 0, timeout=5)


def test_a_bad_tensor_payload_is_refused_with_an_error_reply(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "bob", "tok-bob"):
            ws = await raw_agent(hub)
            env = Envelope(type="tensor", to="bob", data={"note": "not safetensors"})
            await ws.send(encode_binary(env, b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"))
            reply = json.loads(await ws.recv())
            await ws.close()
            return reply, env.id

    reply, mid = run(go())
    assert reply["type"] == "error" and reply["data"]["code"] == "bad_payload" and reply["reply_to"] == mid
    assert counts(hub)["messages"] == 0


def test_listen_survives_a_stored_bad_payload_and_does_not_ack_it(agents_file, tmp_path):
    db = tmp_path / "hub.sqlite"
    store = ExchangeLog(db)  # a log written before payloads were checked
    store.append(Envelope(type="tensor", sender="alice", to="bob", id="bad1"), ["bob"], b"not safetensors")
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
    assert "bad1" in r.stderr and json.loads(r.stdout.splitlines()[-1])["id"] == "good1"
    history = {m["id"]: m["delivered"]["bob"] for m in ExchangeLog(db).history()}
    assert history == {"bad1": False, "good1": True}


# --- 10. bounded resources -------------------------------------------------------------------------------
def test_the_byte_rate_refuses_a_flood_of_large_messages(make_hub):
    hub = make_hub(max_size=100_000, byte_rate=200_000, byte_burst=200_000)

    async def go():
        async with BridgeClient(url(hub), "bob", "tok-bob"):
            ws = await raw_agent(hub)
            codes = []
            for i in range(10):
                await ws.send(json.dumps({"type": "message", "to": "bob", "data": "x" * 90_000}))
                r = json.loads(await ws.recv())
                codes.append(r["type"] if r["type"] == "receipt" else r["data"]["code"])
            await ws.close()
            return codes

    codes = run(go())
    assert codes.count("receipt") <= 3 and codes.count("rate_limited") >= 7


def test_pending_messages_per_recipient_are_capped(make_hub):
    hub = make_hub(max_pending=5)

    async def go():
        ws = await raw_agent(hub)
        codes = []
        for i in range(8):
            await ws.send(json.dumps({"type": "message", "to": "dave", "data": i}))  # dave never comes
            r = json.loads(await ws.recv())
            codes.append(r["type"] if r["type"] == "receipt" else r["data"]["code"])
        await ws.close()
        return codes

    assert run(go()) == ["receipt"] * 5 + ["recipient_full"] * 3


def test_pending_bytes_per_recipient_are_capped(make_sqlite_hub):
    """SQLite only: on JetStream the bytes per (sender, recipient) are bounded by max_pending x max_size and the
    stream's max_bytes, not by max_pending_bytes (docs/bridge-protocol.md)."""
    hub = make_sqlite_hub(max_pending_bytes=50_000)

    async def go():
        ws = await raw_agent(hub)
        codes = []
        for i in range(4):
            await ws.send(json.dumps({"type": "message", "to": "dave", "data": "y" * 20_000}))
            r = json.loads(await ws.recv())
            codes.append(r["type"] if r["type"] == "receipt" else r["data"]["code"])
        await ws.close()
        return codes

    assert run(go()) == ["receipt"] * 2 + ["recipient_full"] * 2


def test_messages_for_an_agent_that_never_returns_expire(make_hub):
    hub = make_hub(retention=0.5, sweep_every=0.1)

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a:
            await a.send("dave", "too late")
        await asyncio.sleep(1.0)
        async with BridgeClient(url(hub), "dave", "tok-dave") as d:
            with pytest.raises(BridgeError, match="no message"):
                await d.recv(0.5)
            return d.welcome["pending"]

    assert run(go()) == 0
    assert counts(hub) == {"messages": 0, "pending_deliveries": 0}


def test_unauthenticated_connections_are_capped_and_held_to_a_small_frame(make_hub):
    hub = make_hub(max_unauthenticated=4)

    async def go():
        held = [await connect(url(hub)) for _ in range(4)]  # they never register
        with pytest.raises(InvalidStatus) as refused:
            await connect(url(hub))
        assert refused.value.response.status_code == 503
        for ws in held:
            await ws.close()
        await asyncio.sleep(0.1)
        ws = await connect(url(hub), max_size=None)  # a slot is free again; a big first frame is cut off
        await ws.send("x" * 200_000)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        code = ws.close_code
        async with BridgeClient(url(hub), "alice", "tok-alice") as a, BridgeClient(url(hub), "bob", "tok-bob") as b:
            await a.send("bob", "z" * 200_000)  # after registering, max_size applies
            big = await b.recv(5)
        return code, len(big.data)

    assert run(go()) == (1009, 200_000)


# --- 11. small ones --------------------------------------------------------------------------------------
def test_message_ids_are_deduplicated_per_sender(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a, BridgeClient(url(hub), "bob", "tok-bob") as b, \
                BridgeClient(url(hub), "dave", "tok-dave") as d:
            await a.send("dave", "from alice", id="same-id")
            await b.send("dave", "from bob", id="same-id")
            await a.send("dave", "alice again", id="same-id")  # a real resend: dropped
            got = []
            for _ in range(2):
                m = await d.recv(5)
                got.append(m.data)
                await d.ack(m)
            with pytest.raises(BridgeError):
                await d.recv(0.3)
        return got

    assert sorted(run(go())) == ["from alice", "from bob"]
    assert wait_until(lambda: counts(hub)["pending_deliveries"] == 0, timeout=5)
    if hub.cfg.backend == "sqlite":  # JetStream deletes what every recipient acked
        assert counts(hub)["messages"] == 2


def test_deep_json_is_bad_json_not_a_crash(make_hub):
    hub = make_hub()

    async def go():
        ws = await raw_agent(hub)
        deep = '{"type": "message", "to": "bob", "data": ' + "[" * 100_000 + "]" * 100_000 + "}"
        await ws.send(deep)
        reply = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "to": "bob", "data": [[[[1]]]]}))
        after = json.loads(await ws.recv())
        await ws.close()
        return reply["data"]["code"], after["type"]

    assert run(go()) == ("bad_json", "receipt")


def test_roles_any_is_explicit_and_an_empty_list_allows_none(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text('[agents.a]\ntoken = "t"\nroles = "any"\n[agents.b]\ntoken = "u"\nroles = []\n')
    book = AgentBook.from_file(path)
    assert book.allowed_roles("a", ["anything", "else"])
    assert book.allowed_roles("b", []) and not book.allowed_roles("b", ["critic"])
    path.write_text('[agents.a]\ntoken = "t"\nroles = "every"\n')
    with pytest.raises(ConfigError, match='"any"'):
        AgentBook.from_file(path)


def test_a_hub_on_a_public_address_without_tls_warns(tmp_path):
    agents = write_agents_file(tmp_path / "agents.toml", {"a": ("t", [])})
    hub, _ = start_hub_process(agents, tmp_path / "hub.sqlite", 0, "--host", "0.0.0.0")
    hub.kill()
    _, err = hub.communicate()
    assert "without TLS" in err
    hub, _ = start_hub_process(agents, tmp_path / "hub.sqlite", 0)
    hub.kill()
    _, err = hub.communicate()
    assert "without TLS" not in err


# --- stored files from before per-sender ids -------------------------------------------------------------
V1_LOG = """
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    sender TEXT NOT NULL, target TEXT NOT NULL, reply_to TEXT, ts REAL NOT NULL, stored_ts REAL NOT NULL,
    envelope TEXT NOT NULL, payload BLOB);
CREATE TABLE deliveries (recipient TEXT NOT NULL, seq INTEGER NOT NULL REFERENCES messages(seq), acked_ts REAL,
    PRIMARY KEY (recipient, seq));
CREATE INDEX deliveries_pending ON deliveries(recipient, seq) WHERE acked_ts IS NULL;
CREATE TABLE agents (name TEXT PRIMARY KEY, roles TEXT NOT NULL, last_seen REAL NOT NULL);
"""  # the exchange log's first schema, as the hub wrote it (user_version 1)


def test_a_version_1_exchange_log_and_inbox_are_migrated(tmp_path):
    import sqlite3

    from k1.bridge import Inbox

    db = sqlite3.connect(tmp_path / "old.sqlite", isolation_level=None)
    db.executescript(f"BEGIN; {V1_LOG}; PRAGMA user_version=1; COMMIT;")
    env = json.dumps({"id": "m1", "type": "message", "from": "alice", "to": "dave", "data": "x" * 100})
    db.execute("INSERT INTO messages (id, type, sender, target, ts, stored_ts, envelope) VALUES "
               "('m1', 'message', 'alice', 'dave', 0, 0, ?)", (env,))
    db.execute("INSERT INTO deliveries (recipient, seq) VALUES ('dave', 1)")
    db.close()
    store = ExchangeLog(tmp_path / "old.sqlite")
    assert store.pending_totals() == {("alice", "dave"): (1, len(env))}
    assert store.append(Envelope(id="m1", type="message", sender="bob", to="dave"), ["dave"])  # bob's own m1
    assert not store.append(Envelope(id="m1", type="message", sender="alice", to="dave"), ["dave"])
    store.close()

    inbox = sqlite3.connect(tmp_path / "inbox.sqlite", isolation_level=None)
    inbox.execute("CREATE TABLE inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, envelope TEXT NOT NULL, "
                  "payload BLOB, received_ts REAL NOT NULL)")
    inbox.execute("INSERT INTO inbox (id, envelope, received_ts) VALUES ('m1', ?, 0)", (env,))
    inbox.close()
    box = Inbox(tmp_path / "inbox.sqlite")
    assert not box.take({"id": "m1", "from": "alice"}) and box.take({"id": "m1", "from": "bob"})
    assert [m["from"] for m in box.messages()] == ["alice", "bob"]


def test_acks_are_bounded_in_size_and_by_the_byte_rate(make_hub):
    hub = make_hub(max_size=100_000, byte_rate=100_000, byte_burst=100_000)

    async def go():
        ws = await raw_agent(hub)
        too_many = json.dumps({"type": "ack", "data": {"ids": [f"id{i}" for i in range(1001)]}})
        await ws.send(too_many)
        first = json.loads(await ws.recv())["data"]["code"]
        big = json.dumps({"type": "ack", "data": {"ids": [f"{i:060d}" for i in range(1000)]}})  # ~64 kB each
        codes = []
        for _ in range(4):
            await ws.send(big)
            try:
                codes.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5))["data"]["code"])
            except asyncio.TimeoutError:
                codes.append(None)  # accepted: acks get no reply
        await ws.close()
        return first, codes

    first, codes = run(go())
    assert first == "bad_envelope" and codes[0] is None and "rate_limited" in codes
