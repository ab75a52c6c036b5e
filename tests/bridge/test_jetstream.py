"""What only the JetStream backend does: several hub processes on one NATS deliver each message once,
whichever process the sender and the recipient use; a resend through another process is still a duplicate;
a message delivered max_deliver times without an ack becomes a visible dead letter; a missing NATS server
is one line."""

import asyncio
import json
import subprocess

import pytest

from k1.bridge import (
    AgentBook,
    BackgroundHub,
    BridgeClient,
    HubConfig,
    write_agents_file,
)
from k1.bridge.testing import (
    bridge_cmd,
    jetstream_config,
    run,
    start_hub_process,
    subprocess_env,
    unique_stream,
    url,
)

AGENTS = {"alice": ("ta", "any"), "bob": ("tb", ["critic"]), "odd.name *>": ("to", [])}


def hub_processes(tmp_path, nats_url, n=2, *extra):
    agents = write_agents_file(tmp_path / "agents.toml", AGENTS)
    stream = unique_stream()
    hubs = [start_hub_process(agents, tmp_path / f"unused{i}.sqlite", 0, "--backend", nats_url, "--stream", stream,
                              "--ack-wait", "2", *extra) for i in range(n)]
    return [p for p, _ in hubs], [f"ws://127.0.0.1:{port}" for _, port in hubs], stream


def test_two_hub_processes_deliver_each_message_once(tmp_path, nats_url):
    procs, (ua, ub), _ = hub_processes(tmp_path, nats_url)
    n = 150

    async def go():
        a = await BridgeClient(ua, "alice", "ta").connect()
        b = await BridgeClient(ub, "bob", "tb", roles=["critic"]).connect()
        o = await BridgeClient(ua, "odd.name *>", "to").connect()
        sent = [await a.send("critic" if i % 2 else "bob", i) for i in range(n)]
        await b.send("odd.name *>", "hello odd")  # bob on process B → an agent on process A with an awkward name
        got = []
        while len(got) < n:
            m = await b.recv(10)
            got.append(m.id)
        odd = await o.recv(10)
        with pytest.raises(Exception, match="no message"):
            await b.recv(1.0)  # nothing comes twice
        # the same (sender, id) resent through the other process is dropped by the server's de-duplication
        a2 = await BridgeClient(ub, "alice", "ta").connect()
        receipt = await a2._submit(__import__("k1.bridge.protocol", fromlist=["Envelope"]).Envelope(
            id=sent[0], type="message", to="bob", data="again"))
        for c in (a, b, o, a2):
            await c.close()
        return sent, got, odd.data, receipt

    try:
        sent, got, odd, receipt = run(go(), timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert got == sent and odd == "hello odd" and receipt["duplicate"] is True


def test_a_message_never_acked_becomes_a_dead_letter(tmp_path, nats_url):
    agents = write_agents_file(tmp_path / "agents.toml", AGENTS)
    cfg = HubConfig(port=0, **{**jetstream_config(nats_url), "max_deliver": 2})

    async def go(hub):
        async with BridgeClient(url(hub), "alice", "ta") as a:
            mid = await a.send("bob", "poison")
        for _ in range(2):  # bob's handler fails twice: no ack, the hub naks it on disconnect
            with pytest.raises(RuntimeError):
                async with BridgeClient(url(hub), "bob", "tb") as b:
                    await b.recv(5)
                    raise RuntimeError("handler failed")
        async with BridgeClient(url(hub), "bob", "tb") as b:
            with pytest.raises(Exception, match="no message"):
                await b.recv(1.5)
        await asyncio.sleep(0.3)
        return mid, await hub.backend.dead_letters()

    with BackgroundHub(cfg, AgentBook.from_file(agents)) as hub:
        mid, dead = asyncio.run_coroutine_threadsafe(go(hub), hub.loop).result(60)
    assert [(d["recipient"], d["deliveries"], d["envelope"]["id"]) for d in dead] == [("bob", 2, mid)]
    r = subprocess.run(bridge_cmd("dead", "--backend", nats_url, "--stream", cfg.stream), capture_output=True,
                       text=True, env=subprocess_env(), timeout=60, check=True)
    assert json.loads(r.stdout.splitlines()[0])["envelope"]["data"] == "poison"


def test_an_unreachable_nats_server_is_one_line(tmp_path):
    agents = write_agents_file(tmp_path / "agents.toml", AGENTS)
    r = subprocess.run(bridge_cmd("serve", "--agents", agents, "--port", "0", "--backend", "nats://127.0.0.1:9"),
                       capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False)
    assert r.returncode != 0 and "cannot reach NATS at nats://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(bridge_cmd("serve", "--agents", agents, "--port", "0", "--backend", "redis://x"),
                       capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False)
    assert r.returncode == 2 and "nats://HOST:PORT" in r.stderr and "Traceback" not in r.stderr


