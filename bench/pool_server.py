"""Pool server throughput with two members under concurrent load: one lock for the whole server (how
`k1 pool serve` ran before) against a gate per member (now), side by side in one process.

Two tiny Llama members of the same shape (random weights, no download) are served on 127.0.0.1 by a real
uvicorn; `--clients` threads per member send non-streamed chat requests (greedy) for `--seconds`, in two
workloads: `even` (both members asked for `--tokens` tokens) and `mixed` (the first member asked for
`--long` tokens, the second for `--short`: how long a short request waits behind a long one for another
member). The two modes alternate for `--rounds` rounds, so a change in machine load hits both; compare
the ratios, not the absolute numbers, on a shared machine.

    python bench/pool_server.py                  # 3 rounds × 2 modes × 8 s
    python bench/pool_server.py --quick          # 1 round × 2 modes × 4 s
    python bench/pool_server.py --replicas       # 1 and 3 `k1 pool serve` replicas on SQLite and on Postgres

`--replicas` starts real `k1 pool serve` processes (two tiny Llama members each) on one store — a SQLite
file, or a database on a throwaway local Postgres (`k1.common.pgserver`, `synchronous_commit=off`, which
like SQLite's `synchronous=NORMAL` loses no commit when a process dies, only the last ones on power loss) — and
`--clients` threads in all send short chat requests round-robin across the replicas, as a load balancer
would, for `--seconds`; the four set-ups alternate for `--rounds` rounds. Every request reserves, charges
and records in the store, so the store's share of the time shows; the models share the machine's cores,
so 3 replicas cannot be faster than the cores allow.

Prints one line per run, then the results as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def run(mode: str, members, seconds: float, clients: int, tokens: dict, root: Path) -> dict:
    import httpx

    from k1.pool.config import PoolSettings
    from k1.pool.pool import Pool
    from k1.pool.route.limits import Limits
    from k1.pool.route.router import Router
    from k1.pool.server.thread import ServedPool
    from k1.pool.store import PoolStore

    router = Router(Pool(members, PoolSettings(seed=0, budget_atp=1e9)),
                    PoolStore(root / f"{mode}-{time.time_ns()}.sqlite"))
    done, errors, stop = [], [], threading.Event()
    latency: dict[str, list[float]] = {m.name: [] for m in members}

    def client(member: str, i: int):
        with httpx.Client(timeout=120) as c:
            n = 0
            while not stop.is_set():
                t = time.perf_counter()
                r = c.post(f"{s.url}/chat/completions", json={
                    "model": member, "max_tokens": tokens[member], "user": f"{member}-{i}",
                    "messages": [{"role": "user", "content": f"request {n} from client {i}"}]})
                (done if r.status_code == 200 else errors).append((time.perf_counter(), r.status_code))
                if r.status_code == 200:
                    latency[member].append(time.perf_counter() - t)
                n += 1

    with ServedPool(router, limits=Limits(concurrency=mode, queue=64)) as s:
        threads = [threading.Thread(target=client, args=(m.name, i)) for m in members for i in range(clients)]
        wall = drive(threads, stop, seconds)
    rows = [r for r in router.store.ledger(1_000_000) if r["path"] == "success"]
    router.close()
    return {"mode": mode, "requests": len(done), "errors": len(errors), "wall_s": wall,
            "requests_per_s": len(done) / wall, "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "tokens_per_s": sum(r["completion_tokens"] for r in rows) / wall,
            "by_member": {m.name: sum(1 for r in rows if r["member"] == m.name) for m in members},
            "median_latency_s": {k: statistics.median(v) if v else None for k, v in latency.items()}}


def drive(threads: list[threading.Thread], stop: threading.Event, seconds: float) -> float:
    """Run the client threads for `seconds`, then stop and join them; → the wall time they ran."""
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def replica_run(backend: str, replicas: int, pool_dir: Path, pg, seconds: float, clients: int, tokens: int) -> dict:
    """`replicas` `k1 pool serve` processes on one store of `backend`; clients round-robin across them."""
    import signal
    import subprocess

    import httpx

    from k1.pool.testing import free_port, serving_within

    tag = f"{backend}{replicas}_{time.time_ns()}"
    store = pg.create_database(tag) if backend == "postgres" else str(pool_dir / f"{tag}.sqlite")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "K1_POOL_STORE": store,  # one compute thread per replica process
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    ports = [free_port() for _ in range(replicas)]
    procs = [subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(pool_dir / "pool.toml"),
                               "--port", str(p)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in ports]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    try:
        for u, proc in zip(urls, procs):
            if not serving_within(u, proc, 180):
                raise RuntimeError(f"k1 pool serve on {u} did not start")
        done, errors, stop = [], [], threading.Event()

        def client(i: int):
            with httpx.Client(timeout=120) as c:
                n = 0
                while not stop.is_set():
                    u = urls[(i + n) % len(urls)]
                    r = c.post(f"{u}/chat/completions", json={
                        "model": "auto", "max_tokens": tokens,
                        "messages": [{"role": "user", "content": f"request {n} from client {i}"}]})
                    (done if r.status_code == 200 else errors).append(r.status_code)
                    n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        load0 = os.getloadavg()[0]
        wall = drive(threads, stop, seconds)
        load1 = os.getloadavg()[0]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"backend": backend, "replicas": replicas, "requests": len(done), "errors": len(errors),
            "wall_s": wall, "requests_per_s": len(done) / wall, "load_average_1min": [load0, load1]}


def replicas_main(args) -> dict:
    from k1.common.pgserver import LocalPostgres, unavailable
    from k1.pool.testing import byte_hf_tokenizer, tiny_llama

    why = unavailable()
    if why:
        raise SystemExit(f"bench/pool_server.py --replicas: {why}")
    results = []
    with tempfile.TemporaryDirectory() as d, LocalPostgres(settings={"synchronous_commit": "off"}) as pg:
        root = Path(d)
        tiny_llama(0, hidden=args.hidden, layers=args.layers).save_pretrained(root / "tiny")
        byte_hf_tokenizer().save_pretrained(root / "tiny")
        (root / "pool.toml").write_text("[pool]\nbudget_atp = 1e12\nseed = 0\nselection = \"greedy\"\n\n"
                                        + "".join(f'[[members]]\nname = "{m}"\nkind = "hf"\npath = "{root / "tiny"}"\n\n'
                                                  for m in ("a", "b")))
        for k in range(args.rounds):
            setups = [("sqlite", 1), ("postgres", 1), ("sqlite", 3), ("postgres", 3)]
            for backend, n in (setups if k % 2 == 0 else setups[::-1]):
                r = replica_run(backend, n, root, pg, args.seconds, args.clients, args.tokens)
                results.append(r)
                print(f"{backend:8s} {n} replica(s)  {r['requests']:5d} requests  {r['requests_per_s']:7.2f} req/s  "
                      f"errors {r['errors']}  load average {r['load_average_1min'][0]:.1f} → "
                      f"{r['load_average_1min'][1]:.1f}", flush=True)

    def mean(backend, n):
        xs = [r["requests_per_s"] for r in results if r["backend"] == backend and r["replicas"] == n]
        return sum(xs) / len(xs)

    rps = {f"{b}_{n}": mean(b, n) for b in ("sqlite", "postgres") for n in (1, 3)}
    out = {"bench": "pool_server_replicas", "clients": args.clients, "tokens": args.tokens, "hidden": args.hidden,
           "layers": args.layers, "seconds": args.seconds, "rounds": args.rounds, "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg(), "runs": results, "requests_per_s": rps,
           "ratio_3_over_1": {b: rps[f"{b}_3"] / rps[f"{b}_1"] for b in ("sqlite", "postgres")},
           "ratio_postgres_over_sqlite": {n: rps[f"postgres_{n}"] / rps[f"sqlite_{n}"] for n in (1, 3)}}
    print(json.dumps(out))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=2, help="client threads per member")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per request in the even workload")
    ap.add_argument("--long", type=int, default=128, help="the first member's tokens in the mixed workload")
    ap.add_argument("--short", type=int, default=4, help="the second member's tokens in the mixed workload")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--replicas", action="store_true", help="1 and 3 replicas on SQLite and on Postgres")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 4.0
    if args.replicas:
        if "--tokens" not in (argv if argv is not None else sys.argv):
            args.tokens = 4  # short answers: the store's share of each request shows
        if "--clients" not in (argv if argv is not None else sys.argv):
            args.clients = 6
        return replicas_main(args)
    import torch

    from k1.pool.testing import tiny_hf_member

    torch.set_num_threads(1)
    members = [tiny_hf_member(f"m{i}", seed=i, hidden=args.hidden, layers=args.layers, positions=4096)
               for i in (1, 2)]
    results = []
    a, b = members[0].name, members[1].name
    workloads = {"even": {a: args.tokens, b: args.tokens}, "mixed": {a: args.long, b: args.short}}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.rounds):
            for work, tokens in workloads.items():
                for mode in ("global", "member"):
                    r = run(mode, members, args.seconds, args.clients, tokens, Path(d)) | {"workload": work}
                    results.append(r)
                    print(f"{work:5s} {mode:6s}  {r['requests']:4d} requests  {r['requests_per_s']:6.2f} req/s  "
                          f"{r['tokens_per_s']:7.1f} tokens/s  errors {r['errors']}  {r['by_member']}  "
                          f"median latency {r['median_latency_s']}", flush=True)

    def mean(work, mode, f):
        xs = [f(r) for r in results if r["mode"] == mode and r["workload"] == work]
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    tput = {w: {m: mean(w, m, lambda r: r["tokens_per_s"]) for m in ("global", "member")} for w in workloads}
    short = {m: mean("mixed", m, lambda r: r["median_latency_s"][b]) for m in ("global", "member")}
    out = {"bench": "pool_server", "members": 2, "clients_per_member": args.clients, "tokens": args.tokens,
           "long": args.long, "short": args.short, "hidden": args.hidden, "layers": args.layers,
           "seconds": args.seconds, "rounds": args.rounds, "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(), "runs": results,
           "tokens_per_s": tput,
           "throughput_ratio_member_over_global": {w: tput[w]["member"] / tput[w]["global"] for w in workloads},
           "short_request_median_latency_s": short,
           "short_latency_ratio_global_over_member": short["global"] / short["member"]
           if short["global"] and short["member"] else None}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
