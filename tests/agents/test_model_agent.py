"""Model agents on a real hub: a pool member answers generate requests by role; the collaboration recipe
runs through the hub with every exchange logged, and is scored by verifiers."""

import asyncio

from k1.bridge import BridgeClient, ExchangeLog
from k1.agents.model import ModelAgent, ask_agent
from k1.agents.collab import self_hosted
from k1.bridge.testing import run, url
from k1.tasks.task import arithmetic_tasks


def test_a_pool_member_joins_with_a_role_and_answers_through_the_hub(make_hub):
    from k1.pool.testing import tiny_hf_member

    hub = make_hub()
    member = tiny_hf_member()

    async def go():
        async with BridgeClient(url(hub), "carol", "tok-carol", roles=["solver"]) as agent_client, \
                BridgeClient(url(hub), "alice", "tok-alice") as alice:
            stop = asyncio.Event()
            serving = asyncio.create_task(ModelAgent(agent_client, member).serve(stop))
            reply = await ask_agent(alice, "solver", [{"role": "user", "content": "hi"}], max_tokens=5, timeout=30)
            bad = await alice.request("solver", {"max_tokens": 3}, type="generate", timeout=30)  # no prompt
            stop.set()
            await serving
            return reply, bad

    reply, bad = run(go(), timeout=60)
    assert "bad generate request" in bad.data["error"]
    assert reply["from"] == "carol" and reply["member"] == member.name and reply["completion_tokens"] <= 5
    assert reply["cost"]["atp"] > 0 and reply["cost"]["flops"] > 0
    types = [r["type"] for r in ExchangeLog(hub.cfg.db).history()]
    assert types == ["generate", "reply", "generate", "reply"]


def test_propose_critique_revise_runs_through_a_self_hosted_hub(tmp_path):
    from k1.testing import tiny_run

    run_dir = tiny_run(tmp_path, steps=10)
    tasks = arithmetic_tasks("d1")[:3]
    db = tmp_path / "collab.sqlite"
    result = asyncio.run(self_hosted(tasks, f"k1:{run_dir}", f"k1:{run_dir}", db, quiet=True))
    po, pcr = result["propose_only"], result["propose_critique_revise"]
    assert po["n"] == pcr["n"] == 3 and pcr["atp_per_task"] > po["atp_per_task"] > 0
    # per task: 1 request + 1 reply (propose-only), 3 requests + 3 replies (propose-critique-revise)
    assert result["hub"]["messages"] == 3 * 8 and result["hub"]["pending_deliveries"] == 0
    log = ExchangeLog(db).history(limit=100)
    assert {r["from"] for r in log} == {"coordinator", "proposer", "critic"}
    assert all(r["solved"] == (r["score"] == 1.0) for r in result["rows"]["propose_critique_revise"])
