"""Replica soak: three real `k1 pool serve` processes on one Postgres store (K1_POOL_STORE), mixed requests
from two tenants (a keys file: alice with a small budget share, bob with a larger one) spread across them
round-robin as a load balancer would — chat, completions, streams, streams whose client disconnects at a random
point, feedback (to a random replica, now and then with the other tenant's key, and replays), malformed
bodies — under a budget that runs out late in the run. One replica is SIGKILLed and started again, and the
database is restarted, mid-run. Then: every answer a client was told succeeded has its charge in the ledger,
under its tenant; the ledger holds nothing else but cancelled or interrupted calls; the budget was passed by
at most one estimate per replica and neither tenant's share by more; trust equals the feedback accepted; a
request's feedback is accepted by one replica only, and never from a tenant that did not ask it.

The default suite runs 90 requests; `-m slow` runs 1,000. Each run prints its figures as one JSON line."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from k1.pool.store import PoolStore
from k1.pool.testing import free_port, serving_within

MAX_TOKENS = 12
RETRY = {503}  # the store restarting, a full queue
TENANTS = {"alice": {"key": "alice-key-0123456789abcdef", "budget_share": 0.35},
           "bob": {"key": "bob-key-0123456789abcdef01", "budget_share": 0.8}}
KINDS = {"chat": 25, "completion": 10, "stream": 15, "cancel": 15, "feedback": 25, "malformed": 10}


def auth(tenant: str) -> dict:
    return {"Authorization": f"Bearer {TENANTS[tenant]['key']}"}


def write_keys_file(path) -> None:
    path.write_text("".join(f'[[tenant]]\nname = "{n}"\nkey = "{t["key"]}"\nbudget_share = {t["budget_share"]}\n'
                            "concurrency = 8\n\n" for n, t in TENANTS.items()))
    path.chmod(0o600)


class Replica:
    def __init__(self, pool_file, keys_file, store_url, log):
        self.pool_file, self.keys_file, self.store_url, self.log = pool_file, keys_file, store_url, log
        self.port, self.proc = free_port(), None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "K1_POOL_STORE": self.store_url}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "k1", "pool", "serve", "--pool", str(self.pool_file),
                                          "--keys-file", str(self.keys_file), "--port", str(self.port)],
                                         env=env, stdout=log, stderr=log)

    def wait(self):
        assert serving_within(self.url, self.proc, 180), \
            "k1 pool serve did not start: " + self.log.read_text(errors="replace")[-3000:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tally(Counter):
    """kind:outcome → count, e.g. chat:ok, stream:429_share, feedback:409 (thread-safe)."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def add(self, key, n=1):
        with self.lock:
            self[key] += n

    def by_kind(self) -> dict:
        out: dict[str, dict] = {}
        for key, n in sorted(self.items()):
            kind, _, outcome = key.partition(":")
            if outcome:
                out.setdefault(kind, {})[outcome] = n
        return out


def refused(r: httpx.Response) -> str:
    """The outcome name of a refusal the soak expects: 429 budget/share/busy, 503."""
    if r.status_code == 429:
        err = r.json()["error"]
        return {"tenant_busy": "429_busy"}.get(err["code"]) or ("429_share" if "share" in err["message"]
                                                                else "429_budget")
    assert r.status_code in RETRY, r.text[:300]
    return str(r.status_code)


