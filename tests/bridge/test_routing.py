"""Routing by name, role and broadcast; offline delivery in order; request/reply; tensor frames."""

import asyncio

import pytest
import torch

from k1.bridge import BridgeClient, ExchangeLog
from k1.errors import BridgeError

from k1.bridge.testing import DEMO_AGENTS as AGENTS, counts, run, url, wait_until


def client(hub, name, **kw):
    return BridgeClient(url(hub), name, AGENTS[name][0], roles=AGENTS[name][1], **kw)


async def drain(c, n, timeout=5.0):
    return [await c.recv(timeout) for _ in range(n)]


def test_name_role_and_broadcast_reach_exactly_the_addressed_agents(make_hub):
    hub = make_hub()

    async def go():
        a, b, c, d = [await client(hub, n).connect() for n in ("alice", "bob", "carol", "dave")]
        await a.send("bob", {"n": 1})
        await a.send("critic", {"n": 2})
        await a.send("solver", {"n": 3})
        await a.send("*", {"n": 4})
        got = {x.name: [m.data["n"] for m in await drain(x, k)] for x, k in ((b, 3), (c, 3), (d, 1))}
        for x in (a, b, c, d):  # nothing else arrives (alice never gets her own broadcast)
            with pytest.raises(BridgeError):
                await x.recv(0.2)
        assert all(m.sender == "alice" for m in [])
        for x in (a, b, c, d):
            await x.close()
        return got

    assert run(go()) == {"bob": [1, 2, 4], "carol": [2, 3, 4], "dave": [4]}


def test_sender_is_stamped_by_the_hub(make_hub):
    hub = make_hub()

    async def go():
        async with client(hub, "alice") as a, client(hub, "bob") as b:
            # alice claims to be dave; the hub overwrites `from` with the authenticated name
            from k1.bridge.protocol import Envelope
            await a._submit(Envelope(type="message", sender="dave", to="bob", data="hi"))
            return (await b.recv(5)).sender

    assert run(go()) == "alice"


def test_messages_to_an_offline_agent_arrive_in_order_when_it_joins(make_hub):
    hub = make_hub()

    async def go():
        async with client(hub, "alice") as a:
            ids = [await a.send("dave", i) for i in range(20)]
        async with client(hub, "dave") as d:
            assert d.welcome["pending"] == 20
            msgs = await drain(d, 20)
        return ids, msgs

    ids, msgs = run(go())
    assert [m.id for m in msgs] == ids and [m.data for m in msgs] == list(range(20))
    # dave acked all, the last one on close (the hub applies that ack a moment after the socket closes)
    assert wait_until(lambda: counts(hub)["pending_deliveries"] == 0, timeout=5)


def test_request_reply_and_timeout(make_hub):
    hub = make_hub()

    async def go():
        async with client(hub, "alice") as a, client(hub, "bob") as b:
            async def answer():
                m = await b.recv(5)
                await b.reply(m, {"sum": sum(m.data)})
            task = asyncio.create_task(answer())
            r = await a.request("bob", [2, 3], timeout=5)
            await task
            with pytest.raises(BridgeError, match="no reply"):
                await a.request("carol", "anyone?", timeout=0.3)
            return r

    r = run(go())
    assert r.data == {"sum": 5} and r.sender == "bob" and r.type == "reply"


def test_tensor_frames_are_json_header_plus_safetensors(make_hub):
    hub = make_hub()
    t = {"w": torch.randn(3, 4), "idx": torch.arange(5)}

    async def go():
        async with client(hub, "alice") as a, client(hub, "bob") as b:
            await a.send_tensors("bob", t, {"step": 7})
            m = await b.recv(5)
            return m

    m = run(go())
    assert m.type == "tensor" and m.data == {"step": 7}
    got = m.tensors()
    assert torch.equal(got["w"], t["w"]) and torch.equal(got["idx"], t["idx"])
    if hub.cfg.backend != "sqlite":
        return
    # the stored payload is a safetensors file, not a JSON list of floats
    from safetensors.torch import load
    row = ExchangeLog(hub.cfg.db).db.execute("SELECT envelope, payload FROM messages").fetchone()
    assert "[" not in row[0].split('"data"')[1][:30] and torch.equal(load(row[1])["w"], t["w"])


def test_unknown_recipient_is_an_error_reply(make_hub):
    hub = make_hub()

    async def go():
        async with client(hub, "alice") as a:
            with pytest.raises(BridgeError, match="unknown_recipient"):
                await a.send("nobody", 1)
            return await a.send("bob", 2)  # the connection is still usable

    assert run(go())


def test_sync_client_for_plain_scripts(make_hub):
    import threading

    from k1.bridge import SyncBridgeClient

    hub = make_hub()
    with SyncBridgeClient(url(hub), "alice", "tok-alice") as a, SyncBridgeClient(url(hub), "bob", "tok-bob") as b:
        def echo():
            m = b.recv(timeout=10)
            b.reply(m, {"echo": m.data})
            t = b.recv(timeout=10)
            b.reply(t, {"sum": float(t.tensors()["x"].sum())})

        th = threading.Thread(target=echo)
        th.start()
        r1 = a.request("bob", "ping", timeout=10)
        a.send_tensors("bob", {"x": torch.ones(4)}, {"what": "ones"})
        r2 = a.recv(timeout=10)
        th.join(10)
    assert r1.data == {"echo": "ping"} and r2.data == {"sum": 4.0}
