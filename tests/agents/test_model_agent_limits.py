"""A model agent under load and under bad requests: it backs off when the hub rate-limits its replies, and it
refuses generate parameters outside their bounds with an error reply instead of running them."""

import asyncio

import pytest

from k1.bridge import BridgeClient
from k1.agents.model import ModelAgent
from k1.bridge.testing import run, url


@pytest.fixture(scope="module")
def member():
    from k1.pool.testing import tiny_hf_member

    return tiny_hf_member()


def test_an_agent_backs_off_when_rate_limited_and_answers_everyone(make_hub, member):
    hub = make_hub(rate=6, burst=2)  # every agent: 6 messages/s; three senders at ~4/s each overload the agent

    async def go():
        async with BridgeClient(url(hub), "carol", "tok-carol", roles=["solver"]) as agent_client:
            stop = asyncio.Event()
            serving = asyncio.create_task(ModelAgent(agent_client, member).serve(stop))

            async def asker(name):
                async with BridgeClient(url(hub), name, f"tok-{name}") as c:
                    pending = []
                    for i in range(6):
                        pending.append(asyncio.create_task(
                            c.request("solver", {"prompt": f"{name} {i}", "max_tokens": 1}, type="generate",
                                      timeout=60)))
                        await asyncio.sleep(0.25)
                    return [r.data for r in await asyncio.gather(*pending)]

            replies = await asyncio.gather(*(asker(n) for n in ("alice", "bob", "dave")))
            stop.set()
            await serving  # raises if the agent died
            return replies, agent_client.stats

    replies, stats = run(go(), timeout=120)
    assert all(len(r) == 6 and all("text" in d for d in r) for r in replies)
    assert stats["limited"] >= 1  # the hub did refuse some replies; the agent waited and resent them


@pytest.mark.parametrize("data,problem", [
    ({"prompt": "hi", "max_tokens": 10**9}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": -5}, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "hi", "seed": 2**70}, "seed"),
    ({"prompt": 42}, "prompt"),
    ({"max_tokens": 3}, "prompt"),
])
def test_generate_parameters_are_validated(make_hub, member, data, problem):
    hub = make_hub()

    async def go():
        async with BridgeClient(url(hub), "carol", "tok-carol", roles=["solver"]) as agent_client, \
                BridgeClient(url(hub), "alice", "tok-alice") as alice:
            stop = asyncio.Event()
            serving = asyncio.create_task(ModelAgent(agent_client, member).serve(stop))
            r = await alice.request("solver", data, type="generate", timeout=20)
            stop.set()
            await serving
            return r.data

    reply = run(go(), timeout=60)
    assert "bad generate request" in reply.get("error", "") and problem in reply["error"]
