"""Propose–critique–revise through the bridge, measured against propose-only on verifiable tasks.

The coordinator is an agent too: it asks the `proposer` role for an answer, the `critic` role for a
critique, and the proposer again for a revision; every exchange goes through the hub and is in its log.
Success is decided by the loop's verifiers only (never by the critic); cost is what the agents report.
"""

from __future__ import annotations

import statistics

from k1.agents.model import ask_agent
from k1.bridge.client import BridgeClient
from k1.selflearn.formats import MAX_TOKENS
from k1.tasks.task import Task
from k1.tasks.verifiers import solved, verify

SUFFIX = {"arithmetic": " Answer with just the number.", "python": ""}


def critique_prompt(task: Task, answer: str) -> list[dict]:
    return [{"role": "user", "content": f"Question: {task.prompt}\nProposed answer: {answer.strip()}\n"
                                        "Is the proposed answer correct? Check it, then say CORRECT or WRONG "
                                        "and why, in one or two sentences."}]


def revise_prompt(task: Task, answer: str, critique: str) -> list[dict]:
    return [{"role": "user", "content": task.prompt + SUFFIX[task.kind]},
            {"role": "assistant", "content": answer.strip()},
            {"role": "user", "content": f"A reviewer checked your answer and said: \"{critique.strip()}\"\n"
                                        f"Give your final answer.{SUFFIX[task.kind]}"}]


async def propose_only(client: BridgeClient, task: Task, proposer: str = "proposer") -> dict:
    p = await ask_agent(client, proposer, [{"role": "user", "content": task.prompt + SUFFIX[task.kind]}],
                        max_tokens=MAX_TOKENS[task.kind])
    score = verify(task, p["text"])
    return {"task": task.id, "answer": p["text"], "score": score, "solved": solved(score), "steps": [p],
            "atp": p["cost"]["atp"], "latency_s": p["cost"]["latency_s"]}


async def propose_critique_revise(client: BridgeClient, task: Task, proposer: str = "proposer",
                                  critic: str = "critic", critique_tokens: int = 48) -> dict:
    p = await ask_agent(client, proposer, [{"role": "user", "content": task.prompt + SUFFIX[task.kind]}],
                        max_tokens=MAX_TOKENS[task.kind])
    c = await ask_agent(client, critic, critique_prompt(task, p["text"]), max_tokens=critique_tokens)
    r = await ask_agent(client, proposer, revise_prompt(task, p["text"], c["text"]), max_tokens=MAX_TOKENS[task.kind])
    score = verify(task, r["text"])
    steps = [p, c, r]
    return {"task": task.id, "proposal": p["text"], "proposal_solved": solved(verify(task, p["text"])),
            "critique": c["text"], "answer": r["text"], "score": score, "solved": solved(score), "steps": steps,
            "atp": sum(s["cost"]["atp"] for s in steps), "latency_s": sum(s["cost"]["latency_s"] for s in steps)}


def summarize(name: str, rows: list[dict]) -> dict:
    n = len(rows)
    k = sum(r["solved"] for r in rows)
    return {"recipe": name, "n": n, "solved": k, "rate": k / n if n else 0.0,
            "atp_per_task": round(statistics.fmean(r["atp"] for r in rows), 3) if rows else 0.0,
            "latency_s_per_task": round(statistics.fmean(r["latency_s"] for r in rows), 3) if rows else 0.0}


async def measure(client: BridgeClient, tasks: list[Task], proposer: str = "proposer", critic: str = "critic",
                  progress=None) -> dict:
    """Both recipes on the same tasks through the hub → {"propose_only", "propose_critique_revise", "rows"}."""
    rows = {"propose_only": [], "propose_critique_revise": []}
    for t in tasks:
        rows["propose_only"].append(await propose_only(client, t, proposer))
        rows["propose_critique_revise"].append(await propose_critique_revise(client, t, proposer, critic))
        if progress is not None:
            progress()
    out = {k: summarize(k, v) for k, v in rows.items()}
    pcr = rows["propose_critique_revise"]
    out["revisions"] = {"fixed": sum(r["solved"] and not r["proposal_solved"] for r in pcr),
                        "broke": sum(r["proposal_solved"] and not r["solved"] for r in pcr)}
    out["rows"] = rows
    return out


async def self_hosted(tasks: list[Task], proposer_spec: str, critic_spec: str, db, quiet: bool = False) -> dict:
    """A hub on a free port, two model agents (proposer, critic) and a coordinator, all on 127.0.0.1."""
    import asyncio
    import secrets
    from pathlib import Path

    from rich.progress import Progress

    from k1.agents.model import ModelAgent
    from k1.bridge.auth import AgentBook, AgentEntry
    from k1.bridge.hub import Hub, HubConfig
    from k1.selflearn import members

    tokens = {n: secrets.token_hex(16) for n in ("proposer", "critic", "coordinator")}
    roles = {"proposer": ["proposer"], "critic": ["critic"], "coordinator": []}
    book = AgentBook({n: AgentEntry(n, tokens[n], frozenset(roles[n])) for n in tokens})
    hub = await Hub(HubConfig(port=0, db=Path(db), ping_interval=20, ping_timeout=60), book).start()
    url = f"ws://127.0.0.1:{hub.port}"
    loaded = {}
    for spec in {proposer_spec, critic_spec}:
        loaded[spec] = await asyncio.to_thread(members.load, spec)
    stop = asyncio.Event()
    agents = []
    for name, spec in (("proposer", proposer_spec), ("critic", critic_spec)):
        c = await BridgeClient(url, name, tokens[name], roles=roles[name],
                               capabilities={"member": loaded[spec].info()}).connect()
        agents.append((c, asyncio.create_task(ModelAgent(c, loaded[spec]).serve(stop))))
    coord = await BridgeClient(url, "coordinator", tokens["coordinator"]).connect()
    try:
        with Progress(disable=quiet) as bar:
            job = bar.add_task("propose-only vs propose-critique-revise", total=len(tasks))
            result = await measure(coord, tasks, progress=lambda: bar.advance(job))
    finally:
        stop.set()
        for c, task in agents:
            await task
            await c.close()
        await coord.close()
        counts = await hub.stop()
    result["hub"] = {"log": str(db), **counts}
    result["members"] = {"proposer": proposer_spec, "critic": critic_spec}
    return result
