"""The pool's store, on SQLite and on a real Postgres alike (the `store_url` fixture runs each test on both):
migrations recorded and run once, no lost updates under several writer processes, reservations that never
let replicas together pass the budget, feedback once per request, leases and version rows for replicas."""

import multiprocessing as mp
import threading
import time

import pytest

from k1.common.db import StoreUnavailable, open_database, to_postgres
from k1.errors import ConfigError
from k1.pool.store import MIGRATIONS, SCHEMA_VERSION, PoolStore


def _spawn(target, *argsets):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=a) for a in argsets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_migrations_run_once(store_url):
    s = PoolStore(store_url)
    assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    if s.dialect == "sqlite":
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.migrate() == []  # nothing left to run
    s.close()
    assert PoolStore(store_url).migrate() == []


def test_an_old_store_is_migrated_forward(store_url):
    db = open_database(store_url)  # a store from before experiences existed: only the first migration
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, ts REAL NOT NULL)")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO _migrations VALUES (?, 0)", (MIGRATIONS[0].__name__,))
    db.execute("INSERT INTO trust VALUES ('a', 'stable', 3, 1, 0)")
    db.close()
    s = PoolStore(store_url)
    assert s.schema_version == SCHEMA_VERSION
    assert s.trust() == {("a", "stable"): (3.0, 1.0)}  # data kept
    assert s.experiences() == []  # the new table exists


def test_the_task_class_column_is_renamed_with_its_data(store_url):
    """A store written before m008_task_class (its task classes in columns named `context`) keeps every row:
    trust, ledger, outcomes and experiences read and write by `task_class` afterwards; rows still carry
    `context` (the old name) for one release."""
    db = open_database(store_url)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, ts REAL NOT NULL)")
    for m in MIGRATIONS[:7]:
        m(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (m.__name__,))
    db.execute("INSERT INTO trust VALUES ('a', 'arithmetic', 3, 1, 0)")
    db.execute("""INSERT INTO ledger (ts, member, context, path, atp, flops, latency_s, kind)
        VALUES (0, 'a', 'arithmetic', 'success', 2.0, 0, 0, 'request')""")
    db.execute("INSERT INTO outcomes (ts, member, context, success, source) VALUES (0, 'a', 'arithmetic', 1, 'x')")
    db.execute("""INSERT INTO experiences (ts, request, prompt, response, member, context, extra)
        VALUES (0, 'r1', '2+2?', '4', 'a', 'arithmetic', '{"task_class_source": "caller"}')""")
    db.close()
    s = PoolStore(store_url)
    assert MIGRATIONS[7].__name__ == "m008_task_class" and s.schema_version == SCHEMA_VERSION
    s.record_outcome("a", "arithmetic", 1.0, "feedback")  # the primary key (member, task_class) still holds
    assert s.trust("arithmetic") == {("a", "arithmetic"): (4.0, 1.0)}
    [row] = s.ledger()
    assert row["task_class"] == row["context"] == "arithmetic" and s.spent() == 2.0
    assert [o["task_class"] for o in s.outcome_history()] == ["arithmetic", "arithmetic"]
    assert s.experience("r1")["task_class"] == s.experience("r1")["context"] == "arithmetic"
    assert s.labelled_prompts(10) == [("2+2?", "arithmetic")]
    s.add_experience({"ts": 1.0, "request": "r2", "prompt": "hi", "response": "yo", "member": "a", "context": "chat"})
    s.update_experience("r1", task_class="facts")
    assert [e["task_class"] for e in s.experiences()] == ["facts", "chat"]  # the old key is still read once
    for table in ("trust", "ledger", "outcomes", "experiences"):  # the column itself is renamed, not copied
        row = dict(s.db.execute(f"SELECT * FROM {table}").fetchone())
        assert "task_class" in row and "context" not in row
    s.close()


def test_a_store_from_a_newer_k1_is_refused(store_url):
    s = PoolStore(store_url)
    s.db.execute("INSERT INTO _migrations VALUES ('m999_future', 0)")
    s.close()
    with pytest.raises(ConfigError, match="newer"):
        PoolStore(store_url)


def test_outcomes_accumulate_as_beta_counts(store_url):
    s = PoolStore(store_url)
    for v in (1, 1, 0, 0.5):
        s.record_outcome("m", "novel", v, "feedback")
    assert s.trust("novel") == {("m", "novel"): (2.5, 1.5)}
    assert [o["success"] for o in s.outcome_history()] == [1, 1, 0, 0.5]
    with pytest.raises(ValueError):
        s.record_outcome("m", "novel", 2.0, "feedback")


def test_budget_spent_and_reset(store_url):
    s = PoolStore(store_url)
    s.charge("a", "success", 2.0, 2e9, 0.1)
    s.charge("a", "timeout", 0.5, 0.0, 1.0)
    assert s.spent() == 2.5
    s.reset_budget()
    assert s.spent() == 0
    s.charge("b", "cancelled", 1.0, 1e9, 0.1, stream=True)
    assert s.spent() == 1.0
    assert s.ledger_totals()["a"]["paths"] == {"success": 1, "timeout": 1}
    assert s.mean_cost() == {"a": 2.0}
    with pytest.raises(ValueError):
        s.charge("a", "exploded", 1, 1, 1)


