"""Auth rejection, oversize and malformed frames, reserved types, rate limits, heartbeats."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from k1.bridge import BridgeClient, HubRefused
from k1.bridge.protocol import PROTOCOL_VERSION
from k1.errors import BridgeError

from k1.bridge.testing import run, url


def register_frame(name, token, version=PROTOCOL_VERSION):
    return json.dumps({"type": "register", "data": {"name": name, "token": token, "roles": [], "version": version}})


@pytest.mark.parametrize("name,token,code", [("alice", "wrong", "auth_failed"), ("mallory", "tok-alice", "auth_failed")])
def test_wrong_token_or_unknown_agent_is_rejected_and_disconnected(make_hub, name, token, code):
    hub = make_hub()

    async def go():
        with pytest.raises(HubRefused, match=code):
            await BridgeClient(url(hub), name, token).connect()
        async with connect(url(hub)) as ws:
            await ws.send(register_frame(name, token))
            reply = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return reply, ws.close_code

    reply, close_code = run(go())
    assert reply["type"] == "error" and reply["data"]["code"] == code and close_code == 1008
    assert name not in hub.online


def test_first_message_must_register_and_version_must_match(make_hub):
    hub = make_hub()

    async def go():
        out = []
        for frame in (json.dumps({"type": "message", "to": "bob", "data": 1}), register_frame("alice", "tok-alice", 99)):
            async with connect(url(hub)) as ws:
                await ws.send(frame)
                out.append(json.loads(await ws.recv())["data"]["code"])
        return out

    assert run(go()) == ["not_registered", "bad_version"]


def test_roles_outside_the_agents_file_are_refused(make_hub):
    hub = make_hub()
    with pytest.raises(HubRefused, match="may not take roles"):
        run(BridgeClient(url(hub), "bob", "tok-bob", roles=["admin"]).connect())


def test_oversize_frame_closes_with_1009_and_the_hub_carries_on(make_hub):
    hub = make_hub(max_size=10_000)

    async def go():
        async with BridgeClient(url(hub), "bob", "tok-bob") as bob:
            async with connect(url(hub), max_size=None) as ws:
                await ws.send(register_frame("alice", "tok-alice"))
                await ws.recv()  # welcome
                await ws.send(json.dumps({"type": "message", "to": "bob", "data": "x" * 20_000}))
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                code = ws.close_code
            # the hub still routes: a fresh alice gets through to bob, and the big message was never logged
            async with BridgeClient(url(hub), "alice", "tok-alice") as a:
                await a.send("bob", "small")
                m = await bob.recv(5)
                with pytest.raises(BridgeError, match="exceeds the hub's max_size"):
                    await a.send("bob", "y" * 20_000)  # the client checks the limit from the welcome
            return code, m.data

    assert run(go()) == (1009, "small")


def test_malformed_json_and_bad_envelopes_get_error_replies_not_a_crash(make_hub):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "bob", "tok-bob") as bob, connect(url(hub)) as ws:
            await ws.send(register_frame("alice", "tok-alice"))
            await ws.recv()
            codes = []
            for frame in ("{not json", "[1, 2]", json.dumps({"type": "message", "to": "bob", "extra": 1}),
                          json.dumps({"type": "welcome", "to": "bob"}), json.dumps({"type": "ack", "data": 3}),
                          b"\x00\x00\x10\x00{}", b"\x00"):
                await ws.send(frame)
                codes.append(json.loads(await ws.recv())["data"]["code"])
            await ws.send(json.dumps({"type": "message", "to": "bob", "data": "still here", "id": "m1"}))
            receipt = json.loads(await ws.recv())
            got = await bob.recv(5)
            return codes, receipt, got.data

    codes, receipt, data = run(go())
    assert codes == ["bad_json", "bad_envelope", "bad_envelope", "reserved_type", "bad_envelope", "bad_json", "bad_json"]
    assert receipt["type"] == "receipt" and receipt["reply_to"] == "m1" and data == "still here"


def test_rate_limit_drops_with_an_error_and_recovers(make_hub):
    hub = make_hub(rate=20, burst=5)

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice", retry_limited=False) as a, \
                BridgeClient(url(hub), "bob", "tok-bob"):
            sent, limited = 0, 0
            for i in range(10):
                try:
                    await a.send("bob", i)
                    sent += 1
                except BridgeError as e:
                    assert e.code == "rate_limited"
                    limited += 1
            await asyncio.sleep(0.2)  # the bucket refills at 20/s
            await a.send("bob", "later")
            return sent, limited

    sent, limited = run(go())
    assert sent >= 5 and limited >= 1 and sent + limited == 10


def test_a_rate_limited_client_backs_off_and_resends_by_default(make_hub):
    hub = make_hub(rate=20, burst=5)

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a, BridgeClient(url(hub), "bob", "tok-bob") as b:
            for i in range(15):
                await a.send("bob", i)  # none raises: refused sends wait and go again
            got = []
            for _ in range(15):
                m = await b.recv(5)
                got.append(m.data)
                await b.ack(m)
            return got, a.stats["limited"]

    got, limited = run(go())
    assert got == list(range(15)) and limited >= 1


def test_heartbeats_drop_a_peer_that_stops_answering(make_hub):
    hub = make_hub(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)

    async def go():
        c = await BridgeClient(url(hub), "dave", "tok-dave", backoff=(30, 30)).connect()
        assert "dave" in hub.online
        c._ws.transport.pause_reading()  # a hung process: it stops reading, so it never answers pings
        for _ in range(50):
            await asyncio.sleep(0.05)
            if "dave" not in hub.online:
                break
        c._closing = True
        c._task.cancel()
        return "dave" in hub.online

    assert run(go()) is False


def test_tls_hub_with_a_self_signed_certificate(make_hub, tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    hub = make_hub(certfile=cert, keyfile=key)
    ctx = ssl.create_default_context(cafile=str(cert))

    async def go():
        wss = f"wss://127.0.0.1:{hub.port}"
        async with BridgeClient(wss, "alice", "tok-alice", ssl=ctx) as a, BridgeClient(wss, "bob", "tok-bob", ssl=ctx) as b:
            await a.send("bob", "over tls")
            got = (await b.recv(5)).data
        with pytest.raises(BridgeError, match="could not reach"):  # plain ws:// to a TLS hub fails the handshake
            await BridgeClient(url(hub), "alice", "tok-alice").connect(timeout=1)
        return got

    assert run(go()) == "over tls"