def test_ids_and_names_cannot_inject_nats_headers_or_subjects(make_hub, backend):
    """Ids travel hex-encoded in headers and as a hash in Nats-Msg-Id; a CR/LF or a subject wildcard in an id is
    just text."""
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "alice", "tok-alice") as a, BridgeClient(url(hub), "bob", "tok-bob") as b:
            await a.send("bob", "one", id="x\r\nNats-Msg-Id: y")
            await a.send("bob", "two", id="y")
            await a.send("bob", "three", id="*.>")
            return [(m.id, m.data) for m in [await b.recv(5) for _ in range(3)]]

    assert run(go()) == [("x\r\nNats-Msg-Id: y", "one"), ("y", "two"), ("*.>", "three")]


def test_while_nats_is_down_sends_are_unavailable_and_a_resend_is_delivered_once(tmp_path):
    """`unavailable` means "not receipted": the message may still be stored once NATS is back (a publish
    already on its way), so the sender resends the same id (BridgeClient does) and the server drops the
    repeat: the recipient gets it once."""
    from k1.bridge.testing import start_nats

    try:
        nats_proc, nats_url = start_nats(tmp_path / "nats")
    except RuntimeError as e:
        pytest.skip(f"JetStream backend not tested: {e}")
    agents = write_agents_file(tmp_path / "agents.toml", AGENTS)
    port = int(nats_url.rsplit(":", 1)[1])
    try:
        with BackgroundHub(HubConfig(port=0, **jetstream_config(nats_url)), AgentBook.from_file(agents)) as hub:
            async def go():
                nonlocal nats_proc
                async with BridgeClient(url(hub), "alice", "ta", retry_limited=False) as a, \
                        BridgeClient(url(hub), "bob", "tb") as b:
                    await a.send("bob", "before")
                    nats_proc.kill()
                    await asyncio.to_thread(nats_proc.wait)
                    with pytest.raises(Exception, match="unavailable"):
                        await a.send("bob", "while down", id="w1")
                    nats_proc, _ = await asyncio.to_thread(start_nats, tmp_path / "nats", port)
                    for _ in range(100):  # nats-py reconnects on its own; resend until receipted
                        try:
                            await a.send("bob", "while down", id="w1")
                            break
                        except Exception:  # noqa: BLE001  still unavailable
                            await asyncio.sleep(0.1)
                    await a.send("bob", "after")
                    got = [(await b.recv(10)).data for _ in range(3)]
                    with pytest.raises(Exception, match="no message"):
                        await b.recv(1.0)
                    return got

            got = asyncio.run_coroutine_threadsafe(go(), hub.loop).result(60)
    finally:
        nats_proc.kill()
        nats_proc.wait()
    assert got == ["before", "while down", "after"]


def test_the_test_nats_server_has_room_for_every_tests_stream(tmp_path):
    """Each test hub reserves a 1 GiB stream and nats-server's default store limit is 75 % of the free disk: a
    full test session on a disk with under ~40 GB free was refused ('insufficient storage resources available')
    from the 40th stream on. The test server reserves accounting room for them (the streams stay tiny)."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    from k1.bridge.testing import start_nats

    try:
        p, u = start_nats(tmp_path / "nats")
    except RuntimeError as e:
        pytest.skip(f"JetStream backend not tested: {e}")

    async def go():
        nc = await nats.connect(u)
        try:
            for i in range(64):
                await nc.jetstream().add_stream(StreamConfig(name=f"R{i}", subjects=[f"r{i}.>"], max_bytes=1 << 30,
                                                             storage=StorageType.FILE))
        finally:
            await nc.close()

    try:
        asyncio.run(go())
    finally:
        p.kill()
        p.wait()