def test_experiences_labels_and_calibration_round_trip(store_url):
    s = PoolStore(store_url)
    s.add_experience({"ts": 1.0, "request": "r1", "prompt": "2+2?", "response": "4", "member": "m", "context": "math",
                      "extra": {"task_class_source": "caller"}})
    s.add_experience({"ts": 2.0, "request": "r2", "prompt": "hi", "response": "yo", "member": "m", "context": "chat",
                      "extra": {"task_class_source": "guess"}})
    assert s.labelled_prompts(10) == [("2+2?", "math")]  # json_extract on both backends
    for i, trusted in enumerate((True, False)):  # a tenant's label: learned from only when the tenant is trusted
        s.add_experience({"ts": 3.0 + i, "request": f"t{i}", "prompt": f"p{i}", "response": "x", "member": "m",
                          "context": "math", "extra": {"task_class_source": "caller", "label_trusted": trusted}})
    assert s.labelled_prompts(10) == [("p0", "math"), ("2+2?", "math")]  # JSON true and false on both backends
    assert s.update_experience("r2", outcome=1.0) and s.experience("r2")["outcome"] == 1.0
    s.set_calibration("m", [{"cls": "math", "task": "add", "prompt": "1+1", "response": "2", "score": 1, "atp": 0.5}])
    assert s.calibration_summary()[("m", "math")]["n"] == 1
    assert s.calibration_prompts() == [("1+1", "math")]


def _writer(target, member, n):
    s = PoolStore(target)
    for i in range(n):
        s.record_outcome(member if i % 2 else "shared", "stable", 1.0 if i % 3 else 0.0, "feedback")
        s.charge("shared", "success", 1.0, 1e9, 0.01)
    s.close()


