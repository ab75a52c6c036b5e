"""Bridge load test: N agents each send M messages around a ring through a real hub in its own process.

Prints progress, then one JSON object on its last line: sent, received, lost (must be 0), duplicates,
messages per second and p50/p99 end-to-end latency (send → the recipient's recv, same clock); saves it
under runs/bench/bridge.json.

    python bench/bridge.py            # 20 clients x 500 messages
    python bench/bridge.py --quick    # 5 clients x 100 messages (the test suite runs this)
    python bench/bridge.py --soak     # the delivery promise under churn (tests/bridge/test_soak.py, full size)
    python bench/bridge.py --soak --backend jetstream  # the same through two hub processes on one NATS, the
                                      # consumer's hub and the NATS server SIGKILLed mid-run
    python bench/bridge.py --flood    # unauthenticated connections each holding half a frame: refused, RSS bounded
    python bench/bridge.py --compare  # the load test on the embedded hub, on JetStream with one hub process and
                                      # with two (clients spread over both), one after the other in one run

Every message goes the full path: client → hub (validate, route, SQLite append, receipt) → pump → recipient →
ack → hub (SQLite update). Each client keeps `--window` messages in flight (awaiting receipts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

from k1.bridge import BridgeClient, write_agents_file
from k1.bridge.testing import soak, start_hub_process, start_nats


async def load(ports: list[int], tokens: dict[str, str], m: int, window: int) -> dict:
    """Client i talks to hub process i mod len(ports); its ring neighbour may be on the other one."""
    names = sorted(tokens)
    n = len(names)
    clients = [await BridgeClient(f"ws://127.0.0.1:{ports[i % len(ports)]}", name, tokens[name],
                                  receipt_timeout=60).connect() for i, name in enumerate(names)]
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


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def flood(tmp: Path, n: int, frame: int = 1 << 20) -> dict:
    """n raw TCP clients upgrade to WebSocket and send the first half of a `frame`-byte text frame, never
    registering: how many the hub turns away, and what the hub process's RSS does meanwhile and after."""
    import base64
    import os
    import struct

    agents = write_agents_file(tmp / "agents.toml", {"a": ("t", [])})
    hub, port = start_hub_process(agents, tmp / "flood.sqlite")
    before = _rss_mb(hub.pid)
    half = b"x" * (frame // 2)
    header = bytes([0x81, 0xFF]) + struct.pack(">Q", frame) + os.urandom(4)  # FIN text, masked, 64-bit length
    opened, upgraded, refused, writers = 0, 0, 0, []

    async def one():
        nonlocal opened, upgraded, refused
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            refused += 1
            return
        opened += 1
        writers.append(w)
        key = base64.b64encode(os.urandom(16)).decode()
        w.write((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        status = await r.readline()
        if b" 101 " not in status:
            refused += 1
            return
        upgraded += 1
        try:
            w.write(header + half)  # unmasked-by-content: the hub only needs the length to decide
            await w.drain()
        except OSError:
            pass

    try:
        await asyncio.gather(*(one() for _ in range(n)))
        await asyncio.sleep(2.0)
        during = _rss_mb(hub.pid)
        for w in writers:
            w.close()
        await asyncio.sleep(2.0)
        after = _rss_mb(hub.pid)
    finally:
        hub.kill()
        hub.wait()
    return {"connections": n, "frame_bytes": frame, "opened": opened, "upgraded": upgraded, "refused": refused,
            "offered_bytes": upgraded * len(half), "rss_mb_before": round(before, 1),
            "rss_mb_during": round(during, 1), "rss_mb_after": round(after, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--messages", type=int, default=500, help="messages each client sends")
    ap.add_argument("--window", type=int, default=8, help="messages in flight per client")
    ap.add_argument("--quick", action="store_true", help="5 clients x 100 messages")
    ap.add_argument("--soak", action="store_true", help="5 senders x 1000 messages, a failing consumer, 3 hub kills")
    ap.add_argument("--flood", type=int, default=0, metavar="N",
                    help="N unauthenticated connections, each sending half of a max-size frame")
    ap.add_argument("--backend", choices=["sqlite", "jetstream"], default="sqlite",
                    help="the hub's store (jetstream: a nats-server -js started for the run)")
    ap.add_argument("--hubs", type=int, default=1, help="hub processes (jetstream only)")
    ap.add_argument("--compare", action="store_true", help="sqlite, jetstream x1 and jetstream x2 in one run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.soak or args.flood:
        with tempfile.TemporaryDirectory() as tmp:
            if args.soak:
                result = asyncio.run(soak(Path(tmp), senders=5, messages=args.messages if args.messages != 500 else 1000,
                                          kills=3 if args.backend == "sqlite" else 2, timeout=900,
                                          backend=args.backend))
            else:
                result = asyncio.run(flood(Path(tmp), args.flood))
        result.update(command=" ".join(["python bench/bridge.py", *sys.argv[1:]]), python=platform.python_version(),
                      websockets=websockets.__version__, machine=platform.machine())
        out = args.out or Path(f"runs/bench/bridge-{'soak' if args.soak else 'flood'}"
                               f"{'-jetstream' if args.soak and args.backend == 'jetstream' else ''}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    args.out = args.out or Path("runs/bench/bridge-compare.json" if args.compare else "runs/bench/bridge.json")
    if args.quick:
        args.clients, args.messages = 5, 100
    tokens = {f"agent{i:02d}": f"token-{i}" for i in range(args.clients)}
    setups = [("sqlite", 1), ("jetstream", 1), ("jetstream", 2)] if args.compare else [(args.backend, args.hubs)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        agents = write_agents_file(Path(tmp) / "agents.toml", {k: (v, []) for k, v in tokens.items()})
        for k, (backend, hubs) in enumerate(setups):
            runs.append(run_load(Path(tmp) / f"run{k}", agents, tokens, backend, hubs, args))
    result = runs[0] if len(runs) == 1 else {
        "runs": runs, "msgs_per_s_ratio_to_sqlite": [round(r["msgs_per_s"] / runs[0]["msgs_per_s"], 2) for r in runs],
        "p99_ratio_to_sqlite": [round(r["p99_ms"] / runs[0]["p99_ms"], 2) for r in runs],
        "load_avg_1m_before": runs[0]["load_avg_1m_before"]}
    result.update(command=" ".join(["python bench/bridge.py", *sys.argv[1:]]),
                  python=platform.python_version(), websockets=websockets.__version__, machine=platform.machine(),
                  cpus=os.cpu_count())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def run_load(tmp: Path, agents: Path, tokens: dict, backend: str, hubs: int, args) -> dict:
    """The load test through `hubs` hub processes on `backend` (a fresh NATS server for JetStream)."""
    tmp.mkdir(parents=True)
    nats_proc, extra = None, ["--rate", "0"]
    if backend == "jetstream":
        nats_proc, nats_url = start_nats(tmp / "nats")
        extra += ["--backend", nats_url, "--stream", "BENCH"]
    procs, ports = [], []
    load_before = os.getloadavg()[0]
    try:
        for _ in range(hubs):
            p, port = start_hub_process(agents, tmp / "bench.sqlite", 0, *extra)
            procs.append(p)
            ports.append(port)
        print(f"{backend} x{hubs} on ports {ports}; {args.clients} clients x {args.messages} messages", file=sys.stderr)
        result = asyncio.run(load(ports, tokens, args.messages, args.window))
    finally:
        for p in procs + ([nats_proc] if nats_proc else []):
            p.kill()
            p.wait()
    return {"backend": backend, "hub_processes": hubs, **result, "load_avg_1m_before": round(load_before, 2)}

if __name__ == "__main__":
    main()
