"""Bridge load test: N agents each send M messages around a ring through a real hub in its own process.

Prints progress, then one JSON object on its last line: sent, received, lost (must be 0), duplicates,
messages per second and p50/p99 end-to-end latency (send → the recipient's recv, same clock); saves it
under runs/bench/bridge.json.

    python bench/bridge.py            # 20 clients x 500 messages
    python bench/bridge.py --quick    # 5 clients x 100 messages (the test suite runs this)

Every message goes the full path: client → hub (validate, route, SQLite append, receipt) → pump → recipient →
ack → hub (SQLite update). Each client keeps `--window` messages in flight (awaiting receipts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

from k1.bridge import BridgeClient, write_agents_file
from k1.bridge.testing import start_hub_process


async def load(port: int, tokens: dict[str, str], m: int, window: int) -> dict:
    names = sorted(tokens)
    n = len(names)
    url = f"ws://127.0.0.1:{port}"
    clients = [await BridgeClient(url, name, tokens[name], receipt_timeout=60).connect() for name in names]
    latencies: list[float] = []
    received: dict[str, list[str]] = {name: [] for name in names}
    sent: dict[str, list[str]] = {name: [] for name in names}  # by recipient

    async def send_all(i: int):
        c, to = clients[i], names[(i + 1) % n]
        sem = asyncio.Semaphore(window)

        async def one(k):
            async with sem:
                sent[to].append(await c.send(to, {"k": k, "t0": time.perf_counter()}))

        await asyncio.gather(*(one(k) for k in range(m)))

    async def recv_all(i: int):
        c = clients[i]
        while len(received[c.name]) < m:
            msg = await c.recv(timeout=60)
            latencies.append(time.perf_counter() - msg.data["t0"])
            received[c.name].append(msg.id)

    t0 = time.perf_counter()
    await asyncio.gather(*(send_all(i) for i in range(n)), *(recv_all(i) for i in range(n)))
    wall = time.perf_counter() - t0
    for c in clients:
        await c.close()
    lost = sum(len(set(sent[k]) - set(received[k])) for k in names)
    dups = sum(len(received[k]) - len(set(received[k])) for k in names)
    lat = sorted(latencies)
    return {"clients": n, "messages_per_client": m, "window": window, "sent": sum(map(len, sent.values())),
            "received": sum(map(len, received.values())), "lost": lost, "duplicates": dups,
            "msgs_per_s": round(sum(map(len, received.values())) / wall, 1), "wall_s": round(wall, 2),
            "p50_ms": round(1000 * statistics.median(lat), 2), "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--messages", type=int, default=500, help="messages each client sends")
    ap.add_argument("--window", type=int, default=8, help="messages in flight per client")
    ap.add_argument("--quick", action="store_true", help="5 clients x 100 messages")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bridge.json"))
    args = ap.parse_args()
    if args.quick:
        args.clients, args.messages = 5, 100
    tokens = {f"agent{i:02d}": f"token-{i}" for i in range(args.clients)}
    with tempfile.TemporaryDirectory() as tmp:
        agents = write_agents_file(Path(tmp) / "agents.toml", {k: (v, []) for k, v in tokens.items()})
        hub, port = start_hub_process(agents, Path(tmp) / "bench.sqlite", 0, "--rate", "0")
        try:
            print(f"hub on port {port}; {args.clients} clients x {args.messages} messages", file=sys.stderr)
            result = asyncio.run(load(port, tokens, args.messages, args.window))
        finally:
            hub.kill()
            hub.wait()
    result.update(command=" ".join(["python bench/bridge.py", *sys.argv[1:]]),
                  python=platform.python_version(), websockets=websockets.__version__, machine=platform.machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
