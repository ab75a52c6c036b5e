"""The pool's SQLite store: WAL, migrations recorded and run once, no lost updates under several writer processes."""

import multiprocessing as mp
import sqlite3

import pytest

from k1.errors import ConfigError
from k1.pool.store import MIGRATIONS, SCHEMA_VERSION, PoolStore


def test_migrations_run_once_and_wal_is_on(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.migrate() == []  # nothing left to run
    s.close()
    assert PoolStore(tmp_path / "p.sqlite").migrate() == []


def test_an_old_store_is_migrated_forward(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # a store from before experiences existed: only the first migration
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, ts REAL NOT NULL)")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO _migrations VALUES (?, 0)", (MIGRATIONS[0].__name__,))
    db.execute("INSERT INTO trust VALUES ('a', 'stable', 3, 1, 0)")
    db.commit()
    db.close()
    s = PoolStore(path)
    assert s.schema_version == SCHEMA_VERSION
    assert s.trust() == {("a", "stable"): (3.0, 1.0)}  # data kept
    assert s.experiences() == []  # the new table exists


def test_a_store_from_a_newer_k1_is_refused(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    s.db.execute("INSERT INTO _migrations VALUES ('m999_future', 0)")
    s.close()
    with pytest.raises(ConfigError, match="newer"):
        PoolStore(tmp_path / "p.sqlite")


def test_outcomes_accumulate_as_beta_counts(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    for v in (1, 1, 0, 0.5):
        s.record_outcome("m", "novel", v, "feedback")
    assert s.trust("novel") == {("m", "novel"): (2.5, 1.5)}
    assert [o["success"] for o in s.outcome_history()] == [1, 1, 0, 0.5]
    with pytest.raises(ValueError):
        s.record_outcome("m", "novel", 2.0, "feedback")


def test_budget_spent_and_reset(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
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


def _writer(path, member, n):
    s = PoolStore(path)
    for i in range(n):
        s.record_outcome(member if i % 2 else "shared", "stable", 1.0 if i % 3 else 0.0, "feedback")
        s.charge("shared", "success", 1.0, 1e9, 0.01)
    s.close()


def test_several_writer_processes_lose_no_update(tmp_path):
    path = tmp_path / "p.sqlite"
    PoolStore(path).close()
    n, procs = 60, []
    ctx = mp.get_context("spawn")
    for k in range(4):
        p = ctx.Process(target=_writer, args=(str(path), f"m{k}", n))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = PoolStore(path)
    trust = s.trust("stable")
    total = sum(a + b for a, b in trust.values())
    assert total == 4 * n  # every outcome counted exactly once
    assert trust[("shared", "stable")][0] + trust[("shared", "stable")][1] == 4 * (n // 2)
    assert s.spent() == 4 * n
    assert len(s.outcome_history()) == 4 * n