def test_several_writer_processes_lose_no_update(store_url):
    PoolStore(store_url).close()
    n = 60
    _spawn(_writer, *[(store_url, f"m{k}", n) for k in range(4)])
    s = PoolStore(store_url)
    trust = s.trust("stable")
    total = sum(a + b for a, b in trust.values())
    assert total == 4 * n  # every outcome counted exactly once
    assert trust[("shared", "stable")][0] + trust[("shared", "stable")][1] == 4 * (n // 2)
    assert s.spent() == 4 * n
    assert len(s.outcome_history()) == 4 * n


def _spender(target, budget, estimate):
    """A replica's calls: reserve the estimate, then charge what the call cost (here 0.6 to 1.0 of it)."""
    s = PoolStore(target)
    i = 0
    while (r := s.reserve(estimate, budget, member="m")) is not None:
        s.charge("m", "success", estimate * (0.6 + 0.4 * (i % 2)), 0, 0, reservation=r)
        i += 1
    s.close()


def test_reservations_across_processes_never_pass_the_budget(store_url):
    PoolStore(store_url).close()
    budget, estimate = 40.0, 1.0
    _spawn(_spender, *[(store_url, budget, estimate) for _ in range(4)])
    s = PoolStore(store_url)
    assert budget - estimate < s.spent() <= budget  # filled up to the last estimate, never over
    assert s.reserved() == 0  # every hold was charged


def test_a_reservation_is_held_released_and_expires(store_url):
    s = PoolStore(store_url)
    a = s.reserve(6.0, 10.0)
    assert a is not None and s.reserved() == 6.0
    assert s.reserve(5.0, 10.0) is None  # 6 held + 5 > 10
    s.release(a)
    short = s.reserve(9.0, 10.0, ttl_s=0.2)  # a replica killed while holding this
    assert short is not None and s.reserve(5.0, 10.0) is None
    time.sleep(0.3)
    assert s.reserved() == 0 and s.reserve(5.0, 10.0) is not None


def test_feedback_counts_once_across_replicas(store_url):
    stores = [PoolStore(store_url) for _ in range(3)]  # three replicas' connections
    told: list[bool] = []

    def tell(s):
        for i in range(30):
            told.append(s.record_feedback("m", "chat", 1.0, "feedback", f"req-{i}"))

    threads = [threading.Thread(target=tell, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(told) == 30 and len(told) == 90
    assert stores[0].trust("chat") == {("m", "chat"): (30.0, 0.0)}


def test_a_lease_has_one_holder_until_it_expires_or_is_released(store_url):
    a, b = PoolStore(store_url), PoolStore(store_url)
    assert a.acquire_lease("dream", "replica-a", ttl_s=0.3)
    assert not b.acquire_lease("dream", "replica-b", ttl_s=10)
    assert a.acquire_lease("dream", "replica-a", ttl_s=0.3)  # the holder renews
    assert b.lease_holder("dream") == "replica-a"
    time.sleep(0.4)  # replica-a died without releasing
    assert b.acquire_lease("dream", "replica-b", ttl_s=10)
    assert not a.release_lease("dream", "replica-a")  # no longer a's to release
    assert b.release_lease("dream", "replica-b") and a.acquire_lease("dream", "replica-a", ttl_s=10)


def _dreamer(target, name, period_s, cycles):
    """A replica that runs the job of every due cycle it sees, the documented way: lease, check again, run,
    record, release."""
    s = PoolStore(target)
    s.publish("ready", name)
    while (start := s.get_meta("t0")) is None:  # the clock starts when every replica is up
        time.sleep(0.01)
    while (c := int((time.time() - float(start)) / period_s)) < cycles:
        if int(s.get_meta("done") or -1) < c and s.acquire_lease("dream", name, ttl_s=30):
            if int(s.get_meta("done") or -1) < c:  # still due under the lease
                s.charge("dream", "success", 0.0, 0, 0, request=f"cycle-{c}")
                s.set_meta("done", str(c))
            s.release_lease("dream", name)
        time.sleep(0.005)
    s.close()


def test_a_due_job_runs_once_per_cycle_however_many_replicas_see_it(store_url):
    s = PoolStore(store_url)
    cycles, n = 8, 4
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_dreamer, args=(store_url, f"r{k}", 0.25, cycles)) for k in range(n)]
    for p in procs:
        p.start()
    while (s.version("ready") or (0,))[0] < n:
        time.sleep(0.05)
    s.set_meta("t0", str(time.time()))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = [r["request"] for r in s.ledger() if r["member"] == "dream"]
    assert sorted(runs) == sorted(set(runs))  # never twice
    assert len(runs) >= cycles - 2  # and (nearly) every cycle ran, on a busy machine too


def test_replicas_see_a_published_version_without_reopening(store_url):
    a, b = PoolStore(store_url), PoolStore(store_url)
    assert b.version("student:small") is None
    assert a.publish("student:small", '{"path": "/w/1.safetensors"}') == 1
    assert b.version("student:small") == (1, '{"path": "/w/1.safetensors"}')
    versions: list[int] = []
    threads = [threading.Thread(target=lambda s=s: versions.append(s.publish("student:small", "x"))) for s in (a, b) * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(2, 12))  # each publish is its own version
    assert a.version("student:small")[0] == 11


def test_an_unknown_store_url_is_one_line_and_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("mysql://u@h/db", "postgresq://u@h/db", "redis:6379"):
        with pytest.raises(ConfigError, match="unknown URL scheme") as e:
            PoolStore(bad)
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no file called `mysql:` or the like


def test_the_pool_file_keeps_a_url_and_the_environment_overrides_it(tmp_path, monkeypatch):
    from k1.pool.config import read_pool_config

    f = tmp_path / "pool.toml"
    body = '[[members]]\nname = "m"\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
    f.write_text('[pool]\nstore = "postgresql://k1@db.internal:5432/pool"\n\n' + body)
    assert read_pool_config(f).pool.store == "postgresql://k1@db.internal:5432/pool"  # not made a file path
    f.write_text('[pool]\nstore = "mongodb://x"\n\n' + body)
    with pytest.raises(ConfigError, match="unknown URL scheme"):
        read_pool_config(f)
    monkeypatch.setenv("K1_POOL_STORE", "postgresql://k1@other:5432/pool")
    assert read_pool_config(f).pool.store == "postgresql://k1@other:5432/pool"
    monkeypatch.setenv("K1_POOL_STORE", "elsewhere.sqlite")
    assert read_pool_config(f).pool.store == str(tmp_path / "elsewhere.sqlite")


def test_an_unreachable_postgres_is_one_line(pg_server):
    url = pg_server.url().replace(f":{pg_server.port}/", ":1/")
    with pytest.raises(StoreUnavailable, match="cannot connect") as e:
        PoolStore(url)
    assert "\n" not in str(e.value) and pg_server.password not in str(e.value)


def test_a_store_outlives_a_postgres_restart(pg_server):
    s = PoolStore(pg_server.create_database("restart"))
    s.charge("a", "success", 1.0, 0, 0)
    pg_server.restart()
    assert s.spent() == 1.0  # a read asks again on a new connection
    s.charge("a", "success", 1.0, 0, 0)  # a write finds the dead connection at BEGIN: nothing ran, opened again
    assert s.spent() == 2.0


def test_sqlite_sql_is_translated_for_postgres():
    assert to_postgres("SELECT * FROM t WHERE a = ? AND b LIKE '%?%'") == "SELECT * FROM t WHERE a = %s AND b LIKE '%%?%%'"
    assert to_postgres("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, x REAL)") == \
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x DOUBLE PRECISION)"
    assert to_postgres("SELECT x FROM t WHERE REAL = ?") == "SELECT x FROM t WHERE REAL = %s"  # DDL only
    assert to_postgres("INSERT OR IGNORE INTO f VALUES (?)") == "INSERT INTO f VALUES (%s) ON CONFLICT DO NOTHING"
    assert "->> 'k'" in to_postgres("SELECT json_extract(extra, '$.k') FROM e")
    with pytest.raises(ValueError, match="ON CONFLICT"):
        to_postgres("INSERT OR REPLACE INTO f VALUES (?)")
