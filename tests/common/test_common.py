"""The shared plumbing on real files: atomic writes, config files with one-line errors, SQLite migrations."""

import sqlite3
import subprocess
import sys

import pytest
from pydantic import BaseModel, ConfigDict, Field

from k1.common.config_files import load_model, read_toml
from k1.common.files import write_atomic
from k1.common.sqlite import connect, migrate
from k1.common.trust import beta_mean
from k1.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(default=1, ge=1)


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: Section = Section()


def test_write_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "f.json"
    write_atomic(p, "old")
    write_atomic(p, b"new", durable=True)
    assert p.read_text() == "new"
    assert [q.name for q in p.parent.iterdir()] == ["f.json"]


def test_config_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("train = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not a UTF-8"):
        read_toml(bad)
    bad.write_text("[train]\nsteps = 0\nlr = 1\n")
    with pytest.raises(ConfigError) as e:
        load_model(Doc, bad)
    msg = str(e.value)
    assert "\n" not in msg and "train.steps" in msg and "(got 0)" in msg and "train.lr" in msg
    good = tmp_path / "good.toml"
    good.write_text("[train]\nsteps = 3\n")
    assert load_model(Doc, good).train.steps == 3


def m001_items(db):
    db.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")


def m002_count(db):
    db.execute("ALTER TABLE items ADD COLUMN n INTEGER NOT NULL DEFAULT 0")


def test_migrations_run_once_in_order_and_refuse_a_newer_file(tmp_path):
    path = tmp_path / "s.sqlite"
    db = connect(path)
    assert migrate(db, [m001_items]) == ["m001_items"]
    db.execute("INSERT INTO items VALUES ('a')")
    db.close()
    db = connect(path)
    assert migrate(db, [m001_items, m002_count]) == ["m002_count"]  # only the new one
    assert migrate(db, [m001_items, m002_count]) == []
    assert tuple(db.execute("SELECT name, n FROM items").fetchone()) == ("a", 0)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ConfigError, match="newer k1"):
        migrate(db, [m001_items])


def test_a_file_from_before_named_migrations_is_adopted_once(tmp_path):
    path = tmp_path / "s.sqlite"
    raw = sqlite3.connect(path)  # written by code that kept its schema version itself
    raw.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")
    raw.execute("INSERT INTO items VALUES ('a')")
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    db = connect(path)
    by_version = lambda db: db.execute("PRAGMA user_version").fetchone()[0]  # noqa: E731
    assert migrate(db, [m001_items, m002_count], adopt=by_version) == ["m002_count"]  # m001 recorded, not run
    assert sorted(r[0] for r in db.execute("SELECT name FROM _migrations")) == ["m001_items", "m002_count"]
    assert tuple(db.execute("SELECT name, n FROM items").fetchone()) == ("a", 0)
    assert migrate(db, [m001_items, m002_count], adopt=lambda db: 99) == []  # adopt only asked for a new table


def test_connect_refuses_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "not.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite file"):
        connect(path)


def test_a_failing_migration_leaves_nothing_behind(tmp_path):
    def m001_broken(db):
        db.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("boom")

    db = connect(tmp_path / "s.sqlite")
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, [m001_broken])
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    assert db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == 0


def test_two_processes_migrating_at_once_run_each_migration_once(tmp_path):
    path = tmp_path / "s.sqlite"
    code = ("import sys; from k1.common.sqlite import connect, migrate\n"
            "def m001_items(db): db.execute('CREATE TABLE items (name TEXT)')\n"
            "print(migrate(connect(sys.argv[1]), [m001_items]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == ["[\'m001_items\']", "[]", "[]"]


def test_beta_mean():
    assert beta_mean(0, 0) == 0.5
    assert beta_mean(8, 0) == pytest.approx(0.9)
    assert beta_mean(1, 3) == pytest.approx(2 / 6)
