"""`k1 bridge agent | collab`: model agents and the propose–critique–revise coordinator, from a terminal.

They are added to the bridge's command group by `k1` (`k1 bridge agent ...`) but live here,
with the agents: the transport does not import models.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer

from k1.bridge.protocol import DEFAULT_PORT

URL = typer.Option(f"ws://127.0.0.1:{DEFAULT_PORT}", "--url", help="The hub (wss:// for TLS).")
NAME = typer.Option(..., "--name", help="This agent's name, as in the hub's agents file.")
TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the token (else $K1_BRIDGE_TOKEN).")


def _client(url, name, token_file, roles=(), capabilities=None):
    from k1.bridge.auth import read_token
    from k1.bridge.client import BridgeClient

    return BridgeClient(url, name, read_token(token_file), roles=list(roles), capabilities=capabilities)


def agent(
    member: str = typer.Option(..., "--member", help="k1:RUN_DIR, hf:PATH[::FILE.gguf] or smollm2."),
    roles: str = typer.Option("", "--roles", help="Comma-separated roles (e.g. proposer, critic)."),
    url: str = URL, name: str = NAME, token_file: Optional[Path] = TOKEN_FILE,
    plain_text: str = typer.Option("chat", "--plain-text", help="A plain-text prompt to a chat model: 'chat' sends "
                                   "it as one user message through the model's chat template, 'raw' as a raw "
                                   "completion (a chat model may answer a raw prompt with nothing)."),
):
    """Put a model on the bridge: it answers `generate` requests addressed to its name or roles until Ctrl-C."""
    from k1.agents.model import ModelAgent, has_chat_template
    from k1.errors import ConfigError
    from k1.selflearn import members

    if plain_text not in ("chat", "raw"):
        raise ConfigError(f"--plain-text {plain_text!r}: choose chat or raw")
    role_list = [r for r in roles.split(",") if r]
    m = members.load(member, name=name, roles=role_list)
    how = ("plain-text prompts go through its chat template (--plain-text raw: as raw completions)"
           if has_chat_template(m) and plain_text == "chat" else "plain-text prompts are raw completions")

    async def go():
        async with _client(url, name, token_file, role_list, {"member": m.info()}) as c:
            print(f"agent {name} ({m.kind}) on {url} with roles {role_list}; {how}", flush=True)
            await ModelAgent(c, m, plain=plain_text).serve()

    asyncio.run(go())


def collab(
    tasks: str = typer.Option("arithmetic:d2", "--tasks", help="Task family or JSONL task file."),
    n: int = typer.Option(30, "--n", help="How many tasks (a seeded sample)."),
    seed: int = typer.Option(0, "--seed"),
    proposer: str = typer.Option("smollm2", "--proposer", help="Member for the proposer (self-hosted mode)."),
    critic: str = typer.Option("smollm2", "--critic", help="Member for the critic (self-hosted mode)."),
    out: Path = typer.Option(Path("runs/collab"), "--out", help="Output directory (collab.json, the hub's log)."),
    url: Optional[str] = typer.Option(None, "--url", help="Use a running hub whose agents hold the roles proposer "
                                                         "and critic (default: host a hub and both agents here)."),
    name: str = typer.Option("coordinator", "--name", help="This coordinator's agent name (with --url)."),
    token_file: Optional[Path] = TOKEN_FILE,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Propose-only vs propose-critique-revise on verifiable tasks, through the bridge, with cost."""
    from k1.agents.collab import measure, self_hosted
    from k1.selflearn.runner import load_tasks
    from k1.tasks.task import split_tasks

    all_tasks = load_tasks(tasks)
    sample, _ = split_tasks(all_tasks, min(n, len(all_tasks)), 0, seed)
    out.mkdir(parents=True, exist_ok=True)

    async def remote():
        async with _client(url, name, token_file) as c:
            return await measure(c, sample)

    if url is None:
        db = out / "bridge.sqlite"
        db.unlink(missing_ok=True)
        result = asyncio.run(self_hosted(sample, proposer, critic, db, quiet))
    else:
        result = asyncio.run(remote())
    result.update(tasks=tasks, n=len(sample), seed=seed)
    (out / "collab.json").write_text(json.dumps(result, indent=1))
    for key in ("propose_only", "propose_critique_revise"):
        r = result[key]
        print(f"{key:<24} solved {r['solved']}/{r['n']} ({r['rate']:.1%})  {r['atp_per_task']:.1f} ATP/task  "
              f"{r['latency_s_per_task']:.2f} s/task")
    print(f"revisions: fixed {result['revisions']['fixed']}, broke {result['revisions']['broke']}; "
          f"→ {out}/collab.json" + (f", exchange log {result['hub']['log']} ({result['hub']['messages']} messages)"
                                     if "hub" in result else ""))
