"""`k1 bridge serve | send | listen | log`: run a hub, and talk to it from a terminal (`agent` and `collab`
are the agents' commands: `k1` adds them from k1.agents.cli, so the transport never imports models)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from k1.bridge.protocol import DEFAULT_PORT
from k1.errors import BridgeError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="The agent bridge: a WebSocket hub and its tools.")
URL = typer.Option(f"ws://127.0.0.1:{DEFAULT_PORT}", "--url", help="The hub (wss:// for TLS).")
NAME = typer.Option(..., "--name", help="This agent's name, as in the hub's agents file.")
TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the token (else $K1_BRIDGE_TOKEN).")


@app.command()
def serve(
    agents: Path = typer.Option(..., "--agents", help="Agents file (TOML): names, token sources, allowed roles."),
    db: Path = typer.Option(Path("runs/bridge/bridge.sqlite"), "--db", help="Exchange log (SQLite)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="0 picks a free port (printed)."),
    max_size: int = typer.Option(1 << 20, "--max-size", help="Largest frame in bytes (larger: close 1009)."),
    rate: float = typer.Option(200.0, "--rate", help="Messages per second per agent (0: unlimited)."),
    burst: int = typer.Option(400, "--burst", help="Rate-limit bucket size."),
    byte_rate: float = typer.Option(4 << 20, "--byte-rate", help="Bytes per second per agent (0: unlimited)."),
    byte_burst: int = typer.Option(8 << 20, "--byte-burst", help="Byte bucket size (at least --max-size)."),
    max_pending: int = typer.Option(10_000, "--max-pending", help="Unacked messages held per (sender, recipient)."),
    max_pending_bytes: int = typer.Option(256 << 20, "--max-pending-bytes",
                                          help="Unacked bytes held per (sender, recipient)."),
    max_sender_bytes: int = typer.Option(1 << 30, "--max-sender-bytes",
                                         help="Bytes one sender may have in the log within the retention, acked or not."),
    retention: float = typer.Option(7 * 86400.0, "--retention",
                                    help="Seconds a message stays in the log, acked or not (0: forever)."),
    max_unauthenticated: int = typer.Option(64, "--max-unauthenticated",
                                            help="Connections allowed to wait for registration at once."),
    max_unauthenticated_per_address: int = typer.Option(8, "--max-unauthenticated-per-address",
                                                        help="The same, from one client address."),
    certfile: Optional[Path] = typer.Option(None, "--certfile", help="TLS certificate (with --keyfile)."),
    keyfile: Optional[Path] = typer.Option(None, "--keyfile", help="TLS private key."),
    durable: bool = typer.Option(False, "--durable", help="SQLite synchronous=FULL: survive power loss, slower."),
    backend: str = typer.Option("sqlite", "--backend",
                                help="Where messages live: sqlite (--db, one hub process) or nats://HOST:PORT "
                                     "(a JetStream stream several hub processes share)."),
    stream: str = typer.Option("K1_BRIDGE", "--stream", help="JetStream: the stream's name."),
    ack_wait: float = typer.Option(30.0, "--ack-wait",
                                   help="JetStream: seconds a delivered message may stay unacked before it is resent."),
    max_deliver: int = typer.Option(10, "--max-deliver",
                                    help="JetStream: deliveries without an ack before a message is dead-lettered."),
    redeliver_backoff: str = typer.Option("", "--redeliver-backoff",
                                          help="JetStream: comma-separated seconds between successive redeliveries "
                                               "(replaces --ack-wait), e.g. 5,30,120."),
    dedupe_window: float = typer.Option(600.0, "--dedupe-window",
                                        help="JetStream: seconds in which a resent (sender, id) is dropped."),
    stream_max_bytes: int = typer.Option(1 << 30, "--stream-max-bytes", help="JetStream: the stream's size limit."),
    replicas: int = typer.Option(1, "--replicas", help="JetStream: copies of the stream in a NATS cluster."),
    sweep_every: float = typer.Option(60.0, "--sweep-every", help="Seconds between retention sweeps (SQLite)."),
):
    """Run the hub until Ctrl-C. Prints one line `listening ws://HOST:PORT` once it accepts connections."""
    from k1.bridge.auth import AgentBook
    from k1.bridge.hub import HubConfig, serve_forever

    if (certfile is None) != (keyfile is None):
        raise ConfigError("TLS needs both --certfile and --keyfile")
    book = AgentBook.from_file(agents)
    cfg = HubConfig(host=host, port=port, db=db, max_size=max_size, rate=rate, burst=burst, byte_rate=byte_rate,
                    byte_burst=byte_burst, max_pending=max_pending, max_pending_bytes=max_pending_bytes,
                    max_sender_bytes=max_sender_bytes, retention=retention, max_unauthenticated=max_unauthenticated,
                    max_unauthenticated_per_address=max_unauthenticated_per_address, certfile=certfile,
                    keyfile=keyfile, durable=durable, backend=backend, stream=stream, ack_wait=ack_wait,
                    max_deliver=max_deliver, redeliver_backoff=_seconds(redeliver_backoff, "--redeliver-backoff"),
                    dedupe_window=dedupe_window, stream_max_bytes=stream_max_bytes, replicas=replicas,
                    sweep_every=sweep_every)
    scheme = "wss" if certfile else "ws"
    if cfg.public_without_tls:
        print(f"warning: listening on {host} without TLS: tokens and messages cross the network in plain text; "
              "give --certfile and --keyfile", file=sys.stderr, flush=True)

    def ready(hub):
        store = f"store={backend} stream={stream}" if cfg.jetstream else f"log={db}"
        print(f"listening {scheme}://{host}:{hub.port} agents={len(book.entries)} {store}", flush=True)

    try:
        asyncio.run(serve_forever(cfg, book, ready))
    except OSError as e:
        raise BridgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _seconds(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: comma-separated seconds, e.g. 5,30,120") from None


def _client(url, name, token_file, roles=(), inbox=None):
    from k1.bridge.auth import read_token
    from k1.bridge.client import BridgeClient

    return BridgeClient(url, name, read_token(token_file), roles=list(roles), inbox=inbox)


@app.command()
def send(
    to: str = typer.Option(..., "--to", help="An agent name, a role, or '*'."),
    data: str = typer.Option(..., "--data", help="JSON, or plain text (sent as a string)."),
    type_: str = typer.Option("message", "--type", help="The message type."),
    wait_reply: float = typer.Option(0.0, "--wait-reply", help="Wait this many seconds for a reply and print it."),
    url: str = URL, name: str = NAME, token_file: Optional[Path] = TOKEN_FILE,
):
    """Send one message; prints its id (and the reply with --wait-reply)."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        payload = data

    async def go():
        async with _client(url, name, token_file) as c:
            if wait_reply > 0:
                r = await c.request(to, payload, type=type_, timeout=wait_reply)
                print(json.dumps(r.envelope.wire()))
            else:
                print(await c.send(to, payload, type=type_))

    asyncio.run(go())