def _one(urls: list[str], k: int, rng: random.Random, answered: list, fed: set, stats: Tally) -> None:
    """Request number `k`, from a random tenant, sent to replica k mod 3 (feedback to a random one)."""
    url = urls[k % len(urls)]
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    tenant = rng.choice(list(TENANTS))
    model = rng.choice(["auto", "a", "b"])
    n = rng.randint(1, MAX_TOKENS)
    msgs = [{"role": "user", "content": f"replica {rng.random():.6f} " * rng.randint(1, 4)}]
    stats.add(f"{kind}:sent")
    stats.add(f"tenant_{tenant}:sent")
    try:
        with httpx.Client(base_url=url, headers=auth(tenant), timeout=60) as c:
            if kind in ("chat", "completion"):
                body = {"model": model, "max_tokens": n}
                path = "/chat/completions" if kind == "chat" else "/completions"
                body |= {"messages": msgs} if kind == "chat" else {"prompt": msgs[0]["content"]}
                r = c.post(path, json=body)
                if r.status_code != 200:
                    stats.add(f"{kind}:{refused(r)}")
                    return
                answered.append((tenant, r.json()["k1"]))
                stats.add(f"{kind}:ok")
            elif kind in ("stream", "cancel"):
                body = {"model": model, "max_tokens": n, "messages": msgs, "stream": True,
                        "stream_options": {"include_usage": True}}
                stop_after = rng.randint(0, n + 2) if kind == "cancel" else None
                with c.stream("POST", "/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        r.read()
                        stats.add(f"{kind}:{refused(r)}")
                        return
                    events = 0
                    for line in r.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            stats.add(f"{kind}:ok")  # a cancel that came too late is a completed stream
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:  # the store went away mid-stream: not told it succeeded
                            stats.add(f"{kind}:stream_error")
                            return
                        if chunk.get("k1"):
                            answered.append((tenant, chunk["k1"]))
                        events += 1
                        if stop_after is not None and events > stop_after:
                            stats.add(f"{kind}:disconnected")  # leaving the block closes the connection
                            break
            elif kind == "feedback":
                if not answered:
                    stats.add("feedback:nothing_yet")
                    return
                owner, k1 = rng.choice(answered)
                foreign = rng.random() < 0.15
                sender = next(t for t in TENANTS if t != owner) if foreign else owner
                fed.add(k1["request"])
                r = httpx.post(f"{rng.choice(urls)}/feedback", headers=auth(sender), timeout=60,
                               json={"request": k1["request"], "success": rng.choice([0, 1])})
                if foreign:  # another tenant's request id reads as unknown
                    assert r.status_code in {404} | RETRY, r.text[:300]
                    stats.add(f"feedback:foreign_{r.status_code}")
                elif r.status_code == 200:
                    stats.add("feedback:ok")
                else:
                    assert r.status_code in {409} | RETRY, r.text[:300]
                    stats.add(f"feedback:{r.status_code}")
            elif kind == "malformed":
                r = c.post("/chat/completions", content=rng.choice([b"{", b"[]", b'{"model": 5}']),
                           headers={"Content-Type": "application/json"})
                assert r.status_code in (400, 422), r.text[:300]
                stats.add("malformed:refused")
    except httpx.TransportError:  # the replica this went to was killed: the client was not told it succeeded
        stats.add(f"{kind}:transport_error")


def replica_soak(tmp_path, hf_dir, pg, n: int, workers: int = 6, seed: int = 0, budget_share: float = 0.5) -> dict:
    from k1.pool.pool import load_pool

    url = pg.create_database(f"soak{seed}_{n}")
    pool_file, keys_file = tmp_path / "pool.toml", tmp_path / "keys.toml"
    write_keys_file(keys_file)
    members = (f'[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n\n'
               f'[[members]]\nname = "b"\nkind = "hf"\npath = "{hf_dir}"\n')
    probe = load_pool_member_estimates(load_pool, tmp_path, members)
    budget = probe["typical"] * n * budget_share  # runs out after the database restart, late in the run
    pool_file.write_text(f"[pool]\nbudget_atp = {budget}\nseed = 0\n\n{members}")
    replicas = [Replica(pool_file, keys_file, url, tmp_path / f"replica{i}.log") for i in range(3)]
    for r in replicas:
        r.start()
    for r in replicas:
        r.wait()
    urls = [r.url for r in replicas]
    rng, answered, fed, stats = random.Random(seed), [], set(), Tally()
    t0, load0 = time.time(), os.getloadavg()
    kill_at, db_at = n // 3, 2 * n // 3
    try:
        with ThreadPoolExecutor(workers) as ex:
            futures, k = [], 0
            while k < n:
                batch = min(n - k, 30)
                futures = [ex.submit(_one, urls, k + i, random.Random(rng.random()), answered, fed, stats)
                           for i in range(batch)]
                if k <= kill_at < k + batch:  # mid-batch: requests in flight on the killed replica
                    time.sleep(0.3)
                    replicas[1].stop(signal.SIGKILL)
                    stats.add("replica_killed")
                if k <= db_at < k + batch:
                    time.sleep(0.3)
                    pg.restart()
                    stats.add("db_restarted")
                for f in futures:
                    f.result()
                if replicas[1].proc.poll() is not None:
                    replicas[1].start()
                    replicas[1].wait()
                k += batch
        # feedback once across replicas: the three replicas told one verdict at once, one accepts
        owner, k1 = next(((t, x) for t, x in answered if x["request"] not in fed), (None, None))
        if k1 is not None:
            def send(u):
                return httpx.post(f"{u}/feedback", headers=auth(owner), timeout=60,
                                  json={"request": k1["request"], "success": 1}).status_code
            with ThreadPoolExecutor(3) as ex:
                codes = sorted(ex.map(send, urls))
            assert codes == [200, 409, 409], codes
            stats.add("feedback:ok")
            stats.add("feedback_once_across_replicas")
    finally:
        for r in replicas:
            r.stop()
    seconds, load1 = time.time() - t0, os.getloadavg()
    store = PoolStore(url)
    ledger = store.ledger(10_000_000)
    by_request: dict[str, list[dict]] = {}
    for row in ledger:
        by_request.setdefault(row["request"], []).append(row)
    told = {k1["request"] for _, k1 in answered}
    for tenant, k1 in answered:  # told it succeeded → its charge is in the ledger, exactly as reported, as theirs
        rows = [r for r in by_request[k1["request"]] if r["kind"] == "request"]  # (not its verification's)
        assert [(r["path"], r["tenant"]) for r in rows] == [("success", tenant)], rows
        assert rows[0]["atp"] == pytest.approx(k1["cost"]["atp"])
    others = [r for r in ledger if r["request"] not in told]
    assert all(r["path"] in ("success", "cancelled") for r in others)  # cancelled, or its client was cut off
    spent = store.spent()
    assert spent == pytest.approx(sum(k1["cost"]["atp"] for _, k1 in answered) + sum(r["atp"] for r in others))
    assert spent == pytest.approx(sum(r["atp"] for r in ledger))  # the budget counts every row (never reset)
    overshoot = spent - budget
    assert overshoot <= 3 * probe["max"], (spent, budget, probe)  # at most one estimate per replica
    shares = {}
    for name, t in TENANTS.items():
        mine, cap = store.spent(name), t["budget_share"] * budget
        assert mine <= cap + 3 * probe["max"], (name, mine, cap)  # (held in the store: in practice ≤ cap)
        shares[name] = {"spent_atp": round(mine, 4), "share_atp": round(cap, 4), "overshoot_atp": round(mine - cap, 4),
                        "answered": sum(1 for x, _ in answered if x == name)}
    held = store.reserved()  # only the killed replica's calls' holds are left (they expire after 15 minutes)
    trust_total = sum(s + f for s, f in store.trust().values())
    history = store.outcome_history(10_000_000)
    sources = Counter(o["source"] for o in history)
    fed_requests = [o["request"] for o in history if o["source"] == "feedback"]
    assert len(fed_requests) == len(set(fed_requests))  # a request's feedback moved trust once, on any replica
    # trust moved once per feedback accepted, plus at most the ones whose answer the client never got (sent to
    # the replica being killed or the store restarting: accepted or not, the client cannot know)
    unknown = stats["feedback:transport_error"] + sum(stats[f"feedback:{c}"] for c in RETRY)
    assert stats["feedback:ok"] <= sources["feedback"] <= stats["feedback:ok"] + unknown, (sources, stats.by_kind())
    assert trust_total == pytest.approx(sum(sources.values()))  # …and once per background verification
    store.close()
    figures = {"requests": n, "replicas": 3, "workers": workers, "seconds": round(seconds, 1),
               "load_avg_1min_before_after": [round(load0[0], 2), round(load1[0], 2)],
               "answered": len(answered), "ledger_rows": len(ledger), "ledger_rows_not_told": len(others),
               "ledger_rows_by_kind": dict(Counter(r["kind"] for r in ledger)),
               "ledger_rows_by_path": dict(Counter(r["path"] for r in ledger)),
               "ledger_sum_atp": round(sum(r["atp"] for r in ledger), 4),
               "charges_told_plus_others_atp": round(sum(k1["cost"]["atp"] for _, k1 in answered)
                                                     + sum(r["atp"] for r in others), 4),
               "budget_atp": round(budget, 4), "spent_atp": round(spent, 4), "overshoot_atp": round(overshoot, 4),
               "max_estimate_atp": round(probe["max"], 4), "held_left_atp": round(held, 4), "tenants": shares,
               "feedback_accepted": stats["feedback:ok"], "trust_feedback_outcomes": sources["feedback"],
               "replica_killed": stats["replica_killed"], "db_restarted": stats["db_restarted"],
               "feedback_once_across_replicas": stats["feedback_once_across_replicas"], "by_kind": stats.by_kind()}
    print("replica soak:", json.dumps(figures))
    return figures


def load_pool_member_estimates(load_pool, tmp_path, members: str) -> dict:
    """The members' estimated ATP of a typical and of the largest request the soak sends."""
    f = tmp_path / "probe.toml"
    f.write_text(f'[pool]\nstore = "probe.sqlite"\n\n{members}')
    pool = load_pool(f)
    try:
        m = pool["a"]
        longest = [{"role": "user", "content": "replica 0.123456 " * 4}]
        typical = [{"role": "user", "content": "replica 0.123456 " * 2}]
        return {"max": m.estimate_cost(m.prompt_tokens(longest), MAX_TOKENS),
                "typical": m.estimate_cost(m.prompt_tokens(typical), MAX_TOKENS // 2)}
    finally:
        pool.close()


def test_replica_soak_short(tmp_path, hf_dir, pg_server):
    f = replica_soak(tmp_path, hf_dir, pg_server, n=90, budget_share=0.3)
    assert f["replica_killed"] == 1 and f["db_restarted"] == 1 and f["answered"] > 10
    assert f["feedback_once_across_replicas"] == 1
    refusals = Counter(o for kind in f["by_kind"].values() for o in kind if o.startswith("429"))
    assert refusals["429_budget"] or refusals["429_share"], f["by_kind"]  # the budget did run out


@pytest.mark.slow
def test_replica_soak_full(tmp_path, hf_dir, pg_server):
    f = replica_soak(tmp_path, hf_dir, pg_server, n=1000, workers=8, seed=1, budget_share=0.35)
    assert f["replica_killed"] == 1 and f["db_restarted"] == 1 and f["answered"] > 200
    assert f["feedback_once_across_replicas"] == 1 and f["by_kind"]["cancel"].get("disconnected", 0) > 20
    assert f["ledger_rows_by_path"].get("cancelled", 0) > 0  # a client leaving mid-stream cancels its call
    refusals = Counter(o for kind in f["by_kind"].values() for o in kind if o.startswith("429"))
    assert refusals["429_budget"] and refusals["429_share"], f["by_kind"]  # the pool's budget and alice's share ran out


def test_a_replica_takes_up_a_student_another_replica_published(tmp_path, store_url):
    import torch

    from k1.pool.config import PoolSettings
    from k1.pool.learn.weights import save_student, take_up_new_students
    from k1.pool.pool import Pool
    from k1.pool.session import open_router
    from k1.pool.testing import tiny_hf_member

    def replica(seed):  # as `k1 pool serve` opens its router
        return open_router(Pool([tiny_hf_member("student", seed=seed, hidden=32, layers=1)], PoolSettings(seed=0)),
                           PoolStore(store_url))

    a, b = replica(1), replica(2)  # two replicas' copies of one member, not yet alike
    sa, sb = a.pool["student"].model, b.pool["student"].model
    assert take_up_new_students(b) == []  # nothing published yet
    with torch.no_grad():
        for p in sa.parameters():
            p.add_(0.01)  # what DREAM's training did on replica a
    save_student(a, a.pool["student"], tmp_path / "dream")
    assert take_up_new_students(a) == []  # a holds what it published
    b.gates["student"].acquire("student")  # b's student is answering: left for the next look
    assert take_up_new_students(b) == []
    b.gates["student"].release()
    assert take_up_new_students(b) == ["student"]  # no restart
    assert all(torch.equal(x, y) for x, y in zip(sa.state_dict().values(), sb.state_dict().values()))
    assert take_up_new_students(b) == []  # once per version
    c = replica(3)  # a replica started later loads it at start, and does not load it twice
    assert c.consolidated == ["student"] and take_up_new_students(c) == []
    with torch.no_grad():  # a serving replica looks on its own, when a request comes
        for p in sa.parameters():
            p.add_(0.01)
    save_student(a, a.pool["student"], tmp_path / "dream")
    b.generate("hello", max_tokens=1)  # within 5 s of the last look: not yet
    assert not all(torch.equal(x, y) for x, y in zip(sa.state_dict().values(), sb.state_dict().values()))
    b.students.every_s = 0.0
    b.generate("hello", max_tokens=1)
    assert all(torch.equal(x, y) for x, y in zip(sa.state_dict().values(), sb.state_dict().values()))
    assert b.consolidated == ["student"]


def test_dream_replay_and_the_report_work_on_either_store(store_url):
    from k1.pool.config import PoolSettings
    from k1.pool.learn.dream import replay
    from k1.pool.pool import Pool
    from k1.pool.report import build_pool_report
    from k1.pool.route.router import Router
    from k1.pool.testing import tiny_hf_member

    r = Router(Pool([tiny_hf_member("m", hidden=32, layers=1)], PoolSettings(seed=0)), PoolStore(store_url))
    r.generate("hello", max_tokens=2)
    before, trust, experiences = r.store.ledger(), r.store.trust(), r.store.experiences()
    rep = replay(r, ["hello", "again"], None, 2)  # the pool's own choice and attempts, as quiet calls
    assert rep["calls"] == 2 and rep["members"] == {"m": 2}
    after = r.store.ledger()
    assert after[:len(before)] == before and [x["kind"] for x in after[len(before):]] == ["dream", "dream"]
    assert r.store.trust() == trust and r.store.experiences() == experiences  # quiet: charged, nothing learnt
    assert r.store.reserved() == 0  # every hold the replay took was released by its charge
    html = build_pool_report(r.store, 100.0)
    from urllib.parse import urlsplit

    assert r.store.label in html
    if "://" in store_url:  # Postgres: the report names the store, never its password
        assert urlsplit(store_url).password not in html


def test_k1_pool_dream_runs_once_per_store_whichever_machine_starts_it(tmp_path, hf_dir):
    from typer.testing import CliRunner

    from k1.errors import ConfigError
    from k1.pool.cli import app

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "p.sqlite"\n\n[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n')
    s = PoolStore(tmp_path / "p.sqlite")
    assert s.acquire_lease("dream", "other-host:41", ttl_s=60)  # a DREAM running on another replica's machine
    with pytest.raises(ConfigError, match=r"another `k1 pool dream` \(other-host:41\)"):
        CliRunner().invoke(app, ["dream", "--pool", str(f)], catch_exceptions=False)
    s.release_lease("dream", "other-host:41")
    r = CliRunner().invoke(app, ["dream", "--pool", str(f)])  # now it runs (and finds nothing to consolidate)
    assert "another" not in str(r.exception or r.stdout)
    assert s.lease_holder("dream") is None  # and gives the lease back when it ends, even by an error


def test_replicas_share_the_metabolic_state_but_not_dream(store_url):
    from k1.pool.route.metabolic import Metabolism

    a, b = PoolStore(store_url), PoolStore(store_url)
    ma, mb = Metabolism(log=a.log_state, shared=a), Metabolism(log=b.log_state, shared=b)
    for _ in range(4):
        ma.after_call(False, None, 1.0)  # replica a's calls fail
    assert ma.state == "CRISIS"
    assert mb.before_call(1.0) == "CRISIS" and mb.policy.mode == "greedy"  # b answers in CRISIS too
    mb.after_call(True, None, 1.0)
    mb.after_call(True, None, 1.0)  # b recovers
    assert mb.state == "WAKE" and ma.before_call(1.0) == "WAKE"
    ma.enter_dream()  # a consolidates (and might crash in it): b does not dream with it
    assert mb.before_call(1.0) == "WAKE"
    ma.leave_dream()
    assert Metabolism(shared=PoolStore(store_url)).state == "WAKE"  # a replica started now
    assert [r["to_state"] for r in a.state_log()] == ["CRISIS", "WAKE", "DREAM", "WAKE"]  # logged once each


def test_two_replicas_ledgers_hold_one_budget_between_them(store_url):
    """The pool's `Ledger` (every call kind's way to spend) holds its reservations in the store: a replica's
    hold is seen by another replica's ledger, and a charge ends the hold in its own write."""
    from k1.pool.errors import BudgetExhausted
    from k1.pool.ledger import Ledger
    from k1.pool.members.base import Cost

    a, b = Ledger(PoolStore(store_url), 10.0), Ledger(PoolStore(store_url), 10.0)
    ra = a.reserve(6.0, member="m")
    assert b.reserved == 6.0
    with pytest.raises(BudgetExhausted, match="budget left"):
        b.reserve(5.0, member="m")  # 6 held on replica a + 5 > 10
    rb = b.reserve(4.0, member="m")
    assert a.charge(ra, "m", "success", Cost(0.0, 0.0, 3.0)) == 3.0
    assert a.reserved == 4.0 and b.store.spent() == 3.0
    b.release(rb)
    assert a.reserved == 0.0 and b.reserve(7.0).amount == 7.0


def test_a_tenants_share_is_held_in_the_store_across_replicas(store_url):
    """A tenant's `budget_share` is checked against its holds on every replica, in the store's one locked
    write: two replicas cannot together let one tenant pass its share (each used to count only its own)."""
    from k1.pool.errors import BudgetExhausted
    from k1.pool.ledger import Ledger
    from k1.pool.members.base import Cost
    from k1.pool.tenants import Tenant

    alice, bob = Tenant("alice", budget_share=0.25), Tenant("bob", budget_share=0.25)
    a, b = Ledger(PoolStore(store_url), 20.0), Ledger(PoolStore(store_url), 20.0)
    ra = a.reserve(4.0, tenant=alice)  # alice's call running on replica a
    with pytest.raises(BudgetExhausted, match="this key has 1 of its 5 ATP share left"):
        b.reserve(2.0, tenant=alice)  # on replica b: 4 held on a + 2 > alice's 5
    assert b.store.reserved("alice") == 4.0 and b.store.reserved("bob") == 0.0
    rb = b.reserve(5.0, tenant=bob)  # bob's share is his own
    b.reserve(1.0, tenant=alice)
    with pytest.raises(BudgetExhausted, match="share of the budget"):
        a.check(alice)  # alice's 5 are all held (on two replicas): refused up front
    assert a.charge(ra, "m", "success", Cost(0.0, 0.0, 2.0)) == 2.0  # spent 2, hold of 4 ended
    assert b.store.spent("alice") == 2.0 and b.store.reserved("alice") == 1.0
    assert b.reserve(2.0, tenant=alice).amount == 2.0  # 2 spent + 1 + 2 held = 5
    b.release(rb)
    with pytest.raises(BudgetExhausted, match="share left"):
        a.reserve(0.5, tenant=alice)