@app.command()
def listen(
    roles: str = typer.Option("", "--roles", help="Comma-separated roles to take."),
    count: int = typer.Option(0, "--count", help="Stop after this many messages (0: run until Ctrl-C)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Stop when no message came for this many seconds."),
    inbox: Optional[Path] = typer.Option(None, "--inbox", help="Durable inbox (SQLite): exactly once across restarts."),
    url: str = URL, name: str = NAME, token_file: Optional[Path] = TOKEN_FILE,
):
    """Print each message addressed to this agent as one JSON line."""
    role_list = [r for r in roles.split(",") if r]

    async def go():
        async with _client(url, name, token_file, role_list, inbox) as c:
            n = 0
            while count == 0 or n < count:
                try:
                    msg = await c.recv(timeout=timeout or None)
                except BridgeError:
                    break
                line = msg.envelope.wire()
                if msg.payload is not None:
                    try:
                        line["tensors"] = {k: list(v.shape) for k, v in msg.tensors().items()}
                    except BridgeError as e:  # not processed: say so, do not ack, carry on
                        print(f"k1: error: {e}", file=sys.stderr, flush=True)
                        await c.release(msg, redeliver=False)
                        continue
                print(json.dumps(line), flush=True)
                await c.ack(msg)  # printed = processed
                n += 1

    asyncio.run(go())


@app.command("log")
def show_log(
    db: Path = typer.Option(Path("runs/bridge/bridge.sqlite"), "--db", help="The hub's exchange log."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Only messages from or to this agent."),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
):
    """The newest messages in the exchange log, with who has acked each."""
    from k1.bridge.store import ExchangeLog

    if not db.is_file():
        raise ConfigError(f"--db {db}: no such exchange log")
    store = ExchangeLog(db)
    rows = store.history(agent, limit)
    for r in rows:
        if as_json:
            print(json.dumps(r))
        else:
            acked = " ".join(f"{k}{'✓' if v else '…'}" for k, v in r["delivered"].items())
            body = json.dumps(r["data"])
            body = body if len(body) <= 60 else body[:57] + "..."
            print(f"{r['seq']:>6} {r['from']:>12} → {r['to']:<12} {r['type']:<10} {body:<60} {acked}")
    if not as_json:
        c = store.counts()
        print(f"{c['messages']} messages, {c['pending_deliveries']} deliveries not yet acked", file=sys.stderr)
    store.close()



@app.command()
def dead(
    backend: str = typer.Option(..., "--backend", help="The NATS server (nats://HOST:PORT)."),
    stream: str = typer.Option("K1_BRIDGE", "--stream"),
    limit: int = typer.Option(100, "--limit"),
):
    """JetStream: the messages delivered --max-deliver times without an ack (one JSON object per line)."""
    from k1.bridge.backends.jetstream import JetStreamBackend
    from k1.bridge.hub import HubConfig

    async def go():
        b = JetStreamBackend(HubConfig(backend=backend, stream=stream))
        await b.start(manage=False)
        try:
            for row in await b.dead_letters(limit):
                print(json.dumps(row), flush=True)
        finally:
            await b.stop()

    asyncio.run(go())
